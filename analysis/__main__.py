"""``python -m analysis``: the :mod:`analysis.cli` command line."""

import sys

from .cli import main

sys.exit(main())
