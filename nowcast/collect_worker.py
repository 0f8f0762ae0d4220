"""``python -m nowcast.collect_worker --run JSON --out DIR``: one collection run in its own process.

The parallel collection (:func:`nowcast.collect.collect` with ``workers > 1``) starts these. They
live in their own module because ``nowcast`` imports :mod:`nowcast.collect` on start-up, and
running an already imported module as ``__main__`` makes Python warn and execute it twice.
"""

from __future__ import annotations

import sys

from .collect import _worker_main

if __name__ == "__main__":
    sys.exit(_worker_main())
