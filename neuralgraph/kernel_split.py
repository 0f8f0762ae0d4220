"""Split kernels wider than a consumer reads over several blocks of parallel edges.

A NiNo model reads at most ``max_feat_size`` feature slots per edge (9 for the published
checkpoints, trained on 3x3 kernels). A 16x16 patch embedding (256 slots) or a 7x7 stem (49) is
wider. :func:`split_kernels` turns such a block into ``ceil(K / max_slots)`` blocks between the
same node ranges, each carrying consecutive slots of the kernel (``EdgeBlock.slot_offset`` says
where a part starts), so every edge of the new graph is at most ``max_slots`` wide.

Nothing else changes: the node groups, symmetries, parameters and positional encodings are those
of the original graph (the later parts repeat a connection the Laplacian already has, see
:meth:`NeuralGraph.connections`), and ``to_params`` of the split graph reads every parameter
element from exactly one edge slot, so ``split.to_params(split.edge_features(x)) == x``.
"""

from __future__ import annotations

from dataclasses import replace

from .blocks import EdgeBlock
from .params import ParamView, StackedView

__all__ = ["split_kernels", "slot_slice"]


def slot_slice(view: ParamView | StackedView, start: int, stop: int) -> ParamView | StackedView:
    """Feature slots ``start:stop`` (the last axis) of a block's parameter view."""
    if isinstance(view, ParamView):
        return view[(slice(None),) * (view.ndim - 1) + (slice(start, stop),)]
    parts, offset = [], 0
    for part in view.parts:
        width = part.shape[-1]
        lo, hi = max(start, offset), min(stop, offset + width)
        if lo < hi:
            parts.append(slot_slice(part, lo - offset, hi - offset))
        offset += width
    return parts[0] if len(parts) == 1 else StackedView(tuple(parts))


def _parts(block: EdgeBlock, max_slots: int, edge: int) -> list[EdgeBlock]:
    """``block`` (renumbered to start at edge ``edge``), cut into parts of at most ``max_slots``."""
    width = block.feat_size
    if block.view is None or width <= max_slots:
        return [replace(block, edge_start=edge)]
    out = []
    for k, lo in enumerate(range(0, width, max_slots)):
        view = slot_slice(block.view, lo, min(width, lo + max_slots))
        name = block.name if k == 0 else f"{block.name}[slots {lo}:{lo + view.shape[-1]}]"
        out.append(replace(block, name=name, view=view, edge_start=edge, slot_offset=block.slot_offset + lo))
        edge += block.num_edges
    return out


def split_kernels(graph, max_slots: int):
    """``graph`` with every edge at most ``max_slots`` feature slots wide (``graph`` itself when
    none is wider). See the module docstring."""
    if isinstance(max_slots, bool) or not isinstance(max_slots, int) or max_slots < 1:
        raise ValueError(f"max_slots must be a positive integer (feature slots per edge), got {max_slots!r}")
    if graph.max_feat_size <= max_slots:
        return graph
    blocks: list[EdgeBlock] = []
    edge = 0
    for block in graph.blocks:
        parts = _parts(block, max_slots, edge)
        blocks.extend(parts)
        edge = parts[-1].edge_stop
    meta = {**graph.meta, "split_kernels": max_slots}
    out = type(graph)(graph.groups, tuple(blocks), graph.params, graph.symmetries, graph.buffers, graph.arch,
                      graph.lpe, meta)
    if "pos" in graph.__dict__:  # same connections: reuse the encodings already computed
        out.__dict__["pos"] = graph.pos
    return out
