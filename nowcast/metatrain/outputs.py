"""What a meta-training run leaves for users: the checkpoint folder (:func:`export`) and its training curve.

:func:`export` writes ``config.json`` + ``model.safetensors`` (:func:`nowcast.save`, loadable
with :func:`nowcast.load` / :class:`nowcast.NiNoPredictor`), ``training_curve.png``
(:func:`plot_training_curve`) and ``MODEL_CARD.md`` (:mod:`nowcast.metatrain.model_card`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_directory
from .model_card import write_model_card
from .work_folder import MetaTrainResult

__all__ = ["export", "plot_training_curve"]

log = logging.getLogger(__name__)


def plot_training_curve(result: MetaTrainResult, path: str | os.PathLike) -> Path:
    """Training loss (raw and smoothed), evaluation loss, the zero-change / Linefit losses on the
    same windows, and the learning rate; written as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    hist = result.history
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    steps = np.asarray(hist["step"], dtype=float)
    losses = np.asarray(hist["loss"], dtype=float)
    if len(losses):
        ax.plot(steps, losses, color="tab:blue", alpha=0.25, lw=0.8, label="training loss (batch)")
        width = max(1, len(losses) // 50)
        if width > 1:
            smooth = np.convolve(losses, np.ones(width) / width, mode="valid")
            ax.plot(steps[width - 1 :], smooth, color="tab:blue", lw=1.6, label=f"training loss ({width}-step mean)")
    if result.evals["step"]:
        ax.plot(result.evals["step"], result.evals["loss"], "o-", color="tab:red", ms=3, label="loss on fixed eval windows")
    if result.evals.get("val_loss"):
        ax.plot(result.evals["step"], result.evals["val_loss"], "s-", color="tab:orange", ms=3, label="loss on validation trajectories")
        if result.best is not None:
            ax.plot([result.best["step"]], [result.best["val_loss"]], "*", color="k", ms=10, label=f"selected (step {result.best['step']})")
    if result.evals.get("val_jump"):
        ax_jump = ax.twinx()
        ax_jump.plot(result.evals["step"], result.evals["val_jump"], "^--", color="tab:brown", ms=3, lw=1)
        ax_jump.set_ylabel("validation jump error (x no change)", color="tab:brown")
    colors = {"zero": "gray", "linefit": "tab:green"}
    for name, value in result.baselines.items():
        ax.axhline(value, ls=":" if name.startswith("val_") else "--", color=colors.get(name.removeprefix("val_"), "k"), lw=1, label=f"{name} predictor ({value:.3f})")
    ax.set_yscale("log")
    ax.set_ylabel("L1 on scaled changes")
    ax.set_title(f"NiNo meta-training (hid {result.config.hid}, {result.step} steps)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    if len(steps):
        ax_lr.plot(steps, hist["lr"], color="tab:purple")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("meta-training step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def export(
    result: MetaTrainResult,
    out_dir: str | os.PathLike,
    *,
    recipe: Mapping[str, Any] | None = None,
    timings: Mapping[str, float] | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` (the selected model), ``training_curve.png``, ``MODEL_CARD.md``: all or none."""
    out = Path(out_dir)
    if result.best is not None:
        log.info("exporting the weights of step %d (lowest %s: %.4f)", result.best["step"], result.config.select, result.best[result.config.select])
    with atomic_directory(out) as tmp:
        result.selected_model().save(tmp)
        plot_training_curve(result, tmp / "training_curve.png")
        write_model_card(tmp / "MODEL_CARD.md", result, recipe=recipe, timings=timings, curve="training_curve.png")
    log.info("exported the meta-trained NiNo model to %s", out)
    return out
