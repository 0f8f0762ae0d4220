"""One set of rules for turning what a user passes as a predictor into a nowcaster.

Every entry point reads predictors and checkpoints here: :func:`nowcast.load`, the
:class:`nowcast.NiNo` wrapper's ``predictor`` argument, :func:`nowcast.predict`,
the methods of ``nowcast compare`` (:func:`nowcast.bench.resolve_method`),
``nowcast step --predictor`` and ``analysis pca --checkpoint``. Accepted, in this order:

- a :class:`nowcast.NiNoModel`: wrapped as :class:`NiNoPredictor` (``gnn=True``) or :class:`WNNPlus`;
- a string that is a method name (case-insensitive): ``linefit``, ``linefit+`` (baselines),
  ``nino`` and ``wnn+`` (their default checkpoints, see :func:`default_checkpoint`, unless one is
  given with ``nino_checkpoint=`` / ``wnn_checkpoint=``), ``adam`` (the base optimizer alone: no
  nowcaster, so :func:`resolve` refuses it while :func:`resolve_spec` gives ``None``);
- ``nino@PATH`` or ``wnn+@PATH``: the checkpoint at ``PATH``, which must be of that kind;
- any other string or path-like: a checkpoint, read by :func:`load_checkpoint` — a published NiNo
  ``.pt`` file, a folder written by :func:`nowcast.save`, or a regime-router folder written by
  :meth:`nowcast.RegimeRouter.save` (``checkpoints/nino-cpu-routed``);
- an object with ``predict(graph, states, k)``, ``needs_graph`` and ``name`` (a
  :class:`nowcast.Nowcaster`, such as the baselines or a :class:`RegimeRouter`): returned as is.

Names win over paths: write ``./nino`` for a folder called ``nino``. Anything else raises one line
saying what was wrong and listing these forms (:data:`ACCEPTED`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..model import DEFAULT_EDGE_CHUNK, NiNoModel
from ..model.checkpoint import load_directory, load_official
from ..paths import search_roots, shared_dirs
from .base import Nowcaster
from .baselines import Linefit, LinefitPlus
from .model_nowcaster import NiNoPredictor, WNNPlus
from .regime_router import RegimeRouter, is_router_checkpoint

__all__ = [
    "ACCEPTED",
    "METHODS",
    "Resolved",
    "SHIPPED_CHECKPOINT",
    "default_checkpoint",
    "follow_device",
    "load_checkpoint",
    "resolve",
    "resolve_spec",
]

log = logging.getLogger(__name__)

METHODS = ("adam", "linefit", "linefit+", "wnn+", "nino")
"""Method names (``nowcast compare --methods``); ``adam`` alone trains without a nowcaster."""

_ALIASES = {
    "adam": "adam", "adamw": "adam", "base": "adam",
    "linefit": "linefit",
    "linefit+": "linefit+", "linefitplus": "linefit+", "linefit_plus": "linefit+",
    "wnn+": "wnn+", "wnnplus": "wnn+",
    "nino": "nino",
}

SHIPPED_CHECKPOINT = "nino-cpu-routed"
"""Folder under ``checkpoints/`` holding the NiNo checkpoint trained with this project (if present):
a :class:`nowcast.RegimeRouter` of ``nino-cpu-mixed`` (short regimes) and ``nino-cpu`` (long ones)."""

_OFFICIAL = {"nino": "nino_no_posw.pt", "wnn+": "nino_mlp.pt"}

ACCEPTED = (
    "accepted: a method name (adam, linefit, linefit+, wnn+, nino), nino@PATH or wnn+@PATH, a checkpoint path "
    "(a published NiNo .pt file, a folder written by nowcast.save, or a regime-router folder such as "
    "checkpoints/nino-cpu-routed), a nowcast.NiNoModel, or a nowcaster object with predict(graph, states, k), "
    "needs_graph and name"
)
"""The accepted forms, as every refusal of this module ends."""

_PATH_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


class Resolved(NamedTuple):
    """What a spec names: ``name`` (a short label: the method name, or ``nino@<stem>`` /
    ``wnn+@<stem>`` for a checkpoint), ``predictor`` (None for ``adam``) and ``checkpoint`` (the
    path it was loaded from, or None)."""

    name: str
    predictor: Any
    checkpoint: str | None


# ------------------------------------------------------------------------------ default checkpoints
def candidates(kind: str) -> list[Path]:
    """Where :func:`default_checkpoint` looks for ``kind`` (``"nino"`` or ``"wnn+"``), in order."""
    if kind not in _OFFICIAL:
        raise ValueError(f"no default checkpoint for '{kind}'; kinds: {', '.join(_OFFICIAL)}")
    out: list[Path] = []
    if kind == "nino":
        out += [root / "checkpoints" / SHIPPED_CHECKPOINT for root in search_roots()]
    out += shared_dirs("checkpoints", "official", _OFFICIAL[kind])
    return out


def default_checkpoint(kind: str) -> Path | None:
    """The checkpoint used for ``kind`` (``"nino"`` or ``"wnn+"``) when none is given, or None:
    for ``nino`` the project's ``checkpoints/nino-cpu-routed``, then the published
    ``nino_no_posw.pt`` in ``../shared/checkpoints/official/``; for ``wnn+`` the published ``nino_mlp.pt``."""
    for path in candidates(kind):
        if (path / "config.json").is_file() or path.is_file():
            return path
    return None


# ------------------------------------------------------------------------------ reading checkpoints
def load_checkpoint(path: str | os.PathLike, *, edge_chunk: int | None = DEFAULT_EDGE_CHUNK) -> NiNoModel | RegimeRouter:
    """What the checkpoint at ``path`` holds, on the CPU in eval mode (this is :func:`nowcast.load`).

    A regime-router folder gives a :class:`RegimeRouter` (two models, ``.below.model`` and
    ``.above.model``; itself a nowcaster); a folder written by :func:`nowcast.save` or a published
    ``.pt`` file gives a :class:`NiNoModel`. No pickle is run.

    Raises:
        FileNotFoundError: nothing at ``path``.
        CheckpointError: the file or folder is not a readable checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no NiNo checkpoint at {path}; {ACCEPTED}")
    if not path.is_dir():
        return load_official(path, edge_chunk)
    if is_router_checkpoint(path):
        router = RegimeRouter.load(path)
        for expert in (router.below, router.above):
            expert.model.edge_chunk = edge_chunk
        return router
    return load_directory(path, edge_chunk)


def _wrap(loaded: Any, kind: str | None, source: str) -> Any:
    """A loaded model or router as a nowcaster; ``kind`` ("nino" / "wnn+") demands that kind."""
    if not isinstance(loaded, NiNoModel):  # a RegimeRouter: two NiNo graph networks
        if kind == "wnn+":
            raise ValueError(f"{source} cannot serve as 'wnn+': it is a regime router of two NiNo models")
        return loaded
    if kind is None:
        kind = "nino" if loaded.config.gnn else "wnn+"
    wrapper = NiNoPredictor if kind == "nino" else WNNPlus
    try:
        return wrapper(loaded)
    except ValueError as err:
        raise ValueError(f"{source} cannot serve as '{kind}': {err}") from None


def _move(nowcaster: Any, device: Any) -> Any:
    if device is not None:
        if hasattr(nowcaster, "to"):
            nowcaster.to(device)
        else:
            nowcaster.model.to(device)
    return nowcaster


def follow_device(nowcaster: Any, spec: Any, device: Any) -> Any:
    """Move a predictor the library loaded itself (``spec`` was a name or a checkpoint path) to the
    accelerator the trained network is on, so that its step runs there (the history follows when
    it fits, :mod:`nowcast.nowcasters.model_nowcaster`). A predictor object the caller passed is never
    moved, nor anything to the CPU. Returns ``nowcaster``."""
    if device is None or not isinstance(spec, (str, os.PathLike)) or torch.device(device).type == "cpu":
        return nowcaster
    if hasattr(nowcaster, "to") or isinstance(getattr(nowcaster, "model", None), NiNoModel):
        _move(nowcaster, device)
        log.info("predictor %s moved to %s, the trained network's device", getattr(nowcaster, "name", spec), device)
    return nowcaster


def _from_checkpoint(path: str | os.PathLike, kind: str | None, edge_chunk: int | None, device: Any) -> Any:
    return _move(_wrap(load_checkpoint(path, edge_chunk=edge_chunk), kind, str(path)), device)


def _default(kind: str, given: str | os.PathLike | None) -> str | os.PathLike:
    if given is not None:
        return given
    found = default_checkpoint(kind)
    if found is None:
        looked = ", ".join(str(p) for p in candidates(kind))
        flag = "--nino-checkpoint" if kind == "nino" else "--wnn-checkpoint"
        raise FileNotFoundError(f"method '{kind}' needs a checkpoint: pass {kind}@PATH or {flag} PATH (looked in {looked})")
    return found


# ------------------------------------------------------------------------------ specs
def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.endswith(_PATH_SUFFIXES)


def _from_text(text: str, nino_checkpoint: Any, wnn_checkpoint: Any, edge_chunk: int | None, device: Any) -> Resolved:
    name = _ALIASES.get(text.strip().lower())
    if name == "adam":
        return Resolved("adam", None, None)
    if name in ("linefit", "linefit+"):
        return Resolved(name, Linefit() if name == "linefit" else LinefitPlus(), None)
    if name in _OFFICIAL:
        path = _default(name, nino_checkpoint if name == "nino" else wnn_checkpoint)
        return Resolved(name, _from_checkpoint(path, name, edge_chunk, device), str(path))
    if "@" in text:
        prefix, _, rest = text.partition("@")
        kind = _ALIASES.get(prefix.strip().lower())
        if kind is not None:
            if kind not in _OFFICIAL or not rest.strip():
                raise ValueError(f"'{text}': only nino@PATH and wnn+@PATH name a checkpoint in the method; {ACCEPTED}")
            path = rest.strip()
            if not Path(path).exists():
                raise FileNotFoundError(f"'{text}': no checkpoint at {path}; {ACCEPTED}")
            return Resolved(f"{kind}@{Path(path).stem}", _from_checkpoint(path, kind, edge_chunk, device), path)
    if Path(text).exists():
        predictor = _from_checkpoint(text, None, edge_chunk, device)
        kind = "wnn+" if predictor.name == "WNN+" else "nino"
        return Resolved(f"{kind}@{Path(text).stem}", predictor, text)
    if _looks_like_path(text):
        raise FileNotFoundError(f"no checkpoint at '{text}': it is neither a method name nor an existing file or folder; {ACCEPTED}")
    raise ValueError(f"unknown method '{text}': neither a method name nor an existing checkpoint; {ACCEPTED}")


def resolve_spec(
    spec: Any,
    *,
    nino_checkpoint: str | os.PathLike | None = None,
    wnn_checkpoint: str | os.PathLike | None = None,
    edge_chunk: int | None = DEFAULT_EDGE_CHUNK,
    device: Any = None,
) -> Resolved:
    """Name, predictor (None for ``adam``) and checkpoint of any accepted spec (see the module docs).

    Args:
        spec: a method name, ``nino@PATH`` / ``wnn+@PATH``, a checkpoint path, a
            :class:`NiNoModel` or a nowcaster object.
        nino_checkpoint, wnn_checkpoint: the checkpoints the names ``nino`` / ``wnn+`` stand for
            (default :func:`default_checkpoint`).
        edge_chunk: for the models read from checkpoints (see :class:`NiNoModel`).
        device: where to move the models read from checkpoints (objects passed in are never moved).

    Raises:
        ValueError: an unknown name, or a checkpoint of the wrong kind for ``nino@`` / ``wnn+@``.
        FileNotFoundError: a path (or a default checkpoint) that does not exist.
        CheckpointError: a file or folder that is not a readable checkpoint.
        TypeError: an object that is none of the accepted forms.
    """
    if isinstance(spec, NiNoModel):
        predictor = _wrap(spec, None, "the model")
        return Resolved("nino" if predictor.name == "NiNo" else "wnn+", predictor, None)
    if isinstance(spec, os.PathLike):
        predictor = _from_checkpoint(spec, None, edge_chunk, device)
        kind = "wnn+" if predictor.name == "WNN+" else "nino"
        return Resolved(f"{kind}@{Path(spec).stem}", predictor, str(spec))
    if isinstance(spec, str):
        return _from_text(spec, nino_checkpoint, wnn_checkpoint, edge_chunk, device)
    if isinstance(spec, Nowcaster):
        return Resolved(str(getattr(spec, "name", type(spec).__name__)), spec, None)
    raise TypeError(f"cannot use a {type(spec).__name__} as a predictor; {ACCEPTED}")


def resolve(spec: Any, **options: Any) -> Nowcaster:
    """The nowcaster ``spec`` names: any form listed in the module docs except ``adam``.

    ``options`` are those of :func:`resolve_spec` (``nino_checkpoint``, ``wnn_checkpoint``,
    ``edge_chunk``, ``device``). A nowcaster object comes back unchanged.
    """
    resolved = resolve_spec(spec, **options)
    if resolved.predictor is None:
        raise ValueError(f"'{spec}' is the base optimizer alone, not a predictor; {ACCEPTED}")
    log.debug("resolved predictor %r as %s (%s)", spec, resolved.name, resolved.checkpoint or "no checkpoint")
    return resolved.predictor
