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

__all__ = ["wl_fingerprint"]

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


def wl_fingerprint(
    edge_index: torch.Tensor,
    edge_type: torch.Tensor,
    edge_attr: torch.Tensor,
    num_nodes: int,
    node_labels: torch.Tensor | None = None,
    iterations: int = 4,
) -> tuple[int, ...]:
    """Sorted node colours after ``iterations`` rounds of directed colour refinement."""
    src = edge_index[0].numpy()
    dst = edge_index[1].numpy()
    feats = (edge_attr.to(torch.float64) + 0.0).contiguous().numpy().view(np.uint64)
    h_edge = _mix(edge_type.numpy().astype(np.uint64) + np.uint64(0x1234567))
    for col in range(feats.shape[1]):
        h_edge = _mix(h_edge ^ feats[:, col])
    labels = np.zeros(num_nodes, np.uint64) if node_labels is None else node_labels.numpy().astype(np.uint64)
    color = _mix(labels + np.uint64(987654321))
    for _ in range(iterations):
        incoming = np.zeros(num_nodes, np.uint64)
        outgoing = np.zeros(num_nodes, np.uint64)
        np.add.at(incoming, dst, _mix(h_edge ^ _mix(color[src] + np.uint64(1))))
        np.add.at(outgoing, src, _mix(h_edge ^ _mix(color[dst] + np.uint64(2))))
        color = _mix(color ^ _mix(incoming + np.uint64(3)) ^ _mix(_mix(outgoing) + np.uint64(5)))
    return tuple(int(c) for c in np.sort(color))
