"""The settings of a meta-training run (:class:`MetaTrainConfig`) and its learning-rate schedule (:func:`lr_at`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..model.config import RETIRED_METATRAIN_OFF, NiNoConfig, without_retired

__all__ = ["HORIZON_WEIGHTINGS", "SELECTION_METRICS", "MetaTrainConfig", "lr_at"]

HORIZON_WEIGHTINGS = ("window", "target")
SELECTION_METRICS = ("val_loss", "val_jump")


@dataclass(frozen=True)
class MetaTrainConfig:
    """Model size and optimisation recipe of a meta-training run.

    Model (a :class:`nowcast.NiNoConfig` with ``gnn=True``, ``wte_pos_enc=False``): ``hid``,
    ``layers``, ``lpe``, ``ctx``, ``seq_len``, ``max_feat_size``.

    Optimisation: ``steps`` updates of ``batch`` windows each; AdamW with ``lr``, ``wd`` and
    betas ``(beta1, beta2)``; ``warmup`` steps of linear warm-up, then cosine decay to
    ``lr * min_lr_ratio``; gradient norm clipped at ``clip``; ``horizon_weighting`` says how a
    window's horizons are averaged (:func:`nowcast.metatrain.window_loss`); ``seed`` sets the initialisation and the
    window order.

    Bookkeeping: a checkpoint every ``checkpoint_every`` steps, an evaluation of the loss on
    ``eval_windows`` fixed training windows every ``eval_every`` steps (compared with the
    zero-change and Linefit predictions) and, when :func:`nowcast.metatrain.metatrain` gets a validation set of
    other trajectories, on ``val_windows`` fixed windows of those and, as
    :class:`nowcast.metatrain.jump_error.JumpScore`, on the jumps the optimizer wrapper would make along
    them; ``select`` names the one whose lowest value selects the exported weights
    (``val_loss`` or ``val_jump``); a log line every ``log_every`` steps. NaN handling:
    ``max_bad_steps`` consecutive skipped batches trigger a rollback with the learning rate
    multiplied by ``lr_backoff``.

    The defaults fit a 2-core CPU: at hid 64 one window's forward + backward over all 40
    horizons costs about 20 ms of CPU time on the FM/16 graph (2k edges) and 190-220 ms on the
    Shakespeare GPT graphs (27-33k edges); hid 128 costs 2.5-3x more (``docs/metatraining.md``).
    """

    hid: int = 64
    layers: int = 3
    lpe: int = 8
    ctx: int = 5
    seq_len: int = 40
    max_feat_size: int = 9
    steps: int = 8000
    batch: int = 4
    lr: float = 3e-3
    wd: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.999
    warmup: int = 200
    min_lr_ratio: float = 0.01
    clip: float = 1.0
    horizon_weighting: str = "window"
    seed: int = 0
    checkpoint_every: int = 250
    eval_every: int = 500
    eval_windows: int = 32
    val_windows: int = 64
    select: str = "val_loss"
    log_every: int = 50
    max_bad_steps: int = 3
    lr_backoff: float = 0.5

    def __post_init__(self) -> None:
        for name in ("hid", "layers", "ctx", "seq_len", "max_feat_size", "steps", "batch", "checkpoint_every", "eval_every", "log_every", "max_bad_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MetaTrainConfig.{name} must be a positive integer, got {value!r}")
        for name in ("lpe", "warmup", "seed", "eval_windows", "val_windows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"MetaTrainConfig.{name} must be a non-negative integer, got {value!r}")
        if self.select not in SELECTION_METRICS:
            raise ValueError(f"MetaTrainConfig.select must be one of {', '.join(SELECTION_METRICS)}, got {self.select!r}")
        if self.horizon_weighting not in HORIZON_WEIGHTINGS:
            raise ValueError(f"MetaTrainConfig.horizon_weighting must be one of {', '.join(HORIZON_WEIGHTINGS)}, got {self.horizon_weighting!r}")
        if not (self.lr > 0 and self.clip > 0 and 0 < self.lr_backoff < 1 and 0 <= self.min_lr_ratio <= 1 and self.wd >= 0):
            raise ValueError("MetaTrainConfig: need lr > 0, clip > 0, 0 < lr_backoff < 1, 0 <= min_lr_ratio <= 1, wd >= 0")

    def nino_config(self) -> NiNoConfig:
        """The architecture of the model being trained."""
        return NiNoConfig(
            ctx=self.ctx, hid=self.hid, layers=self.layers, gnn=True, max_feat_size=self.max_feat_size,
            seq_len=self.seq_len, lpe=self.lpe, wte_pos_enc=False,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> MetaTrainConfig:
        """Inverse of :meth:`to_dict` (settings of a retired experiment left at "off" are dropped)."""
        values = without_retired(values, RETIRED_METATRAIN_OFF)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown MetaTrainConfig fields: {', '.join(unknown)}")
        return cls(**dict(values))

    def replace(self, **changes: Any) -> MetaTrainConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def lr_at(step: int, config: MetaTrainConfig) -> float:
    """Learning-rate factor (times ``config.lr``) for the update after ``step`` completed steps:
    linear warm-up over ``warmup`` steps, then cosine decay to ``min_lr_ratio`` at ``steps``."""
    if config.warmup and step < config.warmup:
        return (step + 1) / config.warmup
    span = max(1, config.steps - config.warmup)
    progress = min(1.0, (step - config.warmup) / span)
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
