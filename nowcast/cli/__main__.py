"""``python -m nowcast.cli``: the same as the ``nowcast`` command."""

import sys

from .main import main

sys.exit(main())
