"""``python -m albef`` runs the command-line interface."""

import sys

from albef.cli.main import main

sys.exit(main())
