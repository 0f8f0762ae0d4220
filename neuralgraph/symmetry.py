"""Declared neuron-permutation symmetries of a neural graph.

A converter declares which node groups the network's function is invariant to permuting
(``docs/design.md``, "The symmetry principle"). The verifier draws "good" permutations from these declarations and
"bad" ones by breaking them, then checks both against the model's real outputs.

A permutation of a group is a tensor ``perm`` of local indices: unit ``i`` moves to ``perm[i]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

__all__ = ["Permutable", "PermutableHeads", "compose"]


def _avoid_identity(draw, size: int, tries: int = 8) -> torch.Tensor:
    perm = draw()
    for _ in range(tries):
        if not torch.equal(perm, torch.arange(size)):
            break
        perm = draw()
    return perm


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
        suffix = f" (within {self.segments} segments)" if self.segments > 1 else ""
        return "+".join(self.groups) + suffix

    def movable(self, sizes: Mapping[str, int]) -> bool:
        """Whether any non-identity permutation exists."""
        return sizes[self.groups[0]] // self.segments > 1

    def sample(self, size: int, generator: torch.Generator) -> torch.Tensor:
        """A random permutation of ``range(size)`` that respects the segments."""
        if size % self.segments:
            raise ValueError(f"{self.name}: size {size} is not divisible into {self.segments} segments")
        width = size // self.segments
        keys = torch.rand(self.segments, width, generator=generator, dtype=torch.float64)
        local = keys.argsort(dim=1)
        return (local + torch.arange(self.segments).unsqueeze(1) * width).reshape(-1)

    def draw(self, sizes: Mapping[str, int], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """A random good permutation (not the identity where another exists), per group."""
        size = sizes[self.groups[0]]
        perm = _avoid_identity(lambda: self.sample(size, generator), size)
        return {name: perm for name in self.groups}

    def cross_segment(self, sizes: Mapping[str, int], generator: torch.Generator) -> dict[str, torch.Tensor] | None:
        """A bad permutation: one unit swapped with a unit of another segment (None with one segment)."""
        if self.segments < 2:
            return None
        size = sizes[self.groups[0]]
        width = size // self.segments
        a, b = torch.randperm(self.segments, generator=generator)[:2].tolist()
        i = a * width + int(torch.randint(width, (1,), generator=generator))
        j = b * width + int(torch.randint(width, (1,), generator=generator))
        perm = torch.arange(size)
        perm[i], perm[j] = j, i
        return {name: perm for name in self.groups}


@dataclass(frozen=True)
class PermutableHeads:
    """Whole attention heads may be reordered: the head nodes of ``heads`` and the matching
    segments of every ``members`` group (query-key units, value units) move together.

    With ``within > 1`` heads only move inside ``within`` equal contiguous runs of heads (the
    query heads sharing one key/value head under grouped-query attention).
    """

    heads: str
    members: tuple[str, ...]
    within: int = 1

    @property
    def groups(self) -> tuple[str, ...]:
        return (self.heads, *self.members)

    @property
    def segments(self) -> int:
        return 1

    @property
    def name(self) -> str:
        where = f" within {self.within} groups" if self.within > 1 else ""
        return f"heads {self.heads}{where} with {'+'.join(self.members)}"

    def movable(self, sizes: Mapping[str, int]) -> bool:
        return sizes[self.heads] // self.within > 1

    def draw(self, sizes: Mapping[str, int], generator: torch.Generator) -> dict[str, torch.Tensor]:
        count = sizes[self.heads]
        order = _avoid_identity(lambda: Permutable((self.heads,), self.within).sample(count, generator), count)
        perms = {self.heads: order}
        for name in self.members:
            width = sizes[name] // count
            perms[name] = (order.unsqueeze(1) * width + torch.arange(width)).reshape(-1)
        return perms

    def cross_segment(self, sizes: Mapping[str, int], generator: torch.Generator) -> dict[str, torch.Tensor] | None:
        """A bad permutation: unit ``j`` of one head swapped with unit ``j`` of another, in the
        first member group only (head nodes stay)."""
        count = sizes[self.heads]
        if count < 2 or not self.members:
            return None
        name = self.members[0]
        width = sizes[name] // count
        a, b = torch.randperm(count, generator=generator)[:2].tolist()
        j = int(torch.randint(width, (1,), generator=generator))
        perm = torch.arange(sizes[name])
        perm[a * width + j], perm[b * width + j] = b * width + j, a * width + j
        return {name: perm}


def compose(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The permutation "apply ``first``, then ``second``" (``perm[i]`` = new position of unit i)."""
    return second[first]
