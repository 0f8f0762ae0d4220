"""Steps to a target validation score, per method and seed (the paper's Table 2 quantities).

    python benchmarks/steps_to_target.py --task fm16 --methods adam,linefit,linefit+,wnn+,nino --seeds 3 \
        --nino-checkpoint ../shared/checkpoints/official/nino_no_posw.pt \
        --wnn-checkpoint ../shared/checkpoints/official/nino_mlp.pt \
        --json docs/results/fm16.json

Prints the table (median steps to target, reduction vs Adam in %), writes the JSON (per method:
per-seed steps-to-target, null when not reached, and the median; plus every run's curve) and
the curves plot next to it (``.png`` and ``.pdf``). The JSON is written in one step after every
run and merged, never written over: runs already in it that match (same method, seed, checkpoint
contents and settings) are reused, so an interrupted benchmark continues where it stopped;
``--fresh`` retrains the requested runs, and runs of other seeds, methods, checkpoints or settings
stay in the file either way. The table and plot show the runs asked for.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from neuralgraph.cli_args import ArgumentParser, existing_dir, positive_int, thread_count
from nowcast.bench.comparison import compare
from nowcast.tasks import DataNotFoundError, tasks


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--task", default="digits", choices=sorted(tasks()))
    p.add_argument("--methods", default="adam,linefit+", help="comma-separated: adam, linefit, linefit+, wnn+, nino (nino@PATH: a named checkpoint, to compare several)")
    p.add_argument("--seeds", type=positive_int, default=3, help="number of seeds N >= 1: seeds 0..N-1 (default 3)")
    p.add_argument("--nino-checkpoint", help="NiNo checkpoint (.pt or nowcast.save directory) for 'nino'")
    p.add_argument("--wnn-checkpoint", help="WNN+ checkpoint (e.g. nino_mlp.pt) for 'wnn+'")
    p.add_argument("--max-steps", type=positive_int, help="planned training steps (default: the task's)")
    p.add_argument("--adam-max-steps", type=positive_int, help="let Adam alone train this long to measure its steps-to-target (default: --max-steps)")
    p.add_argument("--data-dir", type=existing_dir, help="existing folder holding the task's dataset (default: the standard places)")
    p.add_argument("--json", dest="json_path", help="write raw results here (default docs/results/<task>.json)")
    p.add_argument("--plot", help="curves plot path (default: the JSON path with .png)")
    p.add_argument("--fresh", action="store_true", help="ignore runs already stored in the JSON")
    p.add_argument("--threads", type=thread_count, help="torch CPU threads (1 is fastest when several jobs share the cores)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    json_path = Path(args.json_path or f"docs/results/{args.task}.json")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]

    def report(run) -> None:
        got = "not reached" if run.steps_to_target is None else f"{run.steps_to_target} steps"
        print(f"  {run.method:<9} seed {run.seed}: {got} (best {run.best:.4g}, {run.wall_s:.0f} s, {len(run.jump_steps)} jumps)", flush=True)

    try:
        result = compare(
            args.task, methods, seeds=args.seeds, max_steps=args.max_steps, data_dir=args.data_dir,
            nino_checkpoint=args.nino_checkpoint, wnn_checkpoint=args.wnn_checkpoint,
            progress=not args.no_progress, json_path=json_path, resume=not args.fresh, on_run=report,
            baseline_max_steps=args.adam_max_steps,
        )
    except (DataNotFoundError, FileNotFoundError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    plot = result.plot(args.plot or json_path.with_suffix(".png"))
    print()
    print(result.table())
    print(f"\nraw results: {json_path}\nplot: {plot} (+ .pdf)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
