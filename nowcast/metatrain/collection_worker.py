"""``python -m nowcast.metatrain.collection_worker --run JSON --out DIR``: one collection run in its own process.

The parallel collection (:func:`nowcast.metatrain.collect` with ``workers > 1``) starts these. They
live in their own module because ``nowcast`` imports :mod:`nowcast.metatrain.collection` on
start-up, and running an already imported module as ``__main__`` makes Python warn and execute
it twice.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

import torch

from .collection import collect_run
from .recipes import RunSpec


def main(argv: Sequence[str] | None = None) -> int:
    """Collect the one run given as JSON (what :func:`nowcast.metatrain.collect` passes)."""
    parser = argparse.ArgumentParser(
        prog="python -m nowcast.metatrain.collection_worker", description="collect one run (used by collect(workers=N))", allow_abbrev=False
    )
    parser.add_argument("--run", required=True, help="RunSpec as JSON")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    collect_run(RunSpec.from_dict(json.loads(args.run)), args.out, data_dir=args.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
