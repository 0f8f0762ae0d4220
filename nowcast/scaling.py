"""Layer-wise scaling of parameter histories before NiNo sees them, and its inverse.

Each parameter tensor is scaled by the mean and unbiased standard deviation of *all* its elements
over *all* ``ctx`` states (``docs/design.md``, "NiNo"): ``(x - mean) / (std + eps)``; predictions are
mapped back with ``x * std + mean`` (no eps). Rows of the history follow the flat parameter vector
(``neuralgraph.flatten_params`` order), so parameter tensor ``i`` occupies ``sizes[i]``
consecutive rows. Statistics are computed with segment reductions (one pass over the history,
accumulated in float64), not with a Python loop over tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["DEFAULT_EPS", "LayerScales", "param_sizes", "scale_states", "unscale"]

DEFAULT_EPS = 1e-6


@dataclass(frozen=True)
class LayerScales:
    """Per-tensor statistics of one history.

    Attributes:
        mean: ``[T]`` mean of each parameter tensor (dtype of the history).
        std: ``[T]`` unbiased standard deviation of each tensor (0 where it has one value).
        sizes: ``[T]`` int64 number of elements of each tensor.
    """

    mean: torch.Tensor
    std: torch.Tensor
    sizes: torch.Tensor

    @property
    def num_params(self) -> int:
        return int(self.sizes.sum())

    def per_row(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` expanded to one value per parameter element: two ``[P]`` tensors."""
        sizes = self.sizes.to(self.mean.device)
        return self.mean.repeat_interleave(sizes), self.std.repeat_interleave(sizes)

    def as_table(self) -> torch.Tensor:
        """``[T, 2]`` table of (mean, std) rows."""
        return torch.stack([self.mean, self.std], dim=1)


def param_sizes(params: Sequence[Any]) -> torch.Tensor:
    """Element counts ``[T]`` (int64) from ints, tensors/shapes, or objects with ``numel``
    (such as ``neuralgraph.ParamSpec`` from ``graph.params``)."""
    sizes: list[int] = []
    for p in params:
        if isinstance(p, torch.Tensor):
            sizes.append(p.numel())
        elif isinstance(p, torch.Size):
            sizes.append(p.numel())
        elif hasattr(p, "numel"):
            numel = p.numel
            sizes.append(int(numel() if callable(numel) else numel))
        else:
            sizes.append(int(p))
    return torch.tensor(sizes, dtype=torch.long)


def _check_sizes(sizes: Sequence[Any] | torch.Tensor, rows: int) -> torch.Tensor:
    if isinstance(sizes, torch.Tensor) and not sizes.is_floating_point() and sizes.ndim == 1:
        sizes = sizes.to(torch.long).cpu()
    else:
        sizes = param_sizes(sizes)
    if sizes.numel() == 0 or bool((sizes <= 0).any()):
        raise ValueError("parameter sizes must be a non-empty list of positive element counts")
    total = int(sizes.sum())
    if total != rows:
        raise ValueError(f"parameter sizes add up to {total} elements but the history has {rows} rows")
    return sizes


def scale_states(
    states: torch.Tensor,
    sizes: Sequence[Any] | torch.Tensor,
    eps: float = DEFAULT_EPS,
) -> tuple[torch.Tensor, LayerScales]:
    """Scale a parameter history per tensor.

    Args:
        states: ``[P, ctx]`` history (column ``t`` = state ``t``) or a single state ``[P]``.
        sizes: element count of every parameter tensor, in flat-vector order (ints, or
            ``graph.params`` / tensors, see :func:`param_sizes`); they must add up to ``P``.
        eps: added to the standard deviation before dividing.

    Returns:
        ``(scaled, scales)``: scaled history of the same shape and dtype, and the statistics.
    """
    if not isinstance(states, torch.Tensor) or states.ndim not in (1, 2) or not states.is_floating_point():
        raise ValueError("states must be a floating-point tensor [P] or [P, ctx]")
    history = states if states.ndim == 2 else states.unsqueeze(1)
    rows, steps = history.shape
    sizes = _check_sizes(sizes, rows)
    device = history.device
    segment = torch.repeat_interleave(torch.arange(sizes.numel(), device=device), sizes.to(device))
    counts = (sizes.to(device) * steps).to(torch.float64)

    sums = torch.zeros(sizes.numel(), dtype=torch.float64, device=device)
    sums.index_add_(0, segment, history.sum(dim=1, dtype=torch.float64))
    mean64 = sums / counts
    row_mean = mean64.to(history.dtype).repeat_interleave(sizes.to(device))
    squares = torch.zeros_like(sums)
    centered = (history - row_mean.unsqueeze(1)).square().sum(dim=1, dtype=torch.float64)
    squares.index_add_(0, segment, centered)
    std64 = torch.where(counts > 1, (squares / (counts - 1).clamp(min=1)).sqrt(), torch.zeros_like(squares))

    scales = LayerScales(mean=mean64.to(states.dtype), std=std64.to(states.dtype), sizes=sizes)
    mean_rows, std_rows = scales.per_row()
    scaled = (history - mean_rows.unsqueeze(1)) / (std_rows.unsqueeze(1) + eps)
    return (scaled if states.ndim == 2 else scaled.squeeze(1)), scales


def unscale(x: torch.Tensor, scales: LayerScales) -> torch.Tensor:
    """Map scaled values back: ``x * std + mean`` per tensor (no eps).

    Args:
        x: ``[P]`` or ``[P, K]`` scaled values in flat-vector order.
        scales: the statistics returned by :func:`scale_states`.
    """
    if not isinstance(x, torch.Tensor) or x.ndim not in (1, 2) or x.shape[0] != scales.num_params:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected [{scales.num_params}] or [{scales.num_params}, K] scaled values, got {shape}")
    mean_rows, std_rows = scales.per_row()
    mean_rows, std_rows = mean_rows.to(x.device, x.dtype), std_rows.to(x.device, x.dtype)
    if x.ndim == 2:
        mean_rows, std_rows = mean_rows.unsqueeze(1), std_rows.unsqueeze(1)
    return x * std_rows + mean_rows
