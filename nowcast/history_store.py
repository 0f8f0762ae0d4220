"""Where the optimizer wrapper keeps the recorded parameter states: a device, or a file on disk.

``NiNo(..., state_device=...)`` records ``ctx`` states of every parameter, a ``[P, ctx]`` history:
five copies of the model. For a large model that doubles (or more) the memory of training.
``state_device="disk"`` (a file in the system's temporary folder) or a path keeps the history in a
memory-mapped file instead: the operating system pages it in and out, so the resident memory it
needs is what the recording and the nowcasting step touch at a time. The block-wise NiNo step
(:mod:`nowcast.model.graph_source`) reads it piece by piece without copying it.

The file is raw values in the history's dtype, row-major ``[P, ctx]``; it is created empty (sparse)
and deleted when the history is garbage-collected, unless the caller named the file.
"""

from __future__ import annotations

import logging
import os
import tempfile
import weakref
from pathlib import Path

import torch

__all__ = ["DISK", "allocate_history", "history_place", "record_column", "write_params"]

log = logging.getLogger(__name__)

DISK = "disk"


def history_place(value, default: torch.device) -> torch.device | Path:
    """The device (``None``: ``default``) or file (``"disk"``, a path) the history is kept in."""
    if value is None:
        return default
    if isinstance(value, Path) or (isinstance(value, str) and (value == DISK or os.sep in value or value.endswith(".bin"))):
        return Path(tempfile.gettempdir()) / DISK if value == DISK else Path(value)
    try:
        return torch.device(value)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"state_device must be a torch device, 'disk' (a memory-mapped file in {tempfile.gettempdir()}) or a "
            f"file path ending in .bin, got {value!r}"
        ) from None


def allocate_history(num_params: int, ctx: int, dtype: torch.dtype, place: torch.device | Path) -> torch.Tensor:
    """An uninitialized ``[num_params, ctx]`` history on a device, or memory-mapped from a file."""
    if isinstance(place, torch.device):
        return torch.empty(num_params, ctx, dtype=dtype, device=place)
    path = place
    if path == Path(tempfile.gettempdir()) / DISK:  # a fresh anonymous file, removed with the tensor
        handle, name = tempfile.mkstemp(prefix="nino-history-", suffix=".bin")
        os.close(handle)
        path, owned = Path(name), True
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        owned = False
    numel = num_params * ctx
    with open(path, "wb") as f:  # sparse: no disk blocks until written
        f.truncate(numel * torch.empty((), dtype=dtype).element_size())
    history = torch.from_file(str(path), shared=True, size=numel, dtype=dtype).view(num_params, ctx)
    if owned:
        weakref.finalize(history, _remove, path)
    log.info("recording states in %s (%.2f GB, memory-mapped)", path, numel * history.element_size() / 1e9)
    return history


def record_column(column: torch.Tensor, params) -> None:
    """Copy ``params`` (flat-vector order) into one state column ``[P]`` of a history, without a
    whole-model temporary."""
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            column[offset : offset + n].copy_(p.detach().reshape(-1))
            offset += n


def write_params(params, theta: torch.Tensor, mask) -> None:
    """Copy a flat vector ``theta [P]`` (flat-vector order) into the parameters whose ``mask`` entry
    is True, cast to their dtype: the way back of :func:`record_column`."""
    offset = 0
    with torch.no_grad():
        for p, write in zip(params, mask):
            n = p.numel()
            if write:
                p.copy_(theta[offset : offset + n].view(p.shape))
            offset += n


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
