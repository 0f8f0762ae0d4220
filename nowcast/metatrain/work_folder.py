"""The work folder of a meta-training run: ``checkpoint.pt`` and ``history.json``, and the run read
back from them (:class:`MetaTrainResult`, :func:`load_result`).

The checkpoint (written atomically every ``checkpoint_every`` steps and read with
``torch.load(weights_only=True)``) holds the model, the optimizer, the schedule state, the RNG
states, the step, the loss history and the NaN counters, so that :func:`nowcast.metatrain.metatrain`
called again on the same folder continues exactly where it left off. ``history.json`` holds the
same bookkeeping for people and for progress bars.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..atomic import save_torch_atomic, write_text_atomic
from ..model import NiNoModel
from ..safe_load import load_torch_file
from .config import MetaTrainConfig
from .dataset import MetaDataset

__all__ = ["CHECKPOINT_FILE", "HISTORY_FILE", "MetaTrainResult", "load_result"]

CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "history.json"
CHECKPOINT_VERSION = 1

# fields that may change between a run and its resumption (they do not change the math)
_RESUMABLE_CHANGES = frozenset({"checkpoint_every", "log_every", "eval_every", "eval_windows"})


@dataclass
class MetaTrainResult:
    """What :func:`nowcast.metatrain.metatrain` returns (also read back by :func:`load_result`)."""

    model: NiNoModel
    config: MetaTrainConfig
    step: int
    history: dict[str, list]
    evals: dict[str, list]
    baselines: dict[str, float]
    nan_skips: int
    rollbacks: int
    lr_scale: float
    wall_s: float
    dataset: list[dict[str, Any]]
    work_dir: Path
    best: dict[str, Any] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    val_dataset: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def selected_model(self) -> NiNoModel:
        """The weights to ship: those with the lowest validation loss when the run had a
        validation set (``best``), otherwise the final ones."""
        if self.best_state is None:
            return self.model
        model = NiNoModel(self.config.nino_config(), edge_chunk=None)
        model.load_state_dict(self.best_state)
        model.eval()
        return model

    @property
    def final_loss(self) -> float:
        """Mean training loss over the last 10 % of the recorded steps."""
        losses = self.history["loss"]
        tail = losses[-max(1, len(losses) // 10) :]
        return float(sum(tail) / len(tail)) if tail else math.nan


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` through a temporary file: a reader never sees half a checkpoint."""
    save_torch_atomic(obj, path)


def _check_resumable(saved: Mapping[str, Any], config: MetaTrainConfig, path: Path) -> None:
    mine = config.to_dict()
    defaults = MetaTrainConfig().to_dict()  # fields added later read as their defaults in older checkpoints
    diff = [
        f"{k}: {saved.get(k, defaults[k])!r} -> {v!r}"
        for k, v in mine.items()
        if k not in _RESUMABLE_CHANGES and saved.get(k, defaults[k]) != v
    ]
    if diff:
        raise ValueError(
            f"{path} was written with another meta-training config ({'; '.join(diff)}): "
            "use another work folder, or pass restart=True (command line: --restart) to start over"
        )


def read_checkpoint(path: Path, config: MetaTrainConfig, n_windows: int, n_val_windows: int) -> dict[str, Any]:
    """The checkpoint at ``path``, checked to continue this run: same version, the same config (up to
    bookkeeping fields), the same number of training and validation windows."""
    blob = load_torch_file(path, "meta-training checkpoint")
    if blob.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint version {blob.get('version')!r}")
    _check_resumable(blob["config"], config, path)
    if blob.get("n_windows") != n_windows:
        raise ValueError(
            f"{path} was trained on {blob.get('n_windows')} windows, the dataset now has {n_windows}: "
            "use another work folder or restart"
        )
    if blob.get("n_val_windows", 0) != n_val_windows:
        raise ValueError(
            f"{path} was validated on {blob.get('n_val_windows', 0)} windows, the validation set now has "
            f"{n_val_windows}: use the same validation trajectories, another work folder, or restart"
        )
    return blob


def write_history(
    work: Path, config: MetaTrainConfig, state: Mapping[str, Any], dataset: MetaDataset, val_dataset: MetaDataset | None = None
) -> None:
    """Write ``history.json``: the config, the counters, the curves and the datasets' descriptions."""
    payload = {
        "config": config.to_dict(),
        "step": state["step"],
        "nan_skips": state["nan_skips"],
        "rollbacks": state["rollbacks"],
        "lr_scale": state["lr_scale"],
        "wall_s": state["wall_s"],
        "baselines": state["baselines"],
        "evals": state["evals"],
        "history": state["history"],
        "dataset": dataset.describe(),
        "best": state.get("best"),
        "val_dataset": val_dataset.describe() if val_dataset is not None else [],
    }
    write_text_atomic(work / HISTORY_FILE, json.dumps(payload, default=float) + "\n")


def load_result(work_dir: str | os.PathLike) -> MetaTrainResult:
    """The state of a meta-training run from its work folder's checkpoint (finished or not)."""
    work = Path(work_dir)
    blob = load_torch_file(work / CHECKPOINT_FILE, "meta-training checkpoint")
    config = MetaTrainConfig.from_dict(blob["config"])
    model = NiNoModel(config.nino_config(), edge_chunk=None)
    model.load_state_dict(blob["model"])
    model.eval()
    dataset, val_dataset = [], []
    if (work / HISTORY_FILE).is_file():
        history = json.loads((work / HISTORY_FILE).read_text())
        dataset, val_dataset = history.get("dataset", []), history.get("val_dataset", [])
    return MetaTrainResult(
        model=model, config=config, step=int(blob["step"]), history=blob["history"], evals=blob["evals"],
        baselines=blob["baselines"], nan_skips=int(blob["nan_skips"]), rollbacks=int(blob["rollbacks"]),
        lr_scale=float(blob["lr_scale"]), wall_s=float(blob["wall_s"]), dataset=dataset, work_dir=work,
        best=blob.get("best"), best_state=blob.get("best_model"), val_dataset=val_dataset,
    )
