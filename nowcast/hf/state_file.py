"""The callback's state inside a Trainer checkpoint folder: ``nino_callback.safetensors``.

A Trainer checkpoint (``checkpoint-<step>/``) holds the model, optimizer, scheduler, RNG and
trainer state; :class:`nowcast.hf.NiNoCallback` adds one file next to them, written atomically
(:func:`nowcast.atomic.atomic_file`) and read without pickle (safetensors):

- tensor ``states``: the ``[P, n]`` parameter states recorded so far in the current period (absent
  when ``n = 0``);
- metadata: the format and version, the global step, ``n``, the jump counters, the settings
  (``period``, ``ctx``, ``max_steps``, parameter count, predictor) and a SHA-256 of the recorded
  parameters' values at the save (``fingerprint``).

On ``train(resume_from_checkpoint=...)`` the callback looks for the file where that checkpoint
is (see :func:`candidate_folders`) and takes it only if its step and fingerprint match the
restored model: a file of another run or another step is never applied.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_file
from ..errors import CheckpointError

__all__ = ["FILENAME", "FORMAT", "candidate_folders", "read_state", "write_state"]

log = logging.getLogger(__name__)

FILENAME = "nino_callback.safetensors"
FORMAT = "nowcast.hf.NiNoCallback"
_VERSION = 1
_INTS = ("global_step", "filled", "jumps", "discarded", "period", "ctx", "max_steps", "num_params")


def write_state(folder: str | os.PathLike, states: torch.Tensor | None, info: dict[str, Any]) -> Path:
    """Write ``states`` (``[P, n]`` or None) and ``info`` (the keys of the module docs) to ``folder/FILENAME``."""
    from safetensors.torch import save_file

    path = Path(folder) / FILENAME
    metadata = {"format": FORMAT, "version": str(_VERSION)}
    metadata.update({key: json.dumps(value) for key, value in info.items()})
    tensors = {} if states is None else {"states": states.detach().to("cpu").contiguous()}
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    log.debug("wrote %s (%d recorded states)", path, info.get("filled", 0))
    return path


def read_state(path: str | os.PathLike) -> tuple[torch.Tensor | None, dict[str, Any]]:
    """``(states, info)`` from a file written by :func:`write_state`.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: not a readable callback state of this version.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no NiNo callback state at {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            states = handle.get_tensor("states") if "states" in handle.keys() else None  # noqa: SIM118 (not a dict)
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"cannot read {path}: not a safetensors file ({exc})") from None
    if metadata.get("format") != FORMAT or metadata.get("version") != str(_VERSION):
        raise CheckpointError(f"{path} is not a {FORMAT} state of version {_VERSION} (metadata {metadata})")
    try:
        info = {key: json.loads(value) for key, value in metadata.items() if key not in ("format", "version")}
        for key in _INTS:
            info[key] = int(info[key])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged metadata ({exc})") from None
    return states, info


def candidate_folders(output_dir: str | None, global_step: int, resume_from_checkpoint: Any = None) -> list[Path]:
    """Where the checkpoint being resumed may be: ``TrainingArguments.resume_from_checkpoint`` when
    it names a folder, then ``<output_dir>/checkpoint-<global_step>`` (where the Trainer saves, and
    what ``train(resume_from_checkpoint=True)`` picks)."""
    out: list[Path] = []
    if isinstance(resume_from_checkpoint, (str, os.PathLike)) and str(resume_from_checkpoint):
        out.append(Path(resume_from_checkpoint))
    if output_dir:
        out.append(Path(output_dir) / f"checkpoint-{global_step}")
    unique: list[Path] = []
    for folder in out:
        if folder not in unique:
            unique.append(folder)
    return unique
