"""``nowcast compare`` and ``nowcast tasks``: train a task with several methods and compare steps-to-target."""

from __future__ import annotations

import argparse
from pathlib import Path

from neuralgraph.cli_args import add_debug_flag, existing_dir, output_dir, positive_int, thread_count

from ..bench.comparison import compare
from ..bench.methods import METHODS, default_checkpoint, resolve_method
from ..tasks import tasks

__all__ = ["add_parsers"]


def _default_methods() -> str:
    return "adam,nino" if default_checkpoint("nino") is not None else "adam,linefit+"


def _compare(args: argparse.Namespace) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in (args.methods or _default_methods()).split(",") if m.strip()]
    if not methods:
        raise ValueError(f"--methods {args.methods!r} names no method; give a comma-separated list such as adam,linefit+")
    # unknown names and missing checkpoints are refused here, before any training
    resolved = [resolve_method(m, nino_checkpoint=args.nino_checkpoint, wnn_checkpoint=args.wnn_checkpoint) for m in methods]
    out = Path(args.out)
    json_path = out / f"{args.task}.json"
    print(f"task {args.task}: methods {', '.join(methods)}, {args.seeds} seed(s)", flush=True)

    def report(run) -> None:
        got = "target not reached" if run.steps_to_target is None else f"target reached at step {run.steps_to_target}"
        source = f" [{run.checkpoint}]" if run.checkpoint else ""
        print(f"  {run.method:<9} seed {run.seed}: {got} (best {run.metric} {run.best:.4g}, {run.wall_s:.1f} s){source}", flush=True)

    result = compare(
        args.task, resolved, seeds=args.seeds, max_steps=args.max_steps, data_dir=args.data_dir,
        nino_checkpoint=args.nino_checkpoint, wnn_checkpoint=args.wnn_checkpoint,
        progress=not args.no_progress, json_path=json_path, resume=args.resume, on_run=report,
    )
    plot = result.plot(out / f"{args.task}.png")
    print()
    print(result.table())
    print(f"\ncurves: {plot} (and .pdf); raw results: {json_path}")
    return 0


def _list_tasks(args: argparse.Namespace) -> int:
    for task in tasks().values():
        print(task.describe())
        print(f"    validation: {task.validation}")
    return 0


def _kept(args: argparse.Namespace) -> str:
    json_path = Path(args.out) / f"{args.task}.json"
    return f"the runs finished so far are kept in {json_path}; rerun with --resume to reuse them"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``compare`` and ``tasks`` on the ``nowcast`` command line."""
    p = sub.add_parser(
        "compare",
        help="train a task with several methods and report steps-to-target (with a plot)",
        description="Train TASK from each seed with each method (the base optimizer alone, or wrapped by a nowcaster), "
        "print the median steps to the task's target and the reduction vs Adam, and write the curves plot and raw JSON.",
        allow_abbrev=False,
    )
    p.add_argument("--task", default="digits", choices=sorted(tasks()), help="task (default digits: embedded, no files)")
    p.add_argument("--methods", default=None, help=f"comma-separated from {', '.join(METHODS)}; nino@PATH names a checkpoint "
                   "so several can be compared "
                   "(default: adam,nino when a NiNo checkpoint is found, else adam,linefit+)")
    p.add_argument("--seeds", type=positive_int, default=3, help="number of seeds N >= 1: seeds 0..N-1 (default 3)")
    p.add_argument("--max-steps", type=positive_int, default=None, help="planned training length (default: the task's)")
    p.add_argument("--nino-checkpoint", default=None, help="NiNo checkpoint (default: checkpoints/nino-cpu-routed, then the published one)")
    p.add_argument("--wnn-checkpoint", default=None, help="WNN+ checkpoint for 'wnn+' (e.g. nino_mlp.pt)")
    p.add_argument("--data-dir", type=existing_dir, default=None, help="existing folder holding the task's dataset")
    p.add_argument("--out", type=output_dir, default="nowcast_results", help="folder for the plot and JSON (default ./nowcast_results)")
    p.add_argument("--resume", action="store_true", help="reuse the runs already stored in OUT/TASK.json that match (same method, seed, "
                   "checkpoint file contents and settings) instead of training them again; without it they are retrained. "
                   "Either way the file keeps every stored run: new runs are merged in, never written over others")
    p.add_argument("--threads", type=thread_count, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_debug_flag(p, top=False)
    p.set_defaults(run=_compare, kept=_kept)

    t = sub.add_parser("tasks", help="list the benchmark tasks with their recipes and targets", allow_abbrev=False)
    add_debug_flag(t, top=False)
    t.set_defaults(run=_list_tasks)
