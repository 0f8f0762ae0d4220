"""``nowcast collect``, ``nowcast metatrain``, ``nowcast build-checkpoint`` and ``nowcast model-card``:
train our own NiNo checkpoint (see ``docs/metatraining.md``).

    nowcast build-checkpoint --recipe nino-cpu --out checkpoints/nino-cpu --work runs/nino-cpu

runs the three stages (trajectory collection, meta-training, export) and can be rerun after an
interruption: finished runs are kept, an unfinished run continues from its last snapshot and
meta-training from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from neuralgraph.cli_args import (
    add_debug_flag,
    comma_list,
    existing_dir,
    existing_file,
    existing_path,
    nonnegative_float,
    nonnegative_int,
    output_dir,
    positive_float,
    positive_int,
    seed,
    thread_count,
)

from ..metatrain.collection import collect
from ..metatrain.config import MetaTrainConfig
from ..metatrain.dataset import MetaDataset
from ..metatrain.model_card import append_evaluation, write_router_card
from ..metatrain.outputs import export
from ..metatrain.recipes import RECIPES, Recipe, RunSpec, get_recipe
from ..metatrain.training import metatrain
from ..metatrain.trajectories import META_FILE, load_trajectory
from ..metatrain.work_folder import HISTORY_FILE
from ..nowcasters import RegimeRouter
from ..nowcasters import load_checkpoint as load
from ..tasks import tasks

__all__ = ["add_parsers"]

TRAJECTORIES = "trajectories"
METATRAIN = "metatrain"
GRAPHS = "graphs"
RECIPE_FILE = "recipe.json"
EXPERTS = "experts"

_OVERRIDES = (
    "hid", "layers", "steps", "batch", "lr", "wd", "warmup", "horizon_weighting", "select", "seed", "checkpoint_every", "eval_every",
)


# Planning estimates (seconds, one free core, torch 1 thread; measured on the project's 2-core
# machine, process CPU time): a base-optimizer step incl. the amortised validation at every
# snapshot (FM/16: 27 ms + 1.6 s per evaluation of 10k images), and one window's NiNo forward +
# backward at hid 64 over all 40 horizons incl. building the window (scales ~hid^2).
_STEP_S = {"fm16": 0.035, "fm32": 0.08, "digits": 0.006, "shakespeare-3-24": 0.030, "shakespeare-2-32": 0.026}
# The validation at each snapshot, included in _STEP_S at one snapshot per 200 steps; runs that
# save states more often pay it more often (FM/16 every 40 steps: 2000 steps in 133 s, not 70 s).
_EVAL_S = {"fm16": 1.6}
_WINDOW_S_HID64 = {"fm16": 0.028, "fm32": 0.1, "digits": 0.028, "shakespeare-3-24": 0.205, "shakespeare-2-32": 0.24}


def _metatrain_seconds(recipe: Any) -> tuple[float, str]:
    """Estimated meta-training seconds of a plain recipe on one free core, and a line saying so."""
    cfg = MetaTrainConfig.from_dict(dict(recipe.metatrain))
    val_ids = {r.run_id for r in recipe.val_runs}
    windows, window_cost = 0, 0.0
    for r in recipe.runs:
        if r.run_id in val_ids:
            continue
        n_win = max(0, r.resolved_steps() // r.every + 1 - cfg.ctx)
        windows += n_win
        window_cost += n_win * _WINDOW_S_HID64.get(r.task, 0.0) * (cfg.hid / 64) ** 2
    seconds = cfg.steps * cfg.batch * (window_cost / max(1, windows))
    line = (
        f"meta-training: {cfg.steps} steps x {cfg.batch} windows at hid {cfg.hid}"
        f": about {seconds / 60:.0f} min on one free core"
    )
    return seconds, line


def _plan(recipe: Any, workers: int) -> str:
    """A table of the recipe's runs with estimated times (see _STEP_S / _WINDOW_S_HID64)."""
    cfg = MetaTrainConfig.from_dict(dict(recipe.metatrain))
    by_task: dict[str, list] = {}
    for r in recipe.all_runs:
        by_task.setdefault(r.task, []).append(r)
    lines = [f"recipe {recipe.name}: {recipe.description}", "", f"{'task':<18} {'runs':>4} {'steps':>12} {'windows':>8} {'est. min':>9}   (runs incl. validation; windows trained on)"]
    collect_s = 0.0
    unknown = []
    val_ids = {r.run_id for r in recipe.val_runs}
    for task, runs in by_task.items():
        steps = sum(r.resolved_steps() for r in runs)
        snapshots = sum(r.resolved_steps() // r.every for r in runs)
        # windows trained on (validation runs are only evaluated)
        n_win = sum(max(0, r.resolved_steps() // r.every + 1 - cfg.ctx) for r in runs if r.run_id not in val_ids)
        cost = _STEP_S.get(task)
        if cost is None:
            unknown.append(task)
            cost = 0.0
        eval_s = _EVAL_S.get(task, 0.0)
        run_s = steps * (cost - eval_s / 200) + snapshots * eval_s if cost else 0.0
        collect_s += run_s
        lines.append(f"{task:<18} {len(runs):>4} {steps:>12,} {n_win:>8} {run_s / 60:>9.1f}")
    lines += ["", f"collection: {collect_s / 60:.0f} core-min, about {collect_s / 60 / max(1, workers):.0f} min with {workers} worker(s)"]
    if recipe.route is None:
        meta_s, line = _metatrain_seconds(recipe)
        lines.append(line)
    else:
        each = []
        for side, expert in recipe.experts().items():
            seconds, line = _metatrain_seconds(expert)
            each.append(seconds)
            lines.append(f"{side} {recipe.route.split:g} ({expert.name}), {line}")
        meta_s = max(each) if workers >= 2 else sum(each)
        lines.append(f"the two experts meta-train {'at once, one process each' if workers >= 2 else 'one after the other'} (--workers {workers})")
    lines.append(f"total: about {(collect_s / max(1, workers) + meta_s) / 60:.0f} min (estimates for free cores; a busy machine is slower)")
    if unknown:
        lines.append(f"(no cost estimate for {', '.join(unknown)})")
    if recipe.init_from:
        lines.append(f"meta-training starts from the checkpoint {recipe.init_from} (it must exist; --init-from DIR to use another)")
    return "\n".join(lines)


def _threads(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def _work(args: argparse.Namespace) -> Path:
    if args.work:
        return Path(args.work)
    return Path("runs") / ("custom" if getattr(args, "task", None) else args.recipe)


def _check_recipe_file(work: Path, recipe: Any) -> None:
    """Refuse to mix two recipes' runs in one work folder (resuming relies on it).

    A recipe whose runs are unchanged but whose meta-training settings changed keeps the collected
    trajectories: the file is updated (meta-training itself refuses to resume a checkpoint made
    with other settings and asks for ``--restart``). So does a recipe of the same name that grew
    (every run collected before is still one of its runs, for training or validation): only the
    new runs are collected."""
    path = work / RECIPE_FILE
    wanted = json.loads(json.dumps(recipe.to_dict()))
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved == wanted:
            return

        def run_keys(d: dict) -> set[str]:
            return {json.dumps(r, sort_keys=True) for r in d.get("runs", []) + d.get("val_runs", [])}

        same_runs = saved.get("runs") == wanted.get("runs") and saved.get("val_runs", []) == wanted.get("val_runs", [])
        if saved.get("name") != wanted.get("name") or not run_keys(saved) <= run_keys(wanted):
            raise ValueError(f"{work} holds another recipe's runs ({saved.get('name')}, see {path}): choose another --work")
        if same_runs:
            print(f"note: recipe {wanted.get('name')} changed outside its runs; the collected runs in {work} are kept and {path} is updated")
        else:
            new = len(run_keys(wanted) - run_keys(saved))
            print(
                f"note: recipe {wanted.get('name')} has {new} run(s) more than when {work} was started; the collected runs are "
                f"kept and {path} is updated (an unfinished meta-training of the old runs cannot continue: pass --restart)"
            )
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(wanted, indent=1) + "\n")


def _runs_from_args(args: argparse.Namespace):
    if args.task:
        seeds, mults = args.seeds, args.lr_mults  # lists, checked while parsing
        if args.steps is not None and args.steps % args.every:
            raise ValueError(f"--steps {args.steps} must be a multiple of --every {args.every} (the steps between snapshots)")
        return [RunSpec(args.task, s, mults[i % len(mults)], args.steps, args.every) for i, s in enumerate(seeds)]
    return get_recipe(args.recipe)


def _collect(args: argparse.Namespace) -> int:
    _threads(args)
    runs = _runs_from_args(args)
    work = _work(args)
    if isinstance(runs, Recipe):
        _check_recipe_file(work, runs)
        n = len(runs.all_runs)
    else:
        n = len(runs)
    out = work / TRAJECTORIES
    print(f"collecting {n} run(s) into {out}", flush=True)
    start = time.perf_counter()
    dirs = collect(runs, out, progress=not args.no_progress, workers=args.workers, threads=args.threads, data_dir=args.data_dir)
    for d in dirs:
        t = load_trajectory(d)
        snaps = t.meta["snapshots"]
        metric = snaps["metric"][-1] if snaps["metric"] else float("nan")
        print(f"  {t.run_id}: {t.meta['status']}, {t.n_snapshots} snapshots, {t.meta['metric_name']} {metric:.4g}, {t.meta['wall_s']:.0f} s")
    print(f"collection: {time.perf_counter() - start:.0f} s")
    return 0


def _config(args: argparse.Namespace, base: dict[str, Any]):
    values = dict(base)
    for name in _OVERRIDES:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    return MetaTrainConfig.from_dict(values)


def _metatrain_stage(
    args: argparse.Namespace, recipe: Any, work: Path, base: dict[str, Any], timings: dict[str, float], *, collected: Path | None = None
) -> int:
    """Meta-train ``recipe`` in ``work`` and export to ``args.out``; ``collected`` is the folder of
    its trajectories when they are not ``work/trajectories`` (a routed recipe's shared collection)."""
    config = _config(args, base)
    custom = getattr(args, "trajectories", None)
    traj_dir = Path(custom) if custom else (collected or work / TRAJECTORIES)
    val_source: Any = getattr(args, "val_trajectories", None)
    if recipe is not None and not custom:
        # the recipe's own runs by id: a work folder may hold other runs (e.g. ad-hoc collections)
        train_source: Any = [traj_dir / r.run_id for r in recipe.runs]
        if val_source is None and recipe.val_runs:
            val_source = [traj_dir / r.run_id for r in recipe.val_runs]
    else:
        train_source = traj_dir
    _require_collected(train_source if isinstance(train_source, list) else [])
    _require_collected(val_source if isinstance(val_source, list) else [])
    kwargs = dict(ctx=config.ctx, seq_len=config.seq_len, max_feat_size=config.max_feat_size, cache_dir=work / GRAPHS)
    dataset = MetaDataset(train_source, **kwargs)
    val_dataset = MetaDataset(val_source, graphs=dataset.graphs, **kwargs) if val_source is not None else None
    n_val = f"; validation: {len(val_dataset.trajectories)} trajectories ({len(val_dataset)} windows)" if val_dataset is not None else ""
    print(f"meta-training on {len(dataset.trajectories)} trajectories ({len(dataset)} windows){n_val}: {config}", flush=True)
    init = getattr(args, "init_from", None) or (recipe.init_from if recipe is not None else None)
    if init is not None:
        if not Path(init).exists():
            raise FileNotFoundError(
                f"meta-training starts from the checkpoint {init}, which does not exist here: run from the project root "
                "(the recipe's path is relative) or pass --init-from DIR"
            )
        init = load(init)
    result = metatrain(
        dataset, work / METATRAIN, config, progress=not args.no_progress, restart=args.restart, val_dataset=val_dataset,
        init_model=init,
    )
    timings = dict(timings)
    used = [t.path for t in dataset.trajectories] + ([t.path for t in val_dataset.trajectories] if val_dataset is not None else [])
    runs_wall = sum(float(load_trajectory(d).meta.get("wall_s", 0.0)) for d in used)
    timings.setdefault("collection (sum over runs)", runs_wall)
    timings["meta-training"] = result.wall_s
    if result.step < config.steps:
        print(f"meta-training stopped at step {result.step} of {config.steps}; rerun to continue")
        return 1
    out = export(result, args.out, recipe=recipe.to_dict() if recipe is not None else None, timings=timings)
    ev = result.evals["loss"]
    print(
        f"meta-training: {result.step} steps in {result.wall_s / 60:.1f} min; final training loss {result.final_loss:.4f}"
        + (f", eval loss {ev[0]:.4f} -> {ev[-1]:.4f}" if ev else "")
        + (f"; lowest {config.select} {result.best[config.select]:.4f} at step {result.best['step']} (exported)" if result.best else "")
        + f" (no change {result.baselines.get('zero', float('nan')):.4f}, linefit {result.baselines.get('linefit', float('nan')):.4f});"
        f" {result.nan_skips} non-finite batches skipped, {result.rollbacks} rollbacks"
    )
    print(f"wrote {out} (config.json, model.safetensors, training_curve.png, MODEL_CARD.md)")
    return 0


def _require_collected(run_dirs: list[Path]) -> None:
    missing = [str(d) for d in run_dirs if not (Path(d) / META_FILE).is_file()]
    if missing:
        raise FileNotFoundError(f"not collected yet: {', '.join(missing)}; run `nowcast collect` (or build-checkpoint) with the same recipe and --work first")


def _metatrain(args: argparse.Namespace) -> int:
    _threads(args)
    recipe = get_recipe(args.recipe) if args.recipe else None
    if recipe is not None and recipe.route is not None:
        raise ValueError(
            f"recipe {recipe.name} routes between two recipes' models ({recipe.route.below}, {recipe.route.above}): "
            f"build it with `nowcast build-checkpoint --recipe {recipe.name}`, or meta-train either recipe on its own"
        )
    if recipe is not None:
        _check_before_collecting(args, recipe)
    work = Path(args.work) if args.work else Path("runs") / (args.recipe or "custom")
    base = dict(recipe.metatrain) if recipe is not None else {}
    return _metatrain_stage(args, recipe, work, base, {})


def _build(args: argparse.Namespace) -> int:
    _threads(args)
    recipe = get_recipe(args.recipe)
    _check_before_collecting(args, recipe)
    if args.dry_run:
        print(_plan(recipe, args.workers or recipe.workers))
        return 0
    work = _work(args)
    _check_recipe_file(work, recipe)
    print(f"recipe {recipe.name}: {recipe.description}", flush=True)
    n_val = f" (+ {len(recipe.val_runs)} for validation)" if recipe.val_runs else ""
    print(f"stage 1/3: collecting {len(recipe.runs)} trajectories{n_val} into {work / TRAJECTORIES}", flush=True)
    start = time.perf_counter()
    collect(recipe, work / TRAJECTORIES, progress=not args.no_progress, workers=args.workers, threads=args.threads or 1, data_dir=args.data_dir)
    collected = time.perf_counter() - start
    print(f"stage 1/3 done in {collected / 60:.1f} min", flush=True)
    if args.metatrain_threads:
        torch.set_num_threads(args.metatrain_threads)
    if recipe.route is not None:
        return _build_routed(args, recipe, work)
    print("stage 2/3 + 3/3: meta-training and export", flush=True)
    return _metatrain_stage(args, recipe, work, dict(recipe.metatrain), {})


def _check_before_collecting(args: argparse.Namespace, recipe: Any) -> None:
    """Refuse meta-training settings that would only fail after the (long) collection or the
    reading of the trajectories: the overrides on the command line must make a valid configuration
    for the recipe (or for each expert of a routed one), and a checkpoint to start from must exist."""
    for plain_recipe in recipe.experts().values() if recipe.route is not None else (recipe,):
        _config(args, dict(plain_recipe.metatrain))
    if recipe.init_from and not getattr(args, "init_from", None) and not Path(recipe.init_from).exists():
        raise FileNotFoundError(
            f"recipe {recipe.name} starts meta-training from the checkpoint {recipe.init_from}, which does not exist here: "
            "run from the project root (the recipe's path is relative) or build that checkpoint first"
        )


def _kept_collect(args: argparse.Namespace) -> str:
    return f"finished runs are kept in {_work(args) / TRAJECTORIES} and an unfinished run continues from its last snapshot: rerun the same command"


def _kept_metatrain(args: argparse.Namespace) -> str:
    work = Path(args.work) if args.work else Path("runs") / (args.recipe or "custom")
    return f"meta-training continues from its last checkpoint in {work / METATRAIN}: rerun the same command"


def _kept_build(args: argparse.Namespace) -> str:
    return f"collected runs and the last meta-training checkpoint are kept in {_work(args)}: rerun the same command to continue"


def _build_routed(args: argparse.Namespace, recipe: Any, work: Path) -> int:
    """Meta-train each expert recipe on its runs of the shared collection, export each under
    ``work/experts/NAME``, then write the router checkpoint to ``args.out``."""
    experts = recipe.experts()
    exported = {side: work / EXPERTS / expert.name / "export" for side, expert in experts.items()}
    jobs = [(vars(args), expert, str(work / EXPERTS / expert.name), str(work / TRAJECTORIES)) for expert in experts.values()]
    parallel = (args.workers or recipe.workers) >= 2
    for side, expert in experts.items():
        print(f"stage 2/3: meta-training {expert.name}, the model {side} lr_interval {recipe.route.split:g}", flush=True)
    if parallel:
        statuses = _run_experts_in_parallel(jobs, progress=not args.no_progress)
    else:
        statuses = [_expert_job(*job) for job in jobs]
    if any(statuses):
        return max(statuses)
    print("stage 3/3: the routed checkpoint", flush=True)
    router = RegimeRouter(load(exported["below"]), load(exported["above"]), recipe.route.split)
    out = router.save(args.out)
    write_router_card(out / "MODEL_CARD.md", recipe.to_dict(), {side: experts[side].name for side in experts}, exported)
    print(f"wrote {out} (config.json, model.safetensors, MODEL_CARD.md; each expert's own card and curve under {work / EXPERTS})")
    return 0


def _expert_job(args: dict[str, Any], expert: Any, where: str, collected: str, quiet: bool = False) -> int:
    """Meta-train and export one expert of a routed recipe (in this process or a worker)."""
    sub = argparse.Namespace(**{**args, "out": str(Path(where) / "export"), "no_progress": args["no_progress"] or quiet})
    if quiet:
        torch.set_num_threads(args.get("metatrain_threads") or args.get("threads") or 1)
    return _metatrain_stage(sub, expert, Path(where), dict(expert.metatrain), {}, collected=Path(collected))


def _run_experts_in_parallel(jobs: list[tuple], *, progress: bool) -> list[int]:
    """Both experts at once, one worker process each (one core each on the project's machine); one
    progress bar follows both from their checkpoints (every ``checkpoint_every`` steps)."""
    from tqdm.auto import tqdm

    totals = [MetaTrainConfig.from_dict(dict(job[1].metatrain)).steps for job in jobs]
    histories = [Path(job[2]) / METATRAIN / HISTORY_FILE for job in jobs]

    def done() -> int:
        steps = 0
        for path in histories:
            try:
                steps += int(json.loads(path.read_text()).get("step", 0))
            except (OSError, ValueError):
                pass
        return steps

    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_expert_job, *job, True) for job in jobs]
        with tqdm(total=sum(totals), desc=f"meta-train {len(jobs)} experts", unit="step", disable=not progress) as bar:
            while not all(f.done() for f in futures):
                bar.update(done() - bar.n)
                time.sleep(2.0)
            bar.update(done() - bar.n)
        return [f.result() for f in futures]


def _model_card(args: argparse.Namespace) -> int:
    card = Path(args.card)
    if card.is_dir():
        card = card / "MODEL_CARD.md"
    for source in args.append:
        try:
            append_evaluation(card, source)
        except (ValueError, KeyError, TypeError) as err:  # not the JSON that nowcast compare writes
            detail = err.args[0] if isinstance(err, KeyError) and err.args else err
            raise ValueError(f"{source} is not a results file written by nowcast compare ({detail})") from err
        print(f"appended {source} to {card}")
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=thread_count, default=1, help="torch threads (default 1; per process when collecting in parallel)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_debug_flag(p, top=False)


def _add_metatrain_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("meta-training overrides (default: the recipe's)")
    g.add_argument("--hid", type=positive_int, default=None, help="hidden width of the NiNo model")
    g.add_argument("--layers", type=positive_int, default=None, help="message-passing layers")
    g.add_argument("--steps", type=positive_int, default=None, help="meta-training steps")
    g.add_argument("--batch", type=positive_int, default=None, help="windows per step")
    g.add_argument("--lr", type=positive_float, default=None, help="peak learning rate")
    g.add_argument("--wd", type=nonnegative_float, default=None, help="weight decay")
    g.add_argument("--warmup", type=nonnegative_int, default=None, help="steps of linear warm-up")
    g.add_argument("--horizon-weighting", choices=("window", "target"), default=None, help="how a window's horizons are averaged in the loss")
    g.add_argument("--select", choices=("val_loss", "val_jump"), default=None, help="validation metric that selects the exported weights")
    g.add_argument("--seed", type=seed, default=None, help="random seed")
    g.add_argument("--checkpoint-every", type=positive_int, default=None, help="steps between checkpoints")
    g.add_argument("--eval-every", type=positive_int, default=None, help="steps between evaluations")
    p.add_argument("--restart", action="store_true", help="ignore an existing meta-training checkpoint and start over")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``collect``, ``metatrain``, ``build-checkpoint`` and ``model-card`` on the ``nowcast`` command line."""
    recipes = sorted(RECIPES)
    c = sub.add_parser(
        "collect",
        help="train tasks with their base optimizer and save parameter trajectories (resumable)",
        description="Collect the trajectories of a recipe (or of --task/--seeds runs) into WORK/trajectories. "
        "Finished runs are skipped; an interrupted run continues exactly from its last snapshot.",
        allow_abbrev=False,
    )
    c.add_argument("--recipe", default="nino-cpu", choices=recipes, help="recipe (default nino-cpu)")
    c.add_argument("--task", default=None, choices=sorted(tasks()), help="collect ad-hoc runs of this task instead of a recipe")
    c.add_argument("--seeds", type=comma_list(seed, "seeds"), default="100", help="with --task: comma-separated seeds (default 100)")
    c.add_argument(
        "--lr-mults", type=comma_list(positive_float, "numbers > 0"), default="1",
        help="with --task: learning-rate multipliers, cycled over the seeds",
    )
    c.add_argument("--steps", type=positive_int, default=None, help="with --task: training steps (default: the task's)")
    c.add_argument("--every", type=positive_int, default=200, help="with --task: steps between snapshots (default 200)")
    c.add_argument("--work", type=output_dir, default=None, help="work folder (default runs/RECIPE); trajectories go to WORK/trajectories")
    c.add_argument("--workers", type=positive_int, default=None, help="runs in parallel processes (default: the recipe's)")
    c.add_argument("--data-dir", type=existing_dir, default=None, help="existing folder holding the datasets")
    _add_common(c)
    c.set_defaults(run=_collect, kept=_kept_collect)

    m = sub.add_parser(
        "metatrain",
        help="meta-train a NiNo model on collected trajectories and export it (resumable)",
        description="Meta-train on WORK/trajectories (or --trajectories) with the recipe's settings; checkpoints in "
        "WORK/metatrain (rerun to continue); writes OUT/config.json, model.safetensors, training_curve.png, MODEL_CARD.md.",
        allow_abbrev=False,
    )
    m.add_argument("--recipe", default="nino-cpu", choices=recipes, help="recipe whose meta-training settings to use")
    m.add_argument("--work", type=output_dir, default=None, help="work folder (default runs/RECIPE)")
    m.add_argument("--trajectories", type=existing_dir, default=None, help="folder of collected runs to train on (default: the recipe's runs in WORK/trajectories)")
    m.add_argument(
        "--val-trajectories", type=existing_dir, default=None,
        help="folder of collected runs used only for validation: the exported weights are those with the lowest loss on them "
        "(default: the recipe's validation runs)",
    )
    m.add_argument("--out", type=output_dir, required=True, help="checkpoint folder to write")
    m.add_argument(
        "--init-from", type=existing_path, default=None,
        help="fine-tune: start from this checkpoint's weights (same architecture)",
    )
    _add_metatrain_options(m)
    _add_common(m)
    m.set_defaults(run=_metatrain, kept=_kept_metatrain)

    b = sub.add_parser(
        "build-checkpoint",
        help="collect + meta-train + export a NiNo checkpoint from a named recipe, end to end (resumable)",
        description="Reproduce a checkpoint: collection (recipe runs) -> meta-dataset -> meta-training -> "
        "OUT/{config.json, model.safetensors, training_curve.png, MODEL_CARD.md}. Rerun the same command to continue "
        "after an interruption.",
        allow_abbrev=False,
    )
    b.add_argument("--recipe", default="nino-cpu", choices=recipes, help="recipe (default nino-cpu)")
    b.add_argument("--out", type=output_dir, required=True, help="checkpoint folder to write (e.g. checkpoints/nino-cpu)")
    b.add_argument("--work", type=output_dir, default=None, help="work folder for trajectories and checkpoints (default runs/RECIPE)")
    b.add_argument(
        "--workers", type=positive_int, default=None,
        help="collection processes in parallel, and for a routed recipe whether its two experts meta-train at once (2+) (default: the recipe's)",
    )
    b.add_argument("--data-dir", type=existing_dir, default=None, help="existing folder holding the datasets")
    b.add_argument("--restart", action="store_true", help="start meta-training over (collected runs are kept)")
    b.add_argument("--dry-run", action="store_true", help="print the recipe's runs and estimated times, do nothing")
    b.add_argument("--metatrain-threads", type=thread_count, default=None,
                   help="torch threads for meta-training (default: --threads; 2 only helps on an otherwise idle 2-core machine)")
    _add_common(b)
    b.set_defaults(run=_build, kept=_kept_build)

    card = sub.add_parser(
        "model-card",
        help="append steps-to-target results (nowcast compare JSON) to a checkpoint's MODEL_CARD.md",
        allow_abbrev=False,
    )
    card.add_argument("card", type=existing_path, help="MODEL_CARD.md or the checkpoint folder holding it")
    card.add_argument(
        "--append", type=existing_file, nargs="+", action="extend", required=True,
        help="JSON files written by 'nowcast compare' (OUT/TASK.json)",
    )
    add_debug_flag(card, top=False)
    card.set_defaults(run=_model_card)
