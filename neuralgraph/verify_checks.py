"""What :mod:`neuralgraph.verify` and :mod:`neuralgraph.verify_bad` share: the record of one check,
the thresholds for blocks without effect, and the draw of a good permutation.

Imports run one way: ``verify`` imports ``verify_bad``, and both import this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .graph import NeuralGraph
from .symmetry import draw_together

__all__ = ["Check", "INERT_FACTOR", "LOCAL_STEP", "draw_good"]

INERT_FACTOR = 1000.0
"""A block counts as inert when replacing its values by noise as large as themselves moves the
outputs by at most this many times the bad-permutation threshold: a permutation of it, which
changes it no more than that noise, cannot be expected to clear the threshold."""

LOCAL_STEP = 1e-5
"""Size (relative to a block's largest value) of the small change with which the verifier asks
whether the outputs are flat in a block around the drawn parameters: a bad permutation of a
block the outputs are flat in (while large noise still flips them) cannot be told from round-off."""


@dataclass
class Check:
    """One verifier check."""

    kind: str  # "round-trip" | "good" | "bad" | "inert" (a bad permutation of a block without effect)
    description: str
    groups: tuple[str, ...]
    passed: bool
    deviation: float = math.nan  # relative output change
    isomorphic: bool | None = None  # graph of permuted parameters vs original
    detail: str = ""


def draw_good(graph: NeuralGraph, symmetries, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One permutation per group drawn from ``symmetries`` together (composed where they share a group)."""
    return draw_together(symmetries, {g.name: g.size for g in graph.groups}, generator)
