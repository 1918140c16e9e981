"""The one training engine: optimisation, precision, distributed helpers, checkpoints and the loop."""
