"""A neural graph in parts, one per layer / transformer block (:func:`layer_parts`), so a
nowcaster can predict one part at a time (``nowcast.predict(..., per_block=True)``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from neuralgraph import NeuralGraph
from neuralgraph import edge_types as et

from .model import NiNoModel

__all__ = ["GraphPart", "context_hops", "layer_parts"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GraphPart:
    """One part of a graph for per-block prediction.

    Attributes:
        graph: the part as a complete :class:`neuralgraph.NeuralGraph`.
        segments: ``(start, stop)`` ranges of the whole graph's flat vector, in the order of the
            part's own flat vector (their concatenation is the part's vector).
        owned: for each segment, whether this part writes it back; the others are read-only
            context (parameters another part owns).
    """

    graph: NeuralGraph
    segments: tuple[tuple[int, int], ...]
    owned: tuple[bool, ...]

    @property
    def num_params(self) -> int:
        return sum(stop - start for start, stop in self.segments)

    def gather(self, states: torch.Tensor) -> torch.Tensor:
        """Rows of ``states`` (``[P]`` or ``[P, T]``) that make up this part's flat vector."""
        return torch.cat([states[start:stop] for start, stop in self.segments])

    def scatter(self, values: torch.Tensor, out: torch.Tensor) -> None:
        """Write the part's vector ``values`` into the whole flat vector ``out`` (owned segments only)."""
        offset = 0
        for (start, stop), owned in zip(self.segments, self.owned):
            n = stop - start
            if owned:
                out[start:stop] = values[offset : offset + n]
            offset += n


def _in_degrees(graph: NeuralGraph) -> torch.Tensor:
    """``[N]`` incoming edges per node (self-loops excluded), counted from the blocks."""
    degree = torch.zeros(graph.num_nodes, dtype=torch.long)
    for b in graph.blocks:
        if b.edge_type != et.SELF_LOOP:
            degree[b.dst.start : b.dst.stop] += b.src.size if b.kind == "dense" else 1
    return degree


def _node_map(graph: NeuralGraph, sub: NeuralGraph) -> torch.Tensor:
    """``[N_sub]`` whole-graph id of every node of a subgraph (its groups are whole groups)."""
    pieces = [torch.arange(graph.group(g.name).start, graph.group(g.name).stop) for g in sub.groups]
    return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)


def _block_names(block) -> set[str]:
    return {p.name for p in block.view.parts} if block.view is not None else set()


def _context_subgraph(graph: NeuralGraph, own: list[str], hops: int, degree: torch.Tensor) -> NeuralGraph:
    """The subgraph of ``own`` parameters plus every edge that can influence their outputs.

    Messages flow from source to target, and an edge's output depends on its endpoints' states
    after ``hops`` node updates; those depend on all edges entering the endpoints, the edges
    entering those edges' sources, ... ``hops`` levels deep. The subgraph holds all of them, so
    the model sees exactly what it sees in the whole graph (checked by comparing in-degrees).
    """
    blocks = [b for b in graph.blocks if b.edge_type != et.SELF_LOOP]
    wanted = set(own)
    reached = torch.zeros(graph.num_nodes, dtype=torch.bool)
    for b in blocks:
        if _block_names(b) & wanted:
            reached[b.src.start : b.src.stop] = True
            reached[b.dst.start : b.dst.stop] = True
    needed = torch.zeros_like(reached)  # nodes whose incoming edges must all be present
    frontier = reached.clone()
    for _ in range(hops):
        needed |= frontier
        nxt = torch.zeros_like(frontier)
        for b in blocks:
            if bool(frontier[b.dst.start : b.dst.stop].any()):
                wanted |= _block_names(b)
                nxt[b.src.start : b.src.stop] = True
        frontier = nxt & ~needed
    order = {name: i for i, name in enumerate(graph.param_names)}
    if not bool(needed.any()):
        return graph.subgraph(sorted(wanted, key=order.__getitem__))
    for _ in range(8):
        sub = graph.subgraph(sorted(wanted, key=order.__getitem__))
        ids = _node_map(graph, sub)
        inside = torch.zeros_like(needed)
        inside[ids] = True
        short = needed & ~inside
        sub_degree = torch.zeros(graph.num_nodes, dtype=torch.long)
        sub_degree[ids] = _in_degrees(sub)
        short |= needed & inside & (sub_degree != degree)
        if not bool(short.any()):
            return sub
        # an auxiliary block into these nodes comes from a group the subgraph does not hold yet:
        # add the parameters touching that group so that the group (and the block) come along
        grown = set(wanted)
        for b in blocks:
            if b.view is None and bool(short[b.dst.start : b.dst.stop].any()):
                for c in blocks:
                    if c.view is not None and b.src.group in (c.src.group, c.dst.group):
                        grown |= _block_names(c)
        if grown == wanted:
            break
        wanted = grown
    log.debug("per-block context for %s falls back to the whole graph", own[:3])
    return graph.subgraph(graph.param_names)


def layer_parts(graph: NeuralGraph, *, context_hops: int = 0) -> list[GraphPart]:
    """The parts of ``graph.layers()`` (one per transformer block / layer, then the rest) with
    the positions of their parameters in the whole flat vector.

    Args:
        graph: the whole graph.
        context_hops: how many node updates of a graph network feed its edge outputs
            (``NiNoConfig.num_edge_updates``; 0 for element-wise predictors). With ``h > 0`` each
            part also holds, as read-only context, every edge entering its nodes and the nodes
            ``h - 1`` levels further upstream, and its nodes keep the whole graph's positional
            encodings: a graph network then computes, for the part's own parameters, what it
            computes on the whole graph (up to float rounding). A transformer block's context is
            about the previous block.

    Every parameter is written back by exactly one part (the part ``graph.layers()`` puts it in).
    """
    if isinstance(context_hops, bool) or not isinstance(context_hops, int) or context_hops < 0:
        raise ValueError(f"context_hops must be a non-negative integer, got {context_hops!r}")
    where = graph.param_slices()
    layers = graph.layers()
    degree = _in_degrees(graph) if context_hops else None
    pos = graph.pos if context_hops else None
    parts: list[GraphPart] = []
    written: set[str] = set()
    for layer in layers:
        own = [name for name in layer.param_names if name not in written]
        if context_hops:
            sub = _context_subgraph(graph, own, context_hops, degree)
            if pos is not None:
                # cached_property: the part's nodes keep their encodings from the whole graph
                sub.__dict__["pos"] = pos[_node_map(graph, sub)]
        else:
            sub = layer
        mine = set(own)
        segments = tuple((where[name].start, where[name].stop) for name in sub.param_names)
        owned = tuple(name in mine for name in sub.param_names)
        written |= mine
        parts.append(GraphPart(sub, segments, owned))
    missing = set(graph.param_names) - written
    if missing:  # layer_subgraphs partitions the parameters; this guards the contract
        raise RuntimeError(f"graph.layers() does not cover parameters {sorted(missing)[:5]}")
    log.debug(
        "per-block prediction: %d parts, %s parameters (owned / with context)",
        len(parts),
        [(sum(stop - start for (start, stop), o in zip(p.segments, p.owned) if o), p.num_params) for p in parts],
    )
    return parts


def context_hops(predictor: Any) -> int:
    """Upstream levels a predictor's outputs depend on (0 for element-wise predictors)."""
    if isinstance(predictor, NiNoModel):
        return predictor.config.num_edge_updates
    return int(getattr(predictor, "context_hops", 0))
