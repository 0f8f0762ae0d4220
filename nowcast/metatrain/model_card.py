"""``MODEL_CARD.md`` for a meta-trained NiNo checkpoint: data, recipe, training curve, evaluation.

:func:`write_model_card` writes the card when a checkpoint is exported
(:func:`nowcast.metatrain.export`); its evaluation section starts empty and
:func:`append_evaluation` adds one steps-to-target table per task from a
:class:`nowcast.bench.comparison.Comparison` (or the JSON that ``nowcast compare`` writes).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import write_text_atomic

if TYPE_CHECKING:  # pragma: no cover
    from ..bench.comparison import Comparison
    from .work_folder import MetaTrainResult

__all__ = ["append_evaluation", "evaluation_table", "write_model_card", "write_router_card"]

EVAL_HEADING = "## Evaluation: steps to target"
EVAL_PLACEHOLDER = "_Not evaluated yet: run `nowcast compare --task TASK --methods adam,nino --nino-checkpoint THIS_DIR` and append the JSON with `nowcast model-card THIS_DIR/MODEL_CARD.md --append RESULTS.json`._"


def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _data_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "| run | task | seed | optimizer | lr (x mult) | steps | snapshots | windows | final metric | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lr = f"{_fmt(r.get('lr'), '.3g')} (x{_fmt(r.get('lr_mult'), 'g')})"
        metric = f"{r.get('metric_name') or ''} {_fmt(r.get('final_metric'))}".strip()
        lines.append(
            f"| {r['run_id']} | {r['task']} | {r['seed']} | {r.get('optimizer') or '-'} | {lr} | {r['steps']} | "
            f"{r['snapshots']} | {r['windows']} | {metric} | {r.get('status') or '-'} |"
        )
    return lines


def write_model_card(
    path: str | os.PathLike,
    result: MetaTrainResult,
    *,
    recipe: Mapping[str, Any] | None = None,
    timings: Mapping[str, float] | None = None,
    curve: str | None = "training_curve.png",
) -> Path:
    """Write the card for a finished (or interrupted) meta-training ``result``."""
    lines = [
        *_overview_lines(result, recipe),
        *_data_lines(result),
        *_recipe_lines(result, curve),
        *_result_lines(result, timings),
        "", EVAL_HEADING, "", EVAL_PLACEHOLDER, "",
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "\n".join(lines))
    return path


def _overview_lines(result: MetaTrainResult, recipe: Mapping[str, Any] | None) -> list[str]:
    """The title; what the model reads, predicts and how to use it; the recipe's description."""
    cfg = result.config
    ncfg = cfg.nino_config()
    n_params = sum(p.numel() for p in result.model.parameters())
    rows = result.dataset
    name = (recipe or {}).get("name", "custom")
    spacings = sorted({int(r["every"]) for r in rows if r.get("every")}) or [200]
    spacing = " / ".join(str(e) for e in spacings)
    lines = [
        f"# NiNo checkpoint `{name}` (meta-trained with `nowcast`)",
        "",
        f"A NiNo graph network (hidden size {ncfg.hid}, {ncfg.layers} message-passing layers, {ncfg.lpe} Laplacian "
        f"positional encodings, no token-id embedding; {n_params:,} parameters) that reads the last "
        f"ctx={ncfg.ctx} parameter states, {spacing} optimizer steps apart and scaled per tensor, and predicts the "
        f"change for horizons k=1..{ncfg.seq_len} (in units of that spacing: with states every 200 steps, use "
        "`period=1000` in the optimizer wrapper). Load it with "
        "`nowcast.load(DIR)` or `nowcast.NiNoPredictor.load(DIR)`; use it with `nowcast.NiNo(optimizer, model, DIR, "
        "period=1000, max_train_steps=...)` or `nowcast compare --methods adam,nino --nino-checkpoint DIR`.",
        "",
    ]
    if recipe and recipe.get("description"):
        lines += [f"Recipe `{name}`: {recipe['description']}.", ""]
    return lines


def _data_lines(result: MetaTrainResult) -> list[str]:
    """The training trajectories and, when the run had them, the validation trajectories."""
    ncfg = result.config.nino_config()
    rows = result.dataset
    tasks = sorted({r["task"] for r in rows})
    n_windows = sum(r["windows"] for r in rows)
    lines = [
        "## Training data",
        "",
        f"{len(rows)} trajectories of the base optimizers on {', '.join(tasks) or '-'}; {n_windows} windows of "
        f"{ncfg.ctx} consecutive snapshots (every window with at least one future snapshot; horizons past the end "
        "of a trajectory are masked). Seeds differ from the benchmark seeds (0, 1, 2, ...).",
        "",
        *_data_table(rows),
        "",
    ]
    if result.val_dataset:
        val_rows = result.val_dataset
        lines += [
            f"Validation (not trained on; selects the shipped weights): {len(val_rows)} more trajectories, "
            f"{sum(r['windows'] for r in val_rows)} windows.",
            "",
            *_data_table(val_rows),
            "",
        ]
    return lines


def _recipe_lines(result: MetaTrainResult, curve: str | None) -> list[str]:
    """The loss and optimisation settings, then the training-curve heading (and image)."""
    cfg = result.config
    ncfg = cfg.nino_config()
    weighting = (
        "mean per window, then over"
        if cfg.horizon_weighting == "window"
        else f"summed over the window's horizons and divided by seq_len={ncfg.seq_len}, so every (window, horizon) target weighs the same, then averaged over"
    )
    lines = [
        "## Recipe",
        "",
        f"- loss: L1 between predicted and true scaled changes, over all unmasked horizons and parameter slots "
        f"({weighting} a batch of {cfg.batch} windows);",
        f"- AdamW lr {cfg.lr:g} (betas {cfg.beta1:g}/{cfg.beta2:g}, weight decay {cfg.wd:g} on matrices), "
        f"{cfg.warmup} warm-up steps, cosine decay to {cfg.min_lr_ratio:g} x lr at {cfg.steps} steps; "
        f"gradient norm clipped at {cfg.clip:g}; seed {cfg.seed};",
        f"- non-finite batches skipped: {result.nan_skips}; rollbacks to the last good checkpoint: "
        f"{result.rollbacks} (learning-rate factor at the end: {result.lr_scale:g}).",
        f"- full config: `{json.dumps(cfg.to_dict())}`",
        "",
        "## Training curve",
        "",
    ]
    if curve:
        lines += [f"![training curve]({curve})", ""]
    return lines


def _result_lines(result: MetaTrainResult, timings: Mapping[str, float] | None) -> list[str]:
    """How training went: steps and losses against the baselines, validation and selection, wall-clock time."""
    cfg = result.config
    final_eval = result.evals["loss"][-1] if result.evals.get("loss") else None
    lines = [
        f"- steps done: {result.step} of {cfg.steps}; training loss over the last 10 % of steps: {_fmt(result.final_loss)};",
        f"- loss on {cfg.eval_windows} fixed windows (drawn from the training windows): first "
        f"{_fmt(result.evals['loss'][0] if result.evals.get('loss') else None)}, last {_fmt(final_eval)}; on the same "
        f"windows predicting no change scores {_fmt(result.baselines.get('zero'))} and Linefit "
        f"{_fmt(result.baselines.get('linefit'))}.",
    ]
    if result.evals.get("val_loss"):
        val, jump = result.evals["val_loss"], result.evals.get("val_jump") or [None]
        best = result.best or {}
        lines += [
            f"- loss on {min(cfg.val_windows, sum(r['windows'] for r in result.val_dataset))} fixed windows of the validation "
            f"trajectories: first {_fmt(val[0])}, last {_fmt(val[-1])}, at the selected step {_fmt(best.get('val_loss'))}; "
            f"no change scores {_fmt(result.baselines.get('val_zero'))}, Linefit {_fmt(result.baselines.get('val_linefit'))};",
            f"- jump error along the validation trajectories (the predictions the optimizer wrapper would ask for, as a "
            f"fraction of the no-change error; `nowcast.metatrain.jump_error`): first {_fmt(jump[0])}, last {_fmt(jump[-1])}, "
            f"at the selected step {_fmt(best.get('val_jump'))};",
        ]
        lines.append(f"- selection: the lowest `{cfg.select}`, at step {best.get('step')} (**the shipped weights**).")
    timings = dict(timings or {})
    timings.setdefault("meta-training", result.wall_s)
    parts = ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())
    lines += [f"- wall-clock time: {parts}."]
    return lines


def _expert_section(card: Path, side: str, copy_curve_to: Path) -> list[str]:
    """An expert's own card without its title and evaluation, headings one level down; its
    training curve is copied next to the router's card as ``training_curve_{side}.png``."""
    text = card.read_text() if card.is_file() else ""
    text = text.split(EVAL_HEADING)[0]
    body = [line for i, line in enumerate(text.splitlines()) if not (i == 0 and line.startswith("# "))]
    curve = card.parent / "training_curve.png"
    if curve.is_file():
        shutil.copyfile(curve, copy_curve_to / f"training_curve_{side}.png")
    return [("#" + line) if line.startswith("#") else line.replace("(training_curve.png)", f"(training_curve_{side}.png)") for line in body]


def write_router_card(
    path: str | os.PathLike,
    recipe: Mapping[str, Any],
    names: Mapping[str, str],
    expert_dirs: Mapping[str, str | os.PathLike],
) -> Path:
    """Write the card of a routed checkpoint (:class:`nowcast.RegimeRouter`): what it is, how to
    use it, then each expert's own card (data, recipe, curve, validation) under its side."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    route = recipe["route"]
    split = f"{float(route['split']):g}"
    name = recipe.get("name", "routed")
    lines = [
        f"# NiNo checkpoint `{name}` (two meta-trained models, routed by training regime)",
        "",
        f"Two NiNo graph networks in one checkpoint (`nowcast.RegimeRouter`): `{names['below']}` predicts when the "
        f"base optimizer's learning rate times the steps between two states (`lr_interval`) is below {split}, "
        f"`{names['above']}` at and above it. Every prediction is bit for bit one model's. The optimizer wrapper passes "
        "`lr_interval` (its learning rate x period/ctx); `nowcast.predict(..., lr_interval=)` and `nowcast step "
        "--lr-interval` take it explicitly. Load it with `nowcast.RegimeRouter.load(DIR)` or `nowcast.resolve(DIR)`; "
        "use it with `nowcast.NiNo(optimizer, model, DIR, period=..., max_train_steps=...)` or `nowcast compare "
        "--methods adam,nino --nino-checkpoint DIR`.",
        "",
    ]
    if recipe.get("description"):
        lines += [f"Recipe `{name}`: {recipe['description']}.", ""]
    for side in ("below", "above"):
        where = "below" if side == "below" else "at and above"
        lines += [f"## The model {where} lr_interval {split}: `{names[side]}`", ""]
        lines += _expert_section(Path(expert_dirs[side]) / "MODEL_CARD.md", side, path.parent)
        lines.append("")
    lines += [EVAL_HEADING, "", EVAL_PLACEHOLDER, ""]
    write_text_atomic(path, "\n".join(lines))
    return path


def _as_summary(comparison: Comparison | Mapping[str, Any] | str | os.PathLike) -> dict[str, Any]:
    if isinstance(comparison, (str, os.PathLike)):
        comparison = json.loads(Path(comparison).read_text())
    if hasattr(comparison, "to_json"):
        comparison = comparison.to_json()
    if not isinstance(comparison, Mapping) or "methods" not in comparison or "task" not in comparison:
        raise ValueError("expected a nowcast.bench.comparison.Comparison or its JSON (with 'task' and 'methods')")
    return dict(comparison)


def evaluation_table(comparison: Comparison | Mapping[str, Any] | str | os.PathLike) -> str:
    """A markdown table of steps-to-target per method (per seed, median, reduction vs Adam)."""
    d = _as_summary(comparison)
    direction = ">=" if d.get("higher_is_better", True) else "<="
    lines = [
        f"### {d['task']}: steps to {d.get('metric', 'metric')} {direction} {d.get('target')}",
        "",
        "| method | steps to target per seed | median | vs adam | best |",
        "|---|---|---|---|---|",
    ]
    runs = d.get("runs", [])
    hib = d.get("higher_is_better", True)
    for method, row in d["methods"].items():
        per_seed = " ".join("-" if s is None else str(s) for s in row.get("steps_to_target", []))
        red = row.get("reduction_vs_adam_pct")
        red_s = "" if method == "adam" else ("-" if red is None else f"{red:+.1f}%")
        values = [v for r in runs if r.get("method") == method for v in r.get("values", []) if v is not None and math.isfinite(v)]
        best = (max(values) if hib else min(values)) if values else None
        checkpoint = next((r.get("checkpoint") for r in runs if r.get("method") == method and r.get("checkpoint")), None)
        label = method if not checkpoint or "@" in method else f"{method} ({Path(checkpoint).name})"
        lines.append(f"| {label} | {per_seed} | {_fmt(row.get('median'), '.0f')} | {red_s} | {_fmt(best)} |")
    lines.append("")
    lines.append("'-' = target not reached; 'vs adam' = fewer steps than Adam (median over seeds).")
    return "\n".join(lines) + "\n"


def append_evaluation(card: str | os.PathLike, comparison: Comparison | Mapping[str, Any] | str | os.PathLike) -> Path:
    """Append the steps-to-target table of ``comparison`` to the card's evaluation section
    (replacing the "not evaluated yet" line the first time)."""
    card = Path(card)
    text = card.read_text() if card.is_file() else f"{EVAL_HEADING}\n\n{EVAL_PLACEHOLDER}\n"
    if EVAL_HEADING not in text:
        text = text.rstrip("\n") + f"\n\n{EVAL_HEADING}\n\n"
    text = text.replace(EVAL_PLACEHOLDER + "\n", "").replace(EVAL_PLACEHOLDER, "")
    text = text.rstrip("\n") + "\n\n" + evaluation_table(comparison)
    write_text_atomic(card, text)
    return card
