"""Sorted unique rows of small integer tables, fast.

``torch.unique(dim=0)`` sorts rows one column at a time and takes minutes on the tens of millions
of (neuron, neuron) pairs a tied embedding produces. Rows of non-negative-after-shift integers
are packed into one int64 key per row instead (mixed radix), which ``torch.unique`` sorts in
one pass; the rows come back in the same lexicographic order.
"""

from __future__ import annotations

import torch

__all__ = ["unique_rows", "unique_pairs"]

def unique_rows(rows: torch.Tensor) -> torch.Tensor:
    """``rows.unique(dim=0)`` for a 2-d integer tensor."""
    if rows.ndim != 2 or rows.numel() == 0 or rows.dtype.is_floating_point:
        return rows.unique(dim=0) if rows.numel() else rows
    if rows.shape[0] == 1:
        return rows
    lo = rows.min(0).values
    span = rows.max(0).values - lo + 1
    if float(torch.log2(span.double()).sum()) >= 62:  # too wide to pack: the general (slow) path
        return rows.unique(dim=0)
    shifted = rows - lo
    key = shifted[:, 0].clone()
    for c in range(1, rows.shape[1]):
        key.mul_(span[c]).add_(shifted[:, c])
    key = torch.unique(key)
    out = torch.empty(key.numel(), rows.shape[1], dtype=rows.dtype)
    for c in range(rows.shape[1] - 1, -1, -1):
        out[:, c] = key % span[c] + lo[c]
        key = torch.div(key, span[c], rounding_mode="floor")
    return out


def unique_pairs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The distinct ``(a[i], b[i])`` as rows, sorted."""
    return unique_rows(torch.stack([a.reshape(-1), b.reshape(-1)], 1))
