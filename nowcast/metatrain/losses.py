"""The meta-training loss: the L1 error of a window's predicted scaled changes (:func:`window_loss`),
and the same error for two predictors that need no training (:func:`baseline_losses`)."""

from __future__ import annotations

import torch

from ..model import NiNoModel
from .config import HORIZON_WEIGHTINGS
from .dataset import WindowItem

__all__ = ["baseline_losses", "window_loss"]


def window_loss(model: NiNoModel, item: WindowItem, weighting: str = "window") -> torch.Tensor:
    """L1 error of the predicted scaled changes over the window's unmasked horizons and slots.

    ``weighting="window"``: the mean over the window's horizons (every window weighs the same, so a
    window near the end of its trajectory, with a few horizons left, puts all its weight on short
    ones). ``"target"``: the sum over the window's horizons divided by ``seq_len`` (every
    (window, horizon) target weighs the same; far horizons, which only early windows reach, keep
    their share).
    """
    if weighting not in HORIZON_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(HORIZON_WEIGHTINGS)}; got {weighting!r}")
    horizons = torch.nonzero(item.horizon_mask).flatten()
    if horizons.numel() == 0:
        raise ValueError(f"window {item.window} has no future snapshot")
    out = model(item.data, (horizons + 1).tolist())  # [E, F, K]: last state + predicted change
    e, f = item.slot_mask.shape
    target = item.target.view(e, f, item.seq_len)[:, :, horizons]
    err = (out - item.last.unsqueeze(-1) - target).abs()
    weight = item.slot_mask.unsqueeze(-1).to(err.dtype)
    n_horizons = horizons.numel() if weighting == "window" else item.seq_len
    return (err * weight).sum() / (weight.sum() * n_horizons)


@torch.no_grad()
def baseline_losses(item: WindowItem) -> dict[str, float]:
    """The same loss for two predictors that need no training: ``zero`` (no change) and
    ``linefit`` (least-squares line through the ``ctx`` scaled states, extrapolated)."""
    e, f = item.slot_mask.shape
    ctx = item.data.edge_attr.shape[1] // f
    horizons = torch.nonzero(item.horizon_mask).flatten()
    target = item.target.view(e, f, item.seq_len)[:, :, horizons]
    weight = item.slot_mask.unsqueeze(-1).to(target.dtype)
    count = weight.sum() * horizons.numel()
    y = item.data.edge_attr.view(e, f, ctx)
    t = torch.arange(ctx, dtype=y.dtype)
    tc = t - t.mean()
    slope = (y * tc).sum(-1) / tc.square().sum()
    intercept = y.mean(-1)
    future_t = (ctx - 1) + (horizons + 1).to(y.dtype) - t.mean()
    line = intercept.unsqueeze(-1) + slope.unsqueeze(-1) * future_t - y[:, :, -1:]
    return {
        "zero": float((target.abs() * weight).sum() / count),
        "linefit": float(((line - target).abs() * weight).sum() / count),
    }
