"""Task metric where a NiNo checkpoint's jumps land, on collected trajectories it was not trained on.

    python benchmarks/jump_landing.py --trajectories runs/nino-cpu/trajectories \
        --runs fm16_s112_lr1_n10000_e200 \
        --checkpoints checkpoints/nino-cpu,../shared/checkpoints/official/nino_no_posw.pt

For every jump of the optimizer wrapper's schedule along each run (the windows and horizons of
``benchmarks/jump_error.py``), prints the validation metric of the last recorded state, of the
base optimizer's state at the jump's target step, and of each checkpoint's predicted parameters
(see :mod:`nowcast.jump_landing`). One task's runs at a time; each evaluation runs the task's
validation set (FM/16: 1.6 s).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from neuralgraph.cli_args import ArgumentParser, existing_dir, thread_count
from nowcast.jump_error import load_comparable
from nowcast.jump_landing import jump_landings
from nowcast.metatrain import MetaDataset
from nowcast.tasks import DataNotFoundError


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--trajectories", required=True, help="folder of collected run folders (nowcast collect)")
    p.add_argument("--runs", default=None, help="comma-separated run ids inside it (default: all; one task's runs)")
    p.add_argument("--checkpoints", required=True, help="comma-separated checkpoints (nowcast.save folders or official .pt files)")
    p.add_argument("--data-dir", type=existing_dir, default=None, help="existing folder holding the task's dataset")
    p.add_argument("--threads", type=thread_count, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    root = Path(args.trajectories)
    sources = [root / r.strip() for r in args.runs.split(",")] if args.runs else root
    try:
        models, ctx, seq_len = load_comparable(c.strip() for c in args.checkpoints.split(",") if c.strip())
        result = jump_landings(models, MetaDataset(sources, ctx=ctx, seq_len=seq_len), data_dir=args.data_dir)
    except (FileNotFoundError, DataNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
