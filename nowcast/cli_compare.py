"""``nowcast compare`` and ``nowcast tasks``: train a task with several methods and compare steps-to-target."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parsers"]


def _default_methods() -> str:
    from .methods import default_checkpoint

    return "adam,nino" if default_checkpoint("nino") is not None else "adam,linefit+"


def _compare(args: argparse.Namespace) -> int:
    from .benchmark import compare

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in (args.methods or _default_methods()).split(",") if m.strip()]
    out = Path(args.out)
    json_path = out / f"{args.task}.json"
    print(f"task {args.task}: methods {', '.join(methods)}, {args.seeds} seed(s)", flush=True)

    def report(run) -> None:
        got = "target not reached" if run.steps_to_target is None else f"target reached at step {run.steps_to_target}"
        source = f" [{run.checkpoint}]" if run.checkpoint else ""
        print(f"  {run.method:<9} seed {run.seed}: {got} (best {run.metric} {run.best:.4g}, {run.wall_s:.1f} s){source}", flush=True)

    result = compare(
        args.task, methods, seeds=args.seeds, max_steps=args.max_steps, data_dir=args.data_dir,
        nino_checkpoint=args.nino_checkpoint, wnn_checkpoint=args.wnn_checkpoint,
        progress=not args.no_progress, json_path=json_path, resume=args.resume, on_run=report,
    )
    plot = result.plot(out / f"{args.task}.png")
    print()
    print(result.table())
    print(f"\ncurves: {plot} (and .pdf); raw results: {json_path}")
    return 0


def _list_tasks(args: argparse.Namespace) -> int:
    from .tasks import tasks

    for task in tasks().values():
        print(task.describe())
        print(f"    validation: {task.validation}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``compare`` and ``tasks`` on the ``nowcast`` command line."""
    from .tasks import tasks

    p = sub.add_parser(
        "compare",
        help="train a task with several methods and report steps-to-target (with a plot)",
        description="Train TASK from each seed with each method (the base optimizer alone, or wrapped by a nowcaster), "
        "print the median steps to the task's target and the reduction vs Adam, and write the curves plot and raw JSON.",
    )
    p.add_argument("--task", default="digits", choices=sorted(tasks()), help="task (default digits: embedded, no files)")
    p.add_argument("--methods", default=None, help="comma-separated from adam, linefit, linefit+, wnn+, nino; nino@PATH names a checkpoint "
                   "so several can be compared "
                   "(default: adam,nino when a NiNo checkpoint is found, else adam,linefit+)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    p.add_argument("--max-steps", type=int, default=None, help="planned training length (default: the task's)")
    p.add_argument("--nino-checkpoint", default=None, help="NiNo checkpoint (default: checkpoints/nino-cpu-routed, then the published one)")
    p.add_argument("--wnn-checkpoint", default=None, help="WNN+ checkpoint for 'wnn+' (e.g. nino_mlp.pt)")
    p.add_argument("--data-dir", default=None, help="folder holding the task's dataset")
    p.add_argument("--out", default="nowcast_results", help="folder for the plot and JSON (default ./nowcast_results)")
    p.add_argument("--resume", action="store_true", help="reuse runs already stored in OUT/TASK.json")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=_compare)

    t = sub.add_parser("tasks", help="list the benchmark tasks with their recipes and targets")
    t.set_defaults(run=_list_tasks)
