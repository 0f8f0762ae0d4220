"""Declared neuron-permutation symmetries of a neural graph.

A converter declares which node groups the network's function is invariant to permuting
(``DESIGN.md`` section 3). The verifier draws "good" permutations from these declarations and
"bad" ones by breaking them, then checks both against the model's real outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Permutable", "compose"]


@dataclass(frozen=True)
class Permutable:
    """Node groups that may be permuted together without changing the network's function.

    Every group in ``groups`` (all of the same size) receives the *same* permutation of its local
    indices. With ``segments > 1`` the groups are split into that many equal contiguous segments
    (attention heads, say) and units only move inside their own segment; each segment draws its
    own permutation.
    """

    groups: tuple[str, ...]
    segments: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.groups, str):
            object.__setattr__(self, "groups", (self.groups,))
        if not self.groups:
            raise ValueError("Permutable needs at least one group")
        if self.segments < 1:
            raise ValueError(f"Permutable({self.groups}): segments must be >= 1")

    @property
    def name(self) -> str:
        suffix = f" ({self.segments} segments)" if self.segments > 1 else ""
        return "+".join(self.groups) + suffix

    def sample(self, size: int, generator: torch.Generator) -> torch.Tensor:
        """A random permutation of ``range(size)`` that respects the segments."""
        if size % self.segments:
            raise ValueError(f"{self.name}: size {size} is not divisible into {self.segments} segments")
        width = size // self.segments
        keys = torch.rand(self.segments, width, generator=generator, dtype=torch.float64)
        local = keys.argsort(dim=1)
        return (local + torch.arange(self.segments).unsqueeze(1) * width).reshape(-1)

    def cross_segment(self, size: int, generator: torch.Generator) -> torch.Tensor | None:
        """A transposition moving one unit into another segment (None with one segment)."""
        if self.segments < 2:
            return None
        width = size // self.segments
        a, b = torch.randperm(self.segments, generator=generator)[:2].tolist()
        i = a * width + int(torch.randint(width, (1,), generator=generator))
        j = b * width + int(torch.randint(width, (1,), generator=generator))
        perm = torch.arange(size)
        perm[i], perm[j] = j, i
        return perm


def compose(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The permutation "apply ``first``, then ``second``" (``perm[i]`` = new position of unit i)."""
    return second[first]
