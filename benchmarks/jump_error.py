"""Error of the jumps a NiNo checkpoint would make, on collected trajectories it was not trained on.

    python benchmarks/jump_error.py --trajectories runs/nino-cpu/trajectories \
        --runs fm16_s112_lr1_n10000_e200 \
        --checkpoints checkpoints/nino-cpu,../shared/checkpoints/official/nino_no_posw.pt

Prints, per checkpoint, the mean L1 error (scaled units) of each jump of the optimizer wrapper's
horizon schedule (k = 40, 33, ... for a 10-period run), the mean over jumps, and the share of the
no-change error each removes (see :mod:`nowcast.metatrain.jump_error`). Seconds per checkpoint on FM/16
trajectories; use it to compare checkpoints before spending the time of a steps-to-target run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from neuralgraph.cli_args import ArgumentParser, thread_count
from nowcast.metatrain.jump_error import jump_errors, load_comparable
from nowcast.metatrain import MetaDataset


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--trajectories", required=True, help="folder of collected run folders (nowcast collect)")
    p.add_argument("--runs", default=None, help="comma-separated run ids inside it (default: all; one task's runs)")
    p.add_argument("--checkpoints", required=True, help="comma-separated checkpoints (nowcast.save folders or official .pt files)")
    p.add_argument("--threads", type=thread_count, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    root = Path(args.trajectories)
    sources = [root / r.strip() for r in args.runs.split(",")] if args.runs else root
    try:
        models, ctx, seq_len = load_comparable(c.strip() for c in args.checkpoints.split(",") if c.strip())
        dataset = MetaDataset(sources, ctx=ctx, seq_len=seq_len)
        result = jump_errors(models, dataset)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runs = ", ".join(t.run_id for t in dataset.trajectories)
    print(f"jump errors on {len(dataset.trajectories)} trajectories ({runs})")
    print(result.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
