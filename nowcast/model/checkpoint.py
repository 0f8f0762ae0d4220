"""Reading NiNo models from their checkpoints (:func:`load_model`).

Two formats hold one model:

- the published ``.pt`` files: a ``torch.save``d dict ``{'state_dict': ..., 'model_args': {...}}``
  (``model_args`` lists only the arguments that differ from the defaults), read with
  ``torch.load(weights_only=True)`` — no code from the file is executed;
- our own folder format (:mod:`nowcast.model.files`), written by :meth:`NiNoModel.save`.

A regime router's folder holds two models; :func:`nowcast.load` reads every kind. A state dict
that does not fit the architecture raises :class:`CheckpointError` naming every missing and
unexpected parameter and every shape mismatch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..safe_load import load_torch_file
from .config import NiNoConfig
from .files import CONFIG_FILE, FORMAT_NAME, FORMAT_VERSION, ROUTER_FORMAT, read_directory_config, read_directory_weights
from .network import DEFAULT_EDGE_CHUNK, NiNoModel

__all__ = ["check_state_dict", "load_directory", "load_model", "load_official"]

log = logging.getLogger(__name__)


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape)


def check_state_dict(model: NiNoModel, state_dict: Mapping[str, Any], source: str) -> None:
    """Raise :class:`CheckpointError` unless ``state_dict`` has exactly the model's parameters and shapes."""
    expected = model.state_dict()
    missing = [name for name in expected if name not in state_dict]
    unexpected = [name for name in state_dict if name not in expected]
    mismatched = [
        f"{name}: checkpoint {_shape(state_dict[name])} vs model {_shape(expected[name])}"
        for name in expected
        if name in state_dict and _shape(state_dict[name]) != _shape(expected[name])
    ]
    not_tensors = [name for name, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if not (missing or unexpected or mismatched or not_tensors):
        return
    problems = []
    if missing:
        problems.append(f"missing parameters: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected parameters: {', '.join(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {'; '.join(mismatched)}")
    if not_tensors:
        problems.append(f"entries that are not tensors: {', '.join(not_tensors)}")
    raise CheckpointError(f"checkpoint {source} does not fit {model.config}: " + " | ".join(problems))


def _build(config: NiNoConfig, state_dict: Mapping[str, Any], source: str, edge_chunk: int | None) -> NiNoModel:
    model = NiNoModel(config, edge_chunk=edge_chunk)
    check_state_dict(model, state_dict, source)
    model.load_state_dict(dict(state_dict), strict=True)
    model.eval()
    log.info("loaded NiNo checkpoint %s (%s, %d parameters)", source, config, sum(p.numel() for p in model.parameters()))
    return model


def load_official(path: Path, edge_chunk: int | None) -> NiNoModel:
    blob = load_torch_file(path, "NiNo checkpoint", CheckpointError)  # tensors and plain containers only
    if not isinstance(blob, Mapping) or not isinstance(blob.get("state_dict"), Mapping):
        raise CheckpointError(f"{path} is not a NiNo checkpoint: expected a dict with 'state_dict' and 'model_args'")
    model_args = blob.get("model_args") or {}
    if not isinstance(model_args, Mapping):
        raise CheckpointError(f"{path}: 'model_args' must be a dict, got {type(model_args).__name__}")
    try:
        config = NiNoConfig.from_official_args(model_args)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return _build(config, blob["state_dict"], str(path), edge_chunk)


def load_directory(path: Path, edge_chunk: int | None) -> NiNoModel:
    config_path = path / CONFIG_FILE
    meta = read_directory_config(path, "NiNo checkpoint")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME or not isinstance(meta.get("config"), dict):
        hint = " (a regime router of two models: load it with nowcast.RegimeRouter.load)" if isinstance(meta, dict) and meta.get("format") == ROUTER_FORMAT else ""
        raise CheckpointError(f"{config_path} is not a {FORMAT_NAME} config{hint}")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{config_path}: unsupported format version {meta.get('version')!r}")
    try:
        config = NiNoConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{config_path}: {exc}") from exc
    return _build(config, read_directory_weights(path), str(path), edge_chunk)


def load_model(path: str | Path, *, edge_chunk: int | None = DEFAULT_EDGE_CHUNK) -> NiNoModel:
    """One NiNo model from a published ``.pt`` file or a folder written by :meth:`NiNoModel.save`
    (on the CPU, in eval mode)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no NiNo checkpoint at {path}")
    return load_directory(path, edge_chunk) if path.is_dir() else load_official(path, edge_chunk)
