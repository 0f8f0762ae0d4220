"""Permutations drawn with a seeded ``torch.Generator``: what the assertions of
:mod:`neuralgraph.testing` try when they get no ``perm=`` (no hypothesis needed).

They are :func:`neuralgraph.verify`'s own draws: each declared symmetry samples a permutation
of its groups that respects its segments (attention heads, grouped-query runs), never the
identity where another one exists.
"""

from __future__ import annotations

import torch

from ..graph import NeuralGraph
from ..permutation import Permutation
from ..symmetry import draw_together

__all__ = ["movable_symmetries", "good_permutation", "good_permutations", "group_sizes"]


def group_sizes(graph: NeuralGraph) -> dict[str, int]:
    """``{group name: number of nodes}``."""
    return {g.name: g.size for g in graph.groups}


def movable_symmetries(graph: NeuralGraph) -> list:
    """The graph's declared symmetries that can move at least one unit."""
    sizes = group_sizes(graph)
    return [s for s in graph.symmetries if s.movable(sizes)]


def good_permutation(graph: NeuralGraph, generator: torch.Generator, symmetries=None) -> Permutation:
    """A random permutation drawn from ``symmetries`` (default: every movable declared one) together."""
    chosen = movable_symmetries(graph) if symmetries is None else list(symmetries)
    perms = draw_together(chosen, group_sizes(graph), generator)
    what = chosen[0].name if len(chosen) == 1 else f"all {len(chosen)} declared symmetries"
    return Permutation(perms, kind="good", description=f"permute {what}")


def good_permutations(graph: NeuralGraph, trials: int, seed: int = 0) -> list[Permutation]:
    """``trials`` good permutations: every declared symmetry together first, then each one alone
    (as many as ``trials`` allows, in declaration order).

    Raises:
        ValueError: ``trials`` is not a positive integer, or the graph declares no symmetry that
            moves a unit (there is nothing to test: an MLP whose hidden layers have one unit each).
    """
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive integer (permutations to try), got {trials!r}")
    symmetries = movable_symmetries(graph)
    if not symmetries:
        raise ValueError(
            f"the {graph.arch} graph declares no permutable group with more than one unit: there is no "
            "permutation to test (pass perm= to test a permutation of your own)"
        )
    generator = torch.Generator().manual_seed(seed)
    plans = [symmetries] + ([[s] for s in symmetries] if len(symmetries) > 1 else [])
    plans += [symmetries] * max(0, trials - len(plans))
    return [good_permutation(graph, generator, chosen) for chosen in plans[:trials]]
