"""The folder format of our checkpoints: ``config.json`` (what the folder holds) and
``model.safetensors`` (the tensors, no pickle). :class:`nowcast.NiNoModel` and
:class:`nowcast.RegimeRouter` folders share it; the ``format`` field of the config tells them apart.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_directory
from ..errors import CheckpointError

__all__ = [
    "CONFIG_FILE", "FORMAT_NAME", "FORMAT_VERSION", "ROUTER_FORMAT", "WEIGHTS_FILE",
    "read_directory_config", "read_directory_weights", "save_model", "write_directory",
]

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_NAME = "nowcast.NiNoModel"
FORMAT_VERSION = 1
ROUTER_FORMAT = "nowcast.RegimeRouter"


def read_directory_config(path: Path, what: str) -> Any:
    """The parsed ``config.json`` of a checkpoint directory (``what`` names the kind in errors),
    after checking that it and ``model.safetensors`` exist."""
    config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    for required in (config_path, weights_path):
        if not required.is_file():
            raise FileNotFoundError(f"{what} directory {path} has no {required.name}")
    try:
        return json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {config_path}: {exc}") from exc


def read_directory_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint directory's ``model.safetensors`` (no pickle), on the CPU."""
    weights_path = path / WEIGHTS_FILE
    try:
        return load_file(str(weights_path), device="cpu")
    except Exception as exc:  # safetensors raises its own error type for corrupt files
        raise CheckpointError(f"cannot read {weights_path}: {exc}") from exc


def write_directory(directory: str | Path, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> Path:
    """Write ``tensors`` as ``model.safetensors`` and ``meta`` as ``config.json`` into ``directory``.

    The folder is filled under a temporary name and renamed into place when both files are
    complete (other files already in ``directory`` are kept), so a crash never leaves a
    half-written checkpoint under its name.
    """
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        save_file({k: t.detach().to("cpu").contiguous() for k, t in tensors.items()}, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def save_model(model: Any, directory: str | Path) -> Path:
    """Write a :class:`nowcast.NiNoModel` as ``directory/config.json`` + ``directory/model.safetensors``; returns the directory."""
    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "config": model.config.to_dict()}
    directory = write_directory(directory, meta, model.state_dict())
    log.info("saved NiNo model to %s", directory)
    return directory
