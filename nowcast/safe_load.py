"""Reading ``torch.save`` files without running code from them.

Every ``.pt`` file this package reads (published NiNo checkpoints, meta-training and collection
checkpoints, graph caches, stacked states) goes through :func:`load_torch_file`:
``torch.load(weights_only=True)``, which restores tensors and plain containers (dicts, lists,
numbers, strings) only. When a file cannot be read that way, torch's own message suggests
retrying with ``weights_only=False``, which would execute whatever the file holds. That advice
is not passed on: the error says what is wrong with the file instead.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

__all__ = ["load_torch_file", "unreadable_reason"]

_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_DETAIL = re.compile(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", re.S)


def unreadable_reason(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in a few words and without torch's advice."""
    text = str(exc)
    if isinstance(exc, EOFError) or (not text and isinstance(exc, (pickle.UnpicklingError, RuntimeError))):
        return "the file is empty or cut short"
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in text:
        found = _GLOBAL.search(text)
        if found:
            return (
                f"it holds a pickled Python object ({found.group(1)}), not only tensors and plain containers "
                "(dicts, lists, numbers, strings)"
            )
        detail = _DETAIL.search(text)
        detail_text = " ".join(detail.group(1).split()) if detail else "unreadable pickle data"
        return (
            "it is damaged, or a pickle that needs Python objects or code beyond tensors and plain containers "
            f"({detail_text})"
        )
    if "zip archive" in text or "central directory" in text:
        return f"the file is damaged: truncated or changed after it was saved ({text.split('. ')[0]})"
    first = text.splitlines()[0] if text else ""
    return f"it is not a file written by torch.save ({type(exc).__name__}{': ' + first if first else ''})"


def load_torch_file(path: str | Path, what: str = "checkpoint", error: type[Exception] | None = None) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, with a clear error.

    Args:
        path: the file.
        what: what the file should be, for the message ("NiNo checkpoint", "graph cache", ...).
        error: the exception class raised when the file cannot be read
            (default :class:`nowcast.CheckpointError`).

    Raises:
        FileNotFoundError: no file at ``path``.
        error: the file exists but is not a loadable ``torch.save`` file of tensors and plain
            containers. The message says why and never recommends ``weights_only=False``.
    """
    if error is None:
        error = CheckpointError
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it may not support, then fails with its own error
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or foreign files
        # from None: torch's message (with its advice) stays on __context__ but is not printed
        raise error(
            f"cannot read {path}: it is not a loadable {what}; {unreadable_reason(exc)}. Files are read with "
            "torch.load(weights_only=True), which restores tensors and plain containers only; this library "
            "never unpickles code, so such a file cannot be loaded here"
        ) from None
