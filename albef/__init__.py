"""albef: ALBEF (Align before Fuse) as a benchmark and evaluation harness.

Importing the package has no side effects: nothing is downloaded, printed or parsed.
"""

from albef.version import __version__

__all__ = ["__version__"]
