"""Parts of a neural graph as graphs of their own: one transformer block at a time.

Large models are processed block by block (nowcasting, LPE, exports) without materializing the
whole edge index. :func:`subgraph` keeps the edge blocks of some parameters — plus the auxiliary
blocks (residual, head membership) among the nodes they touch — renumbers nodes, edges and
parameters compactly, and returns a complete :class:`NeuralGraph` whose flat parameter vector
holds just those parameters, in the original order.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import replace
from typing import TYPE_CHECKING

from . import edge_types as et
from .blocks import DIAGONAL, EdgeBlock
from .groups import NodeGroup, NodeRange
from .params import ParamSpec, ParamView, StackedView

if TYPE_CHECKING:  # pragma: no cover
    from .graph import NeuralGraph

__all__ = ["subgraph", "layer_subgraphs", "LAYER_PATTERN"]

LAYER_PATTERN = r"(?:^|\.)(?:h|layers|layer|blocks|encoder_layer_)\.?(\d+)\."
"""Matches the layer index in names such as ``transformer.h.3.attn`` or ``model.layers.3.mlp``."""


def _move(view, offsets: dict[str, int]):
    if isinstance(view, StackedView):
        return StackedView(tuple(_move(p, offsets) for p in view.parts))
    return ParamView(view.name, view.offset + offsets[view.name], view.shape, view.strides)


def subgraph(graph: NeuralGraph, param_names: Collection[str], *, lpe: int | None = None) -> NeuralGraph:
    """The graph of the parameters ``param_names`` (every block that carries any of them)."""
    wanted = set(param_names)
    unknown = wanted - set(graph.param_names)
    if unknown:
        raise KeyError(f"no parameters {sorted(unknown)[:3]} in this {graph.arch} graph")
    blocks = [b for b in graph.blocks if b.view is not None and any(p.name in wanted for p in b.view.parts)]
    names = {p.name for b in blocks for p in b.view.parts}
    touched = {r.group for b in blocks for r in (b.src, b.dst)}
    # groups without any parameter edge (head nodes) come along with the auxiliary edges reaching them
    with_params = {r.group for b in graph.blocks if b.view is not None for r in (b.src, b.dst)}
    aux = [b for b in graph.blocks if b.view is None and b.edge_type != et.SELF_LOOP]
    for b in aux:
        ends = {b.src.group, b.dst.group}
        if ends & touched and not (ends - touched) & with_params:
            touched |= ends
    blocks_aux = [b for b in aux if b.src.group in touched and b.dst.group in touched]
    keep = set(map(id, blocks + blocks_aux))
    groups, starts, start = [], {}, 0
    for g in graph.groups:
        if g.name in touched:
            starts[g.name] = start
            groups.append(NodeGroup(g.name, start, g.size, g.role, g.tokens))
            start += g.size
    specs, offsets, offset = [], {}, 0
    for p in graph.params:
        if p.name in names:
            specs.append(ParamSpec(p.name, p.shape, offset))
            offsets[p.name] = offset - p.offset
            offset += p.numel
    out, edge = [], 0
    for b in graph.blocks:
        if id(b) not in keep:
            continue
        src = NodeRange(b.src.group, starts[b.src.group], b.src.lo, b.src.size)
        dst = NodeRange(b.dst.group, starts[b.dst.group], b.dst.lo, b.dst.size)
        view = _move(b.view, offsets) if b.view is not None else None
        out.append(replace(b, src=src, dst=dst, view=view, edge_start=edge))
        edge += out[-1].num_edges
    everything = NodeRange("*", 0, 0, start)
    out.append(EdgeBlock("self_loops", DIAGONAL, everything, everything, et.SELF_LOOP, edge, None,
                         et.AUXILIARY_VALUES[et.SELF_LOOP]))
    symmetries = tuple(s for s in graph.symmetries if set(s.groups) <= touched)
    buffers = tuple(u for u in graph.buffers if u.group in touched)
    return type(graph)(tuple(groups), tuple(out), tuple(specs), symmetries, buffers, graph.arch,
                       graph.lpe if lpe is None else lpe, dict(graph.meta))


def layer_subgraphs(graph: NeuralGraph, pattern: str = LAYER_PATTERN, *, lpe: int | None = None) -> list[NeuralGraph]:
    """One subgraph per layer index found by ``pattern`` in parameter names, in order, then one
    for the parameters outside any layer (embeddings, final norm, heads) if there are any."""
    layers: dict[int, list[str]] = {}
    rest: list[str] = []
    for name in graph.param_names:
        m = re.search(pattern, name)
        (layers.setdefault(int(m.group(1)), []) if m else rest).append(name)
    parts = [subgraph(graph, layers[i], lpe=lpe) for i in sorted(layers)]
    if rest:
        parts.append(subgraph(graph, rest, lpe=lpe))
    return parts
