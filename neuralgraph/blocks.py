"""Edge blocks: one parameter tensor (or one auxiliary connection) laid between node ranges.

Three kinds (``docs/design.md``, "Graph semantics"):

* ``dense`` — every source node to every target node (Linear, Conv, embeddings). Edges are
  ordered source-major: edge ``s * n_dst + d`` joins source ``s`` and target ``d``.
* ``star`` — one source node (a bias node) to every target node; edge ``d`` reaches target ``d``.
* ``diagonal`` — source ``i`` to target ``i`` (residual connections, self-loops).

A parameter block holds a :class:`~neuralgraph.params.ParamView` whose shape lists its edges in
that order followed by one feature axis of size ``feat_size`` (the flattened conv kernel, else 1):
``(n_src, n_dst, K)`` for dense blocks and ``(n, K)`` for star and diagonal ones. An auxiliary
block carries the same fixed ``value`` on every edge.

A kernel wider than a consumer reads (NiNo reads 9 slots) can be split over several blocks of
parallel edges (:func:`neuralgraph.kernel_split.split_kernels`): each part carries consecutive
slots of the kernel, and ``slot_offset`` says where its slots start (0 for the first part and for
every block that was never split).
"""

from __future__ import annotations

from dataclasses import dataclass

from .groups import NodeRange
from .params import ParamView

__all__ = ["EdgeBlock", "DENSE", "STAR", "DIAGONAL", "KINDS"]

DENSE = "dense"
STAR = "star"
DIAGONAL = "diagonal"
KINDS = (DENSE, STAR, DIAGONAL)


@dataclass(frozen=True)
class EdgeBlock:
    """One block of edges. ``edge_start`` is the id of its first edge in the graph."""

    name: str
    kind: str
    src: NodeRange
    dst: NodeRange
    edge_type: int
    edge_start: int
    view: ParamView | None = None
    value: float = 0.0
    slot_offset: int = 0

    @property
    def is_param(self) -> bool:
        return self.view is not None

    @property
    def num_edges(self) -> int:
        if self.kind == DENSE:
            return self.src.size * self.dst.size
        return self.dst.size

    @property
    def edge_stop(self) -> int:
        return self.edge_start + self.num_edges

    @property
    def feat_size(self) -> int:
        """Feature slots this block fills (kernel size for conv blocks, else 1)."""
        return self.view.shape[-1] if self.view is not None else 1

    def describe(self) -> str:
        what = self.view.name if self.view is not None else f"auxiliary value {self.value:g}"
        if self.slot_offset:
            what += f", kernel slots from {self.slot_offset}"
        return f"{self.kind} block '{self.name}' {self.src} -> {self.dst} ({what})"
