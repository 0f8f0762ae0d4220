"""A Weisfeiler-Lehman fingerprint of a neural graph with its edge features.

Two graphs with different fingerprints are certainly not isomorphic (as graphs whose edges carry
types and feature vectors, and whose nodes carry ``pos_w``); equal fingerprints are what an
isomorphism implies. The verifier uses it to check that bad permutations yield a *different*
graph, independently of how the permutation was constructed. Hashing is exact on the bits of
float64 features (``-0.0`` is treated as ``0.0``).
"""

from __future__ import annotations

import numpy as np
import torch

from .blocks import DENSE, STAR

__all__ = ["wl_fingerprint", "graph_fingerprint", "edge_hashes", "graph_edge_hashes"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)

#: Largest number of edges (or edge features) hashed or messaged at once.
_CHUNK = 1 << 22

#: Largest graph (edges) fingerprinted over its whole (cached) ``edge_index`` rather than block by
#: block: two int64 per edge are cheap there, and one gather per round is faster than a loop over
#: hundreds of small blocks.
_FLAT_EDGES = 2_000_000

_wrapping = np.errstate(over="ignore")
"""Hashes multiply and add modulo 2**64: overflow is the point, not an error."""


def _mix(x: np.ndarray) -> np.ndarray:
    """A 64-bit finalizer (splitmix64's) on a copy of ``x``, in place after the copy."""
    x = x.astype(np.uint64, copy=True)
    if x.ndim == 0:
        x = x.reshape(1)
        return _mix_inplace(x, np.empty_like(x)).reshape(())
    return _mix_inplace(x, np.empty_like(x))


def _mix_inplace(x: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    np.right_shift(x, np.uint64(30), out=tmp)
    x ^= tmp
    x *= _M1
    np.right_shift(x, np.uint64(27), out=tmp)
    x ^= tmp
    x *= _M2
    np.right_shift(x, np.uint64(31), out=tmp)
    x ^= tmp
    return x


def _fold(h: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """Fold feature columns ``feats`` ``[E, F]`` (uint64 bits) into the edge hashes ``h`` ``[E]``,
    up to each edge's last non-zero slot: trailing zeros (the padding of a narrow block in a wide
    graph) add nothing, so a block hashes the same alone as padded to any width."""
    if feats.shape[1] == 0:
        return h
    nonzero = feats != 0
    length = np.where(nonzero.any(axis=1), feats.shape[1] - np.argmax(nonzero[:, ::-1], axis=1), 0)
    for col in range(feats.shape[1]):
        live = length > col
        if live.all():
            h = _mix(h ^ feats[:, col])
        elif live.any():
            h[live] = _mix(h[live] ^ feats[live, col])
    return h


def _type_hash(edge_type: int | np.ndarray) -> np.ndarray:
    return _mix(np.asarray(edge_type).astype(np.uint64) + np.uint64(0x1234567))


@_wrapping
def edge_hashes(edge_type: torch.Tensor, edge_attr: torch.Tensor) -> np.ndarray:
    """One uint64 per edge from its type and the bits of its float64 features (``-0.0`` counts as
    ``0.0``; trailing zero slots are not hashed)."""
    feats = (edge_attr.to(torch.float64) + 0.0).contiguous().numpy().view(np.uint64)
    return _fold(_type_hash(edge_type.numpy()), feats)


@_wrapping
def graph_edge_hashes(graph, vector: torch.Tensor) -> np.ndarray:
    """:func:`edge_hashes` of ``graph.edge_features(vector)``, computed one block at a time: memory
    follows the parameters rather than edges x the widest kernel (a ViT's 16x16 patch kernel would
    otherwise widen every edge to 256 features), and neither ``edge_index`` nor ``edge_type`` is
    built."""
    out = np.empty(graph.num_edges, np.uint64)
    vector = vector.to(torch.float64)
    for b in graph.blocks:
        lo, hi = b.edge_start, b.edge_stop
        if hi == lo:
            continue
        type_hash = _type_hash(b.edge_type)
        if b.view is None:
            rows = torch.full((1, 1), float(b.value), dtype=torch.float64)
            out[lo:hi] = _fold(np.full(1, type_hash, np.uint64), (rows + 0.0).numpy().view(np.uint64))[0]
            continue
        values = b.view.read(vector).reshape(hi - lo, b.feat_size)
        step = max(1, _CHUNK // max(1, b.feat_size))
        for r in range(0, hi - lo, step):  # temporaries of at most _CHUNK features
            feats = (values[r : r + step] + 0.0).contiguous().numpy().view(np.uint64)
            out[lo + r : lo + r + feats.shape[0]] = _fold(np.full(feats.shape[0], type_hash, np.uint64), feats)
    return out


@_wrapping
def graph_fingerprint(graph, vector: torch.Tensor, iterations: int = 4) -> tuple[int, ...]:
    """:func:`wl_fingerprint` of ``graph`` with parameters ``vector`` and ``pos_w`` node labels,
    computed block by block from the block layout on large graphs: no ``edge_index`` (two int64 per
    edge) and no per-edge gathers, and temporaries of at most ``_CHUNK`` edges. Equal to
    ``wl_fingerprint(graph.edge_index, graph.edge_type, None, graph.num_nodes, graph.pos_w,
    edge_hash=graph_edge_hashes(graph, vector))``."""
    h_edge = graph_edge_hashes(graph, vector)
    if graph.num_edges <= _FLAT_EDGES:  # one pass over all edges beats a Python loop over hundreds of blocks
        return wl_fingerprint(graph.edge_index, graph.edge_type, None, graph.num_nodes, graph.pos_w,
                              iterations, edge_hash=h_edge)
    color = _mix(graph.pos_w.numpy().astype(np.uint64) + np.uint64(987654321))
    for _ in range(iterations):
        incoming = np.zeros(graph.num_nodes, np.uint64)
        outgoing = np.zeros(graph.num_nodes, np.uint64)
        from_src = _mix(color + np.uint64(1))  # what a source node sends along its out-edges
        from_dst = _mix(color + np.uint64(2))  # what a target node sends back along its in-edges
        for b in graph.blocks:
            s0, ns, d0, nd = b.src.start, b.src.size, b.dst.start, b.dst.size
            h = h_edge[b.edge_start : b.edge_stop]
            if not h.size:
                continue
            if b.kind == DENSE:
                rows = max(1, _CHUNK // max(1, nd))
                for r in range(0, ns, rows):
                    hr = h[r * nd : min(ns, r + rows) * nd].reshape(-1, nd)
                    src = slice(s0 + r, s0 + r + hr.shape[0])
                    incoming[d0 : d0 + nd] += _mix(hr ^ from_src[src, None]).sum(axis=0, dtype=np.uint64)
                    outgoing[src] += _mix(hr ^ from_dst[None, d0 : d0 + nd]).sum(axis=1, dtype=np.uint64)
            elif b.kind == STAR:
                incoming[d0 : d0 + nd] += _mix(h ^ from_src[s0])
                outgoing[s0] += _mix(h ^ from_dst[d0 : d0 + nd]).sum(dtype=np.uint64)
            else:  # diagonal: source i -> target i (src and dst may be one range: self-loops)
                incoming[d0 : d0 + nd] += _mix(h ^ from_src[s0 : s0 + ns])
                outgoing[s0 : s0 + ns] += _mix(h ^ from_dst[d0 : d0 + nd])
        color = _mix(color ^ _mix(incoming + np.uint64(3)) ^ _mix(_mix(outgoing) + np.uint64(5)))
    return tuple(int(c) for c in np.sort(color))


@_wrapping
def wl_fingerprint(
    edge_index: torch.Tensor,
    edge_type: torch.Tensor,
    edge_attr: torch.Tensor | None,
    num_nodes: int,
    node_labels: torch.Tensor | None = None,
    iterations: int = 4,
    *,
    edge_hash: np.ndarray | None = None,
) -> tuple[int, ...]:
    """Sorted node colours after ``iterations`` rounds of directed colour refinement. The edges'
    features come as ``edge_attr`` ``[E, F]`` or already hashed (``edge_hash``, see
    :func:`graph_edge_hashes`)."""
    src = edge_index[0]
    dst = edge_index[1]
    h_edge = edge_hashes(edge_type, edge_attr) if edge_hash is None else edge_hash
    labels = np.zeros(num_nodes, np.uint64) if node_labels is None else node_labels.numpy().astype(np.uint64)
    color = _mix(labels + np.uint64(987654321))
    for _ in range(iterations):
        into = _mix(h_edge ^ _mix(color[src.numpy()] + np.uint64(1)))
        out_of = _mix(h_edge ^ _mix(color[dst.numpy()] + np.uint64(2)))
        incoming = _sum_at(dst, into, num_nodes)
        outgoing = _sum_at(src, out_of, num_nodes)
        color = _mix(color ^ _mix(incoming + np.uint64(3)) ^ _mix(_mix(outgoing) + np.uint64(5)))
    return tuple(int(c) for c in np.sort(color))


def _sum_at(index: torch.Tensor, values: np.ndarray, n: int) -> np.ndarray:
    """Sums of ``values`` by ``index``, modulo 2**64 (int64 addition wraps the same way)."""
    total = torch.zeros(n, dtype=torch.int64)
    total.index_add_(0, index, torch.from_numpy(values.view(np.int64)))
    return total.numpy().view(np.uint64)
