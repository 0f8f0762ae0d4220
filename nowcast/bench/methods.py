"""Training methods by name: the base optimizer alone, or wrapped by a nowcaster.

``adam`` (the task's base optimizer, Adam or AdamW), ``linefit``, ``linefit+`` (no checkpoint),
``wnn+`` (a WNN+ checkpoint such as the published ``nino_mlp.pt``) and ``nino`` (a NiNo
checkpoint). Checkpoints given explicitly win; otherwise :func:`default_checkpoint` looks for the
one shipped in this project's ``checkpoints/`` and then for the published files in
``../shared/checkpoints/official/``. The names are read by :func:`nowcast.nowcasters.resolver.resolve_spec`, the
one place with the rules for predictors and checkpoints.

``nino@PATH`` (and ``wnn+@PATH``) names a checkpoint inside the method itself, so that one
comparison can hold several checkpoints: the method is then called ``nino@<stem>`` after the
checkpoint's file or folder name (``nino@nino-cpu``, ``nino@nino_no_posw``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..nowcasters.resolver import METHODS, SHIPPED_CHECKPOINT, default_checkpoint, resolve_spec

__all__ = ["Method", "METHODS", "resolve_method", "default_checkpoint", "SHIPPED_CHECKPOINT"]


@dataclass(frozen=True)
class Method:
    """A named way of training: ``predictor`` None means the base optimizer alone; otherwise the
    base optimizer is wrapped by :class:`nowcast.NiNo` with this predictor (anything
    :func:`nowcast.resolve` accepts). ``checkpoint`` records where a learned predictor came from."""

    name: str
    predictor: Any = None
    checkpoint: str | None = None

    @property
    def nowcasts(self) -> bool:
        return self.predictor is not None


def resolve_method(
    spec: str | Method,
    *,
    nino_checkpoint: str | os.PathLike | None = None,
    wnn_checkpoint: str | os.PathLike | None = None,
) -> Method:
    """A :class:`Method` from its name (see :data:`METHODS`; ``base`` is an alias of ``adam``),
    ``nino@PATH`` / ``wnn+@PATH``, or anything else :func:`nowcast.resolve` accepts; the rules are
    :func:`nowcast.nowcasters.resolver.resolve_spec`'s."""
    if isinstance(spec, Method):
        return spec
    name, predictor, checkpoint = resolve_spec(spec, nino_checkpoint=nino_checkpoint, wnn_checkpoint=wnn_checkpoint)
    return Method(name, predictor, checkpoint)
