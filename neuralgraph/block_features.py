"""Edge features stored block by block, each block only as wide as its own kernel.

:meth:`NeuralGraph.edge_features` returns one ``[E, max_feat_size * T]`` matrix: every edge is as
wide as the widest kernel in the graph. On a ViT-B/16 the 16x16 patch kernel (256 slots on 2,304
edges) would widen all 86M edges to 256 slots, 88 GB of zeros. :class:`BlockFeatures` keeps each
block at its own width in one flat buffer, so its size is ``(parameters + auxiliary edges) * T``:
memory follows the parameters, whatever the widest kernel. ``graph.edge_features(x, packed=True)``
builds it and ``graph.to_params`` reads it back, exact inverses like the dense layout.

Within a block the layout is the dense one cut to the block's width: row ``e`` of
:meth:`BlockFeatures.block` is edge ``edge_start + e`` and column ``f * T + t`` is feature slot
``f`` of state ``t``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ParameterMismatchError

__all__ = ["BlockFeatures", "pack", "unpack"]


@dataclass(frozen=True, eq=False)
class BlockFeatures:
    """Per-block edge features in one flat buffer (see the module docstring).

    Attributes:
        values: the flat buffer, ``sum(counts[i] * widths[i]) * steps`` elements.
        counts: edges of each block, in graph order.
        widths: feature slots of each block (its kernel size; 1 for auxiliary blocks).
        steps: states per slot (``T``).
    """

    values: torch.Tensor
    counts: tuple[int, ...]
    widths: tuple[int, ...]
    steps: int

    def __post_init__(self) -> None:
        if self.values.ndim != 1 or self.values.numel() != sum(self.sizes):
            raise ParameterMismatchError(
                f"BlockFeatures: a flat buffer of {sum(self.sizes)} values is needed for these blocks, "
                f"got shape {tuple(self.values.shape)}"
            )

    @property
    def sizes(self) -> list[int]:
        """Elements of each block in the buffer."""
        return [c * w * self.steps for c, w in zip(self.counts, self.widths)]

    @property
    def num_edges(self) -> int:
        return sum(self.counts)

    @property
    def nbytes(self) -> int:
        return self.values.numel() * self.values.element_size()

    def blocks(self) -> list[torch.Tensor]:
        """Every block's features as a view ``[edges, width * steps]`` of the buffer."""
        parts = self.values.split(self.sizes)
        return [p.view(c, w * self.steps) for p, c, w in zip(parts, self.counts, self.widths)]

    def block(self, i: int) -> torch.Tensor:
        """Block ``i``'s features ``[edges, width * steps]`` (a view of the buffer)."""
        start = sum(self.sizes[:i])
        return self.values[start : start + self.sizes[i]].view(self.counts[i], self.widths[i] * self.steps)

    def dense(self, max_slots: int | None = None) -> torch.Tensor:
        """The dense ``[E, max_slots * steps]`` matrix (zero-padded slots), as ``edge_features``
        returns it; ``max_slots`` defaults to the widest block."""
        width = max(self.widths, default=1) if max_slots is None else max_slots
        if width < max(self.widths, default=1):
            raise ValueError(f"max_slots={width} is narrower than the widest block ({max(self.widths)} slots)")
        out = self.values.new_zeros(self.num_edges, width * self.steps)
        start = 0
        for rows, count in zip(self.blocks(), self.counts):
            out[start : start + count, : rows.shape[1]] = rows
            start += count
        return out

    def to(self, *args, **kwargs) -> "BlockFeatures":
        """A copy (or self) with the buffer moved or cast, like ``Tensor.to``."""
        return BlockFeatures(self.values.to(*args, **kwargs), self.counts, self.widths, self.steps)

    def __repr__(self) -> str:
        return (
            f"BlockFeatures(blocks={len(self.counts)}, edges={self.num_edges}, steps={self.steps}, "
            f"widths {min(self.widths, default=0)}..{max(self.widths, default=0)}, dtype={self.values.dtype})"
        )


def pack(graph, states: torch.Tensor) -> BlockFeatures:
    """The :class:`BlockFeatures` of contiguous states ``[P, T]`` on ``graph``."""
    steps = states.shape[1]
    counts = tuple(b.num_edges for b in graph.blocks)
    widths = tuple(b.feat_size for b in graph.blocks)
    values = states.new_empty(sum(c * w for c, w in zip(counts, widths)) * steps)
    out = BlockFeatures(values, counts, widths, steps)
    for b, rows in zip(graph.blocks, out.blocks()):
        if b.view is None:
            rows.fill_(b.value)
        else:
            rows.copy_(b.view.read_states(states).reshape(rows.shape))
    return out


def unpack(graph, features: BlockFeatures, state: int | None) -> torch.Tensor:
    """Parameters read out of ``features``: ``[P, T]`` for ``state=None`` and ``T > 1``, else the
    vector ``[P]`` of state ``state`` (default 0)."""
    counts = tuple(b.num_edges for b in graph.blocks)
    widths = tuple(b.feat_size for b in graph.blocks)
    if features.counts != counts or features.widths != widths:
        raise ParameterMismatchError(
            f"these BlockFeatures were built for another graph ({len(features.counts)} blocks, "
            f"{features.num_edges} edges) than this {graph.arch} graph ({len(counts)} blocks, {graph.num_edges} edges)"
        )
    steps = features.steps
    values = features.values
    if state is None and steps > 1:
        out = values.new_empty(graph.num_params, steps)
        for b, rows in zip(graph.blocks, features.blocks()):
            if b.view is not None:
                b.view.write_states(out, rows.reshape(b.view.shape + (steps,)))
        return out
    pick = state or 0
    out = values.new_empty(graph.num_params)
    for b, rows in zip(graph.blocks, features.blocks()):
        if b.view is not None:
            b.view.write(out, rows.view(b.num_edges, b.feat_size, steps)[:, :, pick].reshape(b.view.shape))
    return out
