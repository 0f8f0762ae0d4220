"""The files of a collected run, and reading them back (:class:`Trajectory`, :func:`load_trajectory`).

:func:`nowcast.metatrain.collect_run` writes each run into a folder ``<out_dir>/<run_id>/``:

- ``params.npy``: float32 ``[T, P]``, ``T = steps // every + 1`` rows (row ``i`` = the flat
  parameter vector, ``neuralgraph.flatten_params`` order, after ``i * every`` steps), written
  through ``np.lib.format.open_memmap``; rows past ``meta["n_snapshots"]`` are not valid (yet);
- ``meta.json``: the task, the architecture (:func:`model_architecture`), the optimizer and its
  settings (incl. the learning rate actually used), seed, ``every``, the snapshots saved so far
  with the mean training loss over the preceding interval and the validation metric at each, and
  the status (``running``, ``complete`` or ``diverged``);
- ``resume.pt`` (only while the run is unfinished): model and optimizer state, RNG state, the
  step and the snapshot history, written atomically at every snapshot and read with
  ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import neuralgraph

from ..atomic import write_text_atomic

__all__ = ["META_FILE", "PARAMS_FILE", "RESUME_FILE", "Trajectory", "load_trajectory", "model_architecture"]

PARAMS_FILE = "params.npy"
META_FILE = "meta.json"
RESUME_FILE = "resume.pt"
TRAJECTORY_FORMAT = "nowcast.trajectory"
TRAJECTORY_VERSION = 1


def jsonable(value: Any) -> Any:
    """``value`` with what JSON cannot hold replaced: tensors as lists, non-finite floats as None, other objects by their repr."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` (made :func:`jsonable`) to ``path`` atomically."""
    write_text_atomic(path, json.dumps(jsonable(payload), indent=1) + "\n")


def model_architecture(model: nn.Module, graph: Any = None) -> dict[str, Any]:
    """What is needed to rebuild a model's neural graph without the model: class, config,
    converter name and config, and the ``(name, shape)`` list in flat order."""
    graph = neuralgraph.convert(model) if graph is None else graph
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config_dict: Any = dataclasses.asdict(config)
    elif config is not None and hasattr(config, "to_dict"):
        config_dict = config.to_dict()
    else:
        config_dict = None
    return {
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_config": config_dict,
        "converter": graph.meta.get("converter", graph.arch),
        "converter_config": config_dict,
        "lpe": graph.lpe,
        "num_params": graph.num_params,
        "params": [[name, list(p.shape)] for name, p in model.named_parameters()],
    }


@dataclass
class Trajectory:
    """A collected run as read back: ``params`` is a read-only memmap ``[T, P]``; only the first
    ``n_snapshots`` rows are valid."""

    path: Path
    meta: dict[str, Any]
    params: np.ndarray

    @property
    def n_snapshots(self) -> int:
        return int(self.meta["n_snapshots"])

    @property
    def complete(self) -> bool:
        return self.meta.get("status") in ("complete", "diverged")

    @property
    def run_id(self) -> str:
        return str(self.meta["run_id"])

    def states(self, rows: slice | Sequence[int] | np.ndarray) -> torch.Tensor:
        """Snapshots ``rows`` as a float32 ``[P, len(rows)]`` tensor (column = snapshot)."""
        block = np.asarray(self.params[rows], dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(block.T))


def load_trajectory(path: str | os.PathLike) -> Trajectory:
    """Read a run folder written by :func:`nowcast.metatrain.collect` (memory-mapped, nothing loaded eagerly)."""
    path = Path(path)
    meta_path, params_path = path / META_FILE, path / PARAMS_FILE
    if not meta_path.is_file() or not params_path.is_file():
        raise FileNotFoundError(f"{path} is not a collected trajectory (needs {META_FILE} and {PARAMS_FILE})")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != TRAJECTORY_FORMAT:
        raise ValueError(f"{meta_path} is not a {TRAJECTORY_FORMAT} file")
    params = np.load(params_path, mmap_mode="r")
    if params.ndim != 2 or params.shape[1] != meta["architecture"]["num_params"]:
        raise ValueError(f"{params_path} has shape {params.shape}, expected [T, {meta['architecture']['num_params']}]")
    if int(meta["n_snapshots"]) > params.shape[0]:
        raise ValueError(f"{meta_path} claims {meta['n_snapshots']} snapshots but {params_path} has {params.shape[0]} rows")
    return Trajectory(path, meta, params)
