"""Training methods by name: the base optimizer alone, or wrapped by a nowcaster.

``adam`` (the task's base optimizer, Adam or AdamW), ``linefit``, ``linefit+`` (no checkpoint),
``wnn+`` (a WNN+ checkpoint such as the published ``nino_mlp.pt``) and ``nino`` (a NiNo
checkpoint). Checkpoints given explicitly win; otherwise :func:`default_checkpoint` looks for the
one shipped in this project's ``checkpoints/`` and then for the published files in
``../shared/checkpoints/official/``.

``nino@PATH`` (and ``wnn+@PATH``) names a checkpoint inside the method itself, so that one
comparison can hold several checkpoints: the method is then called ``nino@<stem>`` after the
checkpoint's file or folder name (``nino@nino-cpu``, ``nino@nino_no_posw``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .paths import search_roots, shared_dirs

__all__ = ["Method", "METHODS", "resolve_method", "default_checkpoint", "SHIPPED_CHECKPOINT"]

METHODS = ("adam", "linefit", "linefit+", "wnn+", "nino")
"""Method names the benchmarks accept."""

SHIPPED_CHECKPOINT = "nino-cpu-routed"
"""Folder under ``checkpoints/`` holding the NiNo checkpoint trained with this project (if present):
a :class:`nowcast.RegimeRouter` of ``nino-cpu-mixed`` (short regimes) and ``nino-cpu`` (long ones)."""

_OFFICIAL = {"nino": "nino_no_posw.pt", "wnn+": "nino_mlp.pt"}


@dataclass(frozen=True)
class Method:
    """A named way of training: ``predictor`` None means the base optimizer alone; otherwise the
    base optimizer is wrapped by :class:`nowcast.NiNo` with this predictor (anything
    :func:`nowcast.as_nowcaster` accepts). ``checkpoint`` records where a learned predictor came from."""

    name: str
    predictor: Any = None
    checkpoint: str | None = None

    @property
    def nowcasts(self) -> bool:
        return self.predictor is not None


def _candidates(kind: str) -> list[Path]:
    out: list[Path] = []
    if kind == "nino":
        out += [root / "checkpoints" / SHIPPED_CHECKPOINT for root in search_roots()]
    out += shared_dirs("checkpoints", "official", _OFFICIAL[kind])
    return out


def default_checkpoint(kind: str) -> Path | None:
    """The checkpoint used for ``kind`` (``"nino"`` or ``"wnn+"``) when none is given, or None."""
    if kind not in _OFFICIAL:
        raise ValueError(f"no default checkpoint for '{kind}'; kinds: {', '.join(_OFFICIAL)}")
    for path in _candidates(kind):
        if (path / "config.json").is_file() or path.is_file():
            return path
    return None


def _load(kind: str, path: str | os.PathLike | None) -> tuple[Any, str]:
    from .checkpoint import load
    from .predict import NiNoPredictor, WNNPlus
    from .regime_router import RegimeRouter, is_router_checkpoint

    if path is None:
        found = default_checkpoint(kind)
        if found is None:
            looked = ", ".join(str(p) for p in _candidates(kind))
            flag = "--nino-checkpoint" if kind == "nino" else "--wnn-checkpoint"
            raise FileNotFoundError(f"method '{kind}' needs a checkpoint: pass {flag} PATH (looked in {looked})")
        path = found
    if kind == "nino" and is_router_checkpoint(path):
        return RegimeRouter.load(path), str(path)
    model = load(path)
    wrapper = NiNoPredictor if kind == "nino" else WNNPlus
    try:
        return wrapper(model), str(path)
    except ValueError as err:
        raise ValueError(f"{path} cannot serve as '{kind}': {err}") from None


def resolve_method(
    spec: str | Method,
    *,
    nino_checkpoint: str | os.PathLike | None = None,
    wnn_checkpoint: str | os.PathLike | None = None,
) -> Method:
    """A :class:`Method` from its name (see :data:`METHODS`; ``base`` is an alias of ``adam``)."""
    if isinstance(spec, Method):
        return spec
    text = str(spec).strip()
    if "@" in text:
        kind, _, path = text.partition("@")
        kind = kind.strip().lower()
        if kind not in _OFFICIAL or not path.strip():
            raise ValueError(f"'{spec}': only nino@PATH and wnn+@PATH name a checkpoint in the method")
        path = path.strip()
        predictor, where = _load(kind, path)
        return Method(f"{kind}@{Path(path).stem}", predictor, where)
    key = text.lower()
    if key in ("adam", "adamw", "base"):
        return Method("adam")
    if key == "linefit":
        from .baselines import Linefit

        return Method("linefit", Linefit())
    if key in ("linefit+", "linefitplus"):
        from .baselines import LinefitPlus

        return Method("linefit+", LinefitPlus())
    if key in ("wnn+", "wnnplus"):
        predictor, where = _load("wnn+", wnn_checkpoint)
        return Method("wnn+", predictor, where)
    if key == "nino":
        predictor, where = _load("nino", nino_checkpoint)
        return Method("nino", predictor, where)
    raise ValueError(f"unknown method '{spec}'; choose from {', '.join(METHODS)}")
