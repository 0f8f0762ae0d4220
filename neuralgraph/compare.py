"""Comparing two neural graphs of the same model: the same graph, with every parameter on
corresponding edges, and how large each one's declared symmetry group is.

:func:`compare_graphs` anchors the comparison on the parameters: every parameter element sits on
one edge in each graph, so the two edges' endpoints must correspond. That gives a node map, which
must be one-to-one, keep edge types and feature slots, and extend (through the auxiliary edges:
heads, residuals) to an isomorphism that carries every auxiliary edge onto one of the same type
and value. The traced converter is checked against every hand-written converter this way, and
``convert`` uses it to confirm a ``sequential`` reading of a model.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from . import edge_types as et
from .blocks import DENSE, STAR
from .graph import NeuralGraph
from .params import ParamView
from .trace.rows import unique_pairs

__all__ = ["compare_graphs", "Comparison", "symmetry_order"]


@dataclass
class Comparison:
    """Outcome of :func:`compare_graphs`; truthy when the graphs correspond."""

    equal: bool
    reason: str = ""
    node_map: dict[int, int] = field(default_factory=dict, repr=False)

    def __bool__(self) -> bool:
        return self.equal


def _param_edges(g: NeuralGraph) -> torch.Tensor:
    """``[P, 4]``: for every flat parameter element, (source node, target node, edge type, slot)."""
    out = torch.full((g.num_params, 4), -1, dtype=torch.long)
    flat = torch.arange(g.num_params, dtype=torch.float64)
    for b in g.blocks:
        if b.view is None:
            continue
        elems = b.view.read(flat).round().long()  # (edges..., K)
        k = elems.shape[-1]
        elems = elems.reshape(-1, k)
        n = elems.shape[0]
        if b.kind == DENSE:
            nd = b.dst.size
            src = b.src.start + torch.arange(n) // nd
            dst = b.dst.start + torch.arange(n) % nd
        elif b.kind == STAR:
            src = torch.full((n,), b.src.start)
            dst = b.dst.start + torch.arange(n)
        else:
            src = b.src.start + torch.arange(n)
            dst = b.dst.start + torch.arange(n)
        rows = torch.stack([src.repeat_interleave(k), dst.repeat_interleave(k), torch.full((n * k,), b.edge_type),
                            torch.arange(k).repeat(n)], 1)
        out[elems.reshape(-1)] = rows
    return out


def _name_at(g: NeuralGraph, i: int) -> str:
    for p in g.params:
        if p.offset <= i < p.offset + p.numel:
            return p.name
    return f"<offset {i}>"


def _window(blk) -> tuple | None:
    v = blk.view
    if not isinstance(v, ParamView):
        return None
    return (v.offset, tuple(v.shape), tuple(v.strides), blk.kind, blk.edge_type)


def _same_windows(a: NeuralGraph, b: NeuralGraph) -> torch.Tensor | None:
    """Node pairs ``[n, 2]`` when every parameter block of ``a`` holds exactly the window of the
    flat vector that one block of ``b`` holds (same shape, strides, kind and edge type): then
    corresponding nodes follow from the blocks' node ranges, without visiting each element (a
    full-size model compares in milliseconds). None where any block differs."""
    blocks_a = [x for x in a.blocks if x.view is not None]
    blocks_b = {}
    for y in b.blocks:
        if y.view is not None:
            w = _window(y)
            if w is None or w in blocks_b:
                return None
            blocks_b[w] = y
    if len(blocks_a) != len(blocks_b):
        return None
    src, dst = [], []
    for x in blocks_a:
        w = _window(x)
        y = blocks_b.get(w) if w is not None else None
        if y is None or x.src.size != y.src.size or x.dst.size != y.dst.size:
            return None
        src += [torch.arange(x.src.start, x.src.stop), torch.arange(x.dst.start, x.dst.stop)]
        dst += [torch.arange(y.src.start, y.src.stop), torch.arange(y.dst.start, y.dst.stop)]
    if not src:
        return None
    return unique_pairs(torch.cat(src), torch.cat(dst))


def _aux_edges(g: NeuralGraph) -> list[tuple[int, int, int, float]]:
    edges = []
    for b in g.blocks:
        if b.view is not None or b.edge_type == et.SELF_LOOP:
            continue
        src, dst = g.edge_index[:, b.edge_start : b.edge_stop].tolist()
        edges += [(s, d, b.edge_type, b.value) for s, d in zip(src, dst)]
    return edges


def _adjacency(edges) -> dict[int, list]:
    adj = defaultdict(list)
    for s, d, t, v in edges:
        adj[s].append(("out", d, t, v))
        adj[d].append(("in", s, t, v))
    return adj


def compare_graphs(a: NeuralGraph, b: NeuralGraph) -> Comparison:
    """Whether ``a`` and ``b`` are one graph with each parameter element on corresponding edges."""
    if [(p.name, p.shape) for p in a.params] != [(p.name, p.shape) for p in b.params]:
        return Comparison(False, "the graphs were built for different parameters")
    if a.num_nodes != b.num_nodes:
        return Comparison(False, f"{a.num_nodes} nodes against {b.num_nodes}")
    if a.num_edges != b.num_edges:
        return Comparison(False, f"{a.num_edges} edges against {b.num_edges}")
    pairs = _same_windows(a, b)
    if pairs is None:  # element by element
        ea, eb = _param_edges(a), _param_edges(b)
        kind = (ea[:, 2:] != eb[:, 2:]).any(1)
        if bool(kind.any()):
            i = int(torch.nonzero(kind)[0])
            return Comparison(False, f"parameter '{_name_at(a, i)}': an element is on a {et.name(int(ea[i, 2]))} edge "
                                     f"(slot {int(ea[i, 3])}) in one graph and a {et.name(int(eb[i, 2]))} edge (slot "
                                     f"{int(eb[i, 3])}) in the other")
        pairs = unique_pairs(ea[:, :2], eb[:, :2])
    fwd = defaultdict(set)
    back = defaultdict(set)
    for x, y in pairs.tolist():
        fwd[x].add(y)
        back[y].add(x)
    for x, ys in fwd.items():
        if len(ys) > 1:
            return Comparison(False, f"node {x} of the first graph corresponds to {len(ys)} nodes of the second "
                                     f"(the parameters on its edges are spread over several neurons there)")
    for y, xs in back.items():
        if len(xs) > 1:
            return Comparison(False, f"{len(xs)} nodes of the first graph correspond to node {y} of the second")
    node_map = {x: next(iter(ys)) for x, ys in fwd.items()}
    aux_a, aux_b = _aux_edges(a), _aux_edges(b)
    # nodes without parameter edges (head nodes) are matched by their neighbourhoods, in the second
    # graph's numbering; repeated, since a head node may hang off another (grouped-query heads)
    adj_a, adj_b = _adjacency(aux_a), _adjacency(aux_b)
    for _ in range(4):
        unmapped = [n for n in range(a.num_nodes) if n not in node_map]
        if not unmapped:
            break
        taken = set(node_map.values())
        by_sig = defaultdict(list)
        for n in range(b.num_nodes):
            if n not in taken:
                sig = tuple(sorted(e for e in adj_b.get(n, ()) if e[1] in taken))
                if sig:
                    by_sig[sig].append(n)
        for n in unmapped:
            sig = tuple(sorted((d, node_map[o], t, v) for d, o, t, v in adj_a.get(n, ()) if o in node_map))
            cands = by_sig.get(sig) if sig else None
            if cands:
                node_map[n] = cands.pop(0)
    if len(node_map) != a.num_nodes:
        return Comparison(False, f"{a.num_nodes - len(node_map)} nodes of the first graph have no counterpart", node_map)
    mapped = sorted((node_map[s], node_map[d], t, v) for s, d, t, v in aux_a)
    if mapped != sorted(aux_b):
        missing = set(mapped) - set(aux_b)
        example = next(iter(missing)) if missing else None
        return Comparison(False, f"the auxiliary edges differ (e.g. a {et.name(example[2])} edge {example[:2]} of the first "
                                 "graph has no counterpart)" if example else "the auxiliary edges differ", node_map)
    return Comparison(True, "", node_map)


def symmetry_order(g: NeuralGraph) -> float:
    """log10 of the size of the permutation group the graph's declarations generate, counting each
    declaration as independent (an upper bound where declarations overlap)."""
    sizes = {x.name: x.size for x in g.groups}
    total = 0.0
    for s in g.symmetries:
        if hasattr(s, "heads"):
            count = sizes[s.heads]
            total += s.within * math.lgamma(count // s.within + 1)
        else:
            width = sizes[s.groups[0]] // s.segments
            total += s.segments * math.lgamma(width + 1)
    return total / math.log(10)
