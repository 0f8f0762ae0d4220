"""The traced converter's last step: keep only symmetries the graph it built can carry.

A symmetry read off the dataflow must map the graph's edge structure onto itself; where the
rules missed something (a bias table added to attention scores that no rule ties to the heads,
say), a permutation the trace declared moves some edges onto places where the graph has none.
Such a symmetry is dropped — the graph then claims less, never something false — and the reason
is logged and kept in ``graph.meta["dropped_symmetries"]``. Each symmetry is tried with a few
random permutations, at the cost of one pass over the blocks each.
"""

from __future__ import annotations

import logging

import torch

from ..graph import NeuralGraph
from ..permute import is_automorphism

__all__ = ["keep_structural_symmetries"]

log = logging.getLogger(__name__)

TRIES = 3
"""Random permutations drawn per declared symmetry."""


def keep_structural_symmetries(graph: NeuralGraph, *, seed: int = 0) -> NeuralGraph:
    """``graph`` without the symmetries some drawn permutation of which is not an automorphism of
    its edge structure (modified in place and returned)."""
    sizes = {g.name: g.size for g in graph.groups}
    generator = torch.Generator().manual_seed(seed)
    kept, dropped = [], []
    for sym in graph.symmetries:
        if sym.movable(sizes) and not all(is_automorphism(graph, sym.draw(sizes, generator)) for _ in range(TRIES)):
            dropped.append(sym)
            continue
        kept.append(sym)
    if dropped:
        graph.symmetries = tuple(kept)
        graph.meta["dropped_symmetries"] = [repr(s) for s in dropped]
        log.info("traced %s: %d declared symmetries do not map the graph onto itself and were dropped: %s",
                 graph.arch, len(dropped), "; ".join(repr(s) for s in dropped))
    return graph
