"""The ``albef`` command line: one entry point, one module per subcommand."""

from albef.cli.main import main

__all__ = ["main"]
