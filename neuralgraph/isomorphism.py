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

__all__ = ["wl_fingerprint", "edge_hashes", "graph_edge_hashes"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def edge_hashes(edge_type: torch.Tensor, edge_attr: torch.Tensor) -> np.ndarray:
    """One uint64 per edge from its type and the bits of its float64 features."""
    feats = (edge_attr.to(torch.float64) + 0.0).contiguous().numpy().view(np.uint64)
    h_edge = _mix(edge_type.numpy().astype(np.uint64) + np.uint64(0x1234567))
    for col in range(feats.shape[1]):
        h_edge = _mix(h_edge ^ feats[:, col])
    return h_edge


def graph_edge_hashes(graph, vector: torch.Tensor) -> np.ndarray:
    """:func:`edge_hashes` of ``graph.edge_features(vector)``, computed one block at a time, so
    that memory follows the parameters rather than edges x the widest kernel (a ViT's 16x16 patch
    kernel would otherwise widen every edge to 256 features)."""
    width = graph.max_feat_size
    out = np.empty(graph.num_edges, np.uint64)
    edge_type = graph.edge_type
    vector = vector.to(torch.float64)
    for b in graph.blocks:
        lo, hi = b.edge_start, b.edge_stop
        if hi == lo:
            continue
        if b.view is None:
            rows = torch.full((hi - lo, 1), float(b.value), dtype=torch.float64)
        else:
            rows = b.view.read(vector).reshape(hi - lo, b.feat_size)
        h = edge_hashes(edge_type[lo:hi], rows)
        for _ in range(width - rows.shape[1]):  # the zero slots beyond this block's kernel
            h = _mix(h)
        out[lo:hi] = h
    return out


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
