"""python -m e2diffsr_core COMMAND ...: the command line (cli/)."""

import sys

from .cli.main import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
