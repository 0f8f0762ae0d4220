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

__all__ = ["Permutable", "PermutableHeads", "compose", "draw_together"]


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
        return from_segments(keys.argsort(dim=1))

    # -- the permutation as explicit choices (what :func:`sample` draws at random; the
    # -- hypothesis strategies of ``neuralgraph.testing`` draw the same choices)
    def layout(self, sizes: Mapping[str, int]) -> tuple[int, int]:
        """``(segments, width)`` of the base permutation: units move only inside their segment."""
        return self.segments, sizes[self.groups[0]] // self.segments

    def expand(self, base: torch.Tensor, sizes: Mapping[str, int]) -> dict[str, torch.Tensor]:
        """The per-group permutations of a base permutation (every group receives it)."""
        return {name: base for name in self.groups}

    def base_unit(self, group: str, unit: int, sizes: Mapping[str, int]) -> int:
        """The unit of the base permutation that moves local unit ``unit`` of ``group``."""
        return unit

    def cross_layout(self, sizes: Mapping[str, int]) -> tuple[int, int] | None:
        """``(segments, width)`` between which :meth:`cross_segment_at` moves units (None: no segments)."""
        return self.layout(sizes) if self.segments >= 2 else None

    def draw(self, sizes: Mapping[str, int], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """A random good permutation (not the identity where another exists), per group."""
        size = sizes[self.groups[0]]
        perm = _avoid_identity(lambda: self.sample(size, generator), size)
        return self.expand(perm, sizes)

    def cross_segment_at(self, sizes: Mapping[str, int], a: int, x: int, b: int, y: int) -> dict[str, torch.Tensor]:
        """The bad permutation swapping unit ``x`` of segment ``a`` with unit ``y`` of segment ``b``."""
        _, width = self.layout(sizes)
        i, j = a * width + x, b * width + y
        perm = torch.arange(sizes[self.groups[0]])
        perm[i], perm[j] = j, i
        return {name: perm for name in self.groups}

    def cross_segment(self, sizes: Mapping[str, int], generator: torch.Generator) -> dict[str, torch.Tensor] | None:
        """A bad permutation: one unit swapped with a unit of another segment (None with one segment)."""
        if self.segments < 2:
            return None
        _, width = self.layout(sizes)
        a, b = torch.randperm(self.segments, generator=generator)[:2].tolist()
        x = int(torch.randint(width, (1,), generator=generator))
        y = int(torch.randint(width, (1,), generator=generator))
        return self.cross_segment_at(sizes, a, x, b, y)


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

    def layout(self, sizes: Mapping[str, int]) -> tuple[int, int]:
        """``(within, heads per run)``: the base permutation reorders heads inside each run."""
        return self.within, sizes[self.heads] // self.within

    def expand(self, order: torch.Tensor, sizes: Mapping[str, int]) -> dict[str, torch.Tensor]:
        """The per-group permutations of a head order: head nodes, and each member group's
        segments moved whole."""
        count = sizes[self.heads]
        perms = {self.heads: order}
        for name in self.members:
            width = sizes[name] // count
            perms[name] = (order.unsqueeze(1) * width + torch.arange(width)).reshape(-1)
        return perms

    def base_unit(self, group: str, unit: int, sizes: Mapping[str, int]) -> int:
        """The head that local unit ``unit`` of ``group`` (the head group or a member) belongs to."""
        return unit if group == self.heads else unit // (sizes[group] // sizes[self.heads])

    def cross_layout(self, sizes: Mapping[str, int]) -> tuple[int, int] | None:
        """``(heads, units per head of the first member group)``, or None with one head or no member."""
        count = sizes[self.heads]
        if count < 2 or not self.members:
            return None
        return count, sizes[self.members[0]] // count

    def draw(self, sizes: Mapping[str, int], generator: torch.Generator) -> dict[str, torch.Tensor]:
        count = sizes[self.heads]
        order = _avoid_identity(lambda: Permutable((self.heads,), self.within).sample(count, generator), count)
        return self.expand(order, sizes)

    def cross_segment_at(self, sizes: Mapping[str, int], a: int, x: int, b: int, y: int) -> dict[str, torch.Tensor]:
        """The bad permutation swapping unit ``x`` of head ``a`` with unit ``y`` of head ``b``, in
        the first member group only (head nodes stay)."""
        name = self.members[0]
        width = sizes[name] // sizes[self.heads]
        perm = torch.arange(sizes[name])
        perm[a * width + x], perm[b * width + y] = b * width + y, a * width + x
        return {name: perm}

    def cross_segment(self, sizes: Mapping[str, int], generator: torch.Generator) -> dict[str, torch.Tensor] | None:
        """A bad permutation: unit ``j`` of one head swapped with unit ``j`` of another, in the
        first member group only (head nodes stay)."""
        layout = self.cross_layout(sizes)
        if layout is None:
            return None
        count, width = layout
        a, b = torch.randperm(count, generator=generator)[:2].tolist()
        j = int(torch.randint(width, (1,), generator=generator))
        return self.cross_segment_at(sizes, a, j, b, j)


def compose(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The permutation "apply ``first``, then ``second``" (``perm[i]`` = new position of unit i)."""
    return second[first]


def from_segments(local: torch.Tensor) -> torch.Tensor:
    """The permutation of ``S * w`` units that applies row ``s`` of ``local`` (``[S, w]``, a
    permutation of ``range(w)`` per row) inside segment ``s``."""
    segments, width = local.shape
    return (local + torch.arange(segments).unsqueeze(1) * width).reshape(-1)


def draw_together(symmetries, sizes: Mapping[str, int], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One good permutation per group: each of ``symmetries`` drawn, composed where they share a group."""
    perms: dict[str, torch.Tensor] = {}
    for sym in symmetries:
        for name, perm in sym.draw(sizes, generator).items():
            perms[name] = compose(perms[name], perm) if name in perms else perm
    return perms
