"""Cost of the landing term in meta-training (CPU, one thread by default).

Times one window's forward + backward as meta-training does it (:func:`nowcast.metatrain.window_terms`,
all recorded horizons) with the L1 loss alone and with the landing term added
(:class:`nowcast.landing_loss.LandingLoss`: the predicted state mapped back to the task network's
parameters, the network run on one of the task's training batches, backward through both), on
windows of collected runs:

    python benchmarks/landing_loss.py --trajectories runs/nino-cpu/trajectories \
        --runs fm16_s112_lr1_n10000_e200,shakespeare-3-24_s108_lr1_n5000_e200

Prints the median over ``--repeats`` windows per run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from neuralgraph.cli_args import ArgumentParser, existing_dir, positive_int, thread_count
from nowcast.landing_loss import LandingLoss
from nowcast.metatrain import MetaDataset, MetaTrainConfig, window_terms
from nowcast.model import NiNoModel
from nowcast.tasks import DataNotFoundError


def _time(fn, repeats: int) -> float:
    fn(0)  # warm-up: graphs, data and the task network are built on first use
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        fn(r)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--trajectories", type=existing_dir, required=True, help="folder of collected run folders (nowcast collect)")
    p.add_argument("--runs", required=True, help="comma-separated run ids inside it")
    p.add_argument("--hid", type=positive_int, default=64, help="NiNo width (default 64, the shipped checkpoints')")
    p.add_argument("--repeats", type=positive_int, default=10, help="windows timed per run (default 10)")
    p.add_argument("--data-dir", type=existing_dir, default=None, help="existing folder holding the tasks' datasets")
    p.add_argument("--threads", type=thread_count, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = NiNoModel(MetaTrainConfig(hid=args.hid).nino_config(), edge_chunk=None).train()
    landing = LandingLoss(data_dir=args.data_dir)
    print(f"one window, forward + backward over all recorded horizons, NiNo hid {args.hid}, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'run':<36} {'edges':>7} {'params':>7} {'L1 only':>9} {'+ landing':>10} {'landing share':>14}")
    for run in args.runs.split(","):
        dataset = MetaDataset([Path(args.trajectories) / run.strip()])
        meta = dataset.trajectories[0].meta

        def step(r: int, with_landing: bool) -> None:
            item = dataset[r % len(dataset)]
            term = (lambda out, k: landing(item, out, meta, horizon=k, key=r)) if with_landing else None
            l1, excess = window_terms(model, item, "window", term)
            (l1 if excess is None else l1 + excess).backward()
            model.zero_grad(set_to_none=True)

        try:
            plain = _time(lambda r: step(r, False), args.repeats)
            landed = _time(lambda r: step(r, True), args.repeats)
        except DataNotFoundError as err:
            print(f"{run}: {err}", file=sys.stderr)
            return 2
        graph = dataset.graph_info(0).graph
        print(f"{run:<36} {graph.num_edges:>7} {graph.num_params:>7} {plain:>7.1f}ms {landed:>8.1f}ms {(landed - plain) / landed:>13.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
