"""Reading and writing NiNo checkpoints.

Three formats are read by :func:`load` (through :func:`nowcast.resolver.load_checkpoint`):

- the published ``.pt`` files: a ``torch.save``d dict ``{'state_dict': ..., 'model_args': {...}}``
  (``model_args`` lists only the arguments that differ from the defaults), read with
  ``torch.load(weights_only=True)`` — no code from the file is executed;
- our own format, a directory with ``config.json`` (the :class:`NiNoConfig` fields) and
  ``model.safetensors`` (the state dict), written by :func:`save` / :meth:`NiNoModel.save`;
- a regime router's directory (:mod:`nowcast.regime_router`), loaded as a :class:`RegimeRouter`.

A state dict that does not fit the architecture raises :class:`CheckpointError` naming every
missing and unexpected parameter and every shape mismatch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .config import NiNoConfig
from .model import DEFAULT_EDGE_CHUNK, NiNoModel

if TYPE_CHECKING:  # pragma: no cover
    from .regime_router import RegimeRouter

__all__ = ["CONFIG_FILE", "CheckpointError", "FORMAT_NAME", "WEIGHTS_FILE", "load", "save"]

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_NAME = "nowcast.NiNoModel"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model it describes."""


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


def _load_official(path: Path, edge_chunk: int | None) -> NiNoModel:
    from .safe_load import load_torch_file

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
    from safetensors.torch import load_file

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
    from safetensors.torch import save_file

    from .atomic import atomic_directory

    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        save_file({k: t.detach().to("cpu").contiguous() for k, t in tensors.items()}, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def _load_directory(path: Path, edge_chunk: int | None) -> NiNoModel:
    config_path = path / CONFIG_FILE
    meta = read_directory_config(path, "NiNo checkpoint")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME or not isinstance(meta.get("config"), dict):
        from .regime_router import ROUTER_FORMAT  # here: regime_router imports this module

        hint = " (a regime router of two models: load it with nowcast.RegimeRouter.load)" if isinstance(meta, dict) and meta.get("format") == ROUTER_FORMAT else ""
        raise CheckpointError(f"{config_path} is not a {FORMAT_NAME} config{hint}")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{config_path}: unsupported format version {meta.get('version')!r}")
    try:
        config = NiNoConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{config_path}: {exc}") from exc
    return _build(config, read_directory_weights(path), str(path), edge_chunk)


def load(path: str | Path, *, edge_chunk: int | None = DEFAULT_EDGE_CHUNK) -> NiNoModel | RegimeRouter:
    """Load a checkpoint (in eval mode, on the CPU): a published ``.pt`` file, our directory format,
    or a regime-router directory.

    Args:
        path: a ``.pt`` file as published by the NiNo authors, a directory written by
            :func:`save`, or one written by :meth:`nowcast.RegimeRouter.save` (such as the shipped
            ``checkpoints/nino-cpu-routed``).
        edge_chunk: passed to :class:`NiNoModel`.

    Returns:
        a :class:`NiNoModel`, except for a regime-router directory: then the
        :class:`nowcast.RegimeRouter` of its two models (``.below.model`` / ``.above.model``), which
        every place taking a predictor accepts as it accepts a model. The rules are
        :func:`nowcast.resolver.load_checkpoint`'s, the reader behind :func:`nowcast.resolve`.

    Raises:
        FileNotFoundError: ``path`` (or a file the directory format needs) does not exist.
        CheckpointError: the file cannot be read, or its parameters do not fit its configuration.
    """
    from .resolver import load_checkpoint

    return load_checkpoint(path, edge_chunk=edge_chunk)


def save(model: NiNoModel, directory: str | Path) -> Path:
    """Write ``model`` as ``directory/config.json`` + ``directory/model.safetensors``; returns the directory."""
    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "config": model.config.to_dict()}
    directory = write_directory(directory, meta, model.state_dict())
    log.info("saved NiNo model to %s", directory)
    return directory
