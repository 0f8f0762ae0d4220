"""Drawing the experiment's permutations: "good" ones from the symmetries a converter declares
on the correct graph, "bad" ones of several kinds (:data:`BAD_KINDS`)."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from neuralgraph.build import PermutableHeads
from neuralgraph.permute import permute_params
from neuralgraph.symmetry import compose

__all__ = ["BAD_KINDS", "DEFAULT_BAD_KINDS", "GOOD_KIND", "Draw", "Perms", "draw_permutations"]

log = logging.getLogger(__name__)

GOOD_KIND = "declared-symmetry"
BAD_KINDS: dict[str, str] = {
    "cross-head-swap": "one unit of a head swapped with one of another head, in Q, K and V alike",
    "cross-head-shuffle": "a random permutation of the attention units that ignores the heads, Q, K and V alike",
    "inconsistent": "a declared symmetry applied everywhere except one parameter block or stacked tensor",
    "cross-segment": "one unit moved into another head in one unit group only (e.g. query-key, not value)",
    "qk-within-head": "query/key dimensions permuted within each head, Q and K alike (keeps a GPT-2 layer's "
    "function but not a RoPE layer's: a graph automorphism either way)",
}
"""The kinds of "bad" permutations (the label is measured, whatever the kind)."""

DEFAULT_BAD_KINDS: tuple[str, ...] = ("cross-head-swap", "cross-head-shuffle", "inconsistent", "cross-segment")


Perms = dict[str, torch.Tensor]
Skip = tuple


@dataclass(frozen=True)
class Draw:
    """One drawn permutation: its kind, the per-group permutations and the side left out (if any)."""

    kind: str
    perms: Perms
    skip: Skip = ()


def _compose(perms: Perms, extra: Mapping[str, torch.Tensor]) -> Perms:
    out = dict(perms)
    for name, perm in extra.items():
        out[name] = compose(out[name], perm) if name in out else perm
    return out


class _Sampler:
    """Draws good and bad permutations of a correct graph's node groups."""

    def __init__(self, graph, generator: torch.Generator, rng: random.Random) -> None:
        self.graph = graph
        self.gen = generator
        self.rng = rng
        self.sizes = {g.name: g.size for g in graph.groups}
        self.roles = {g.name: g.role for g in graph.groups}
        self.symmetries = [s for s in graph.symmetries if s.movable(self.sizes)]
        if not self.symmetries:
            raise ValueError(f"the {graph.arch} graph declares no movable symmetry: nothing to permute")
        self.inert = set(graph.meta.get("without_effect", {}))
        # attention head structures: top-level head symmetries (not the within-group ones of GQA)
        self.heads = [s for s in graph.symmetries if isinstance(s, PermutableHeads) and s.within == 1
                      and self.sizes[s.heads] > 1]
        self.sides = self._inconsistent_sides()
        self.cross = [s for s in self.symmetries if s.cross_segment(self.sizes, torch.Generator().manual_seed(0))]

    # -- good
    def good(self) -> Draw:
        chosen = [s for s in self.symmetries if self.rng.random() < 0.5] or [self.rng.choice(self.symmetries)]
        perms: Perms = {}
        for sym in chosen:
            perms = _compose(perms, sym.draw(self.sizes, self.gen))
        return Draw(GOOD_KIND, perms)

    # -- bad
    def available(self, kinds: Sequence[str]) -> list[str]:
        ok = []
        for kind in kinds:
            if kind in ("cross-head-swap", "cross-head-shuffle") and self.heads:
                ok.append(kind)
            elif kind == "qk-within-head" and self.heads and any(self._slots(s)[1] > 1 for s in self.heads):
                ok.append(kind)
            elif kind == "inconsistent" and self.sides:
                ok.append(kind)
            elif kind == "cross-segment" and self.cross:
                ok.append(kind)
        return ok

    def bad(self, kind: str) -> Draw:
        if kind in ("cross-head-swap", "cross-head-shuffle", "qk-within-head"):
            sym = self.rng.choice(self.heads)
            return Draw(kind, self._slot_permutation(sym, kind))
        if kind == "inconsistent":
            sym, side = self.rng.choice(self.sides)
            return Draw(kind, sym.draw(self.sizes, self.gen), (side,))
        if kind == "cross-segment":
            sym = self.rng.choice(self.cross)
            return Draw(kind, sym.cross_segment(self.sizes, self.gen))
        raise ValueError(f"unknown kind of bad permutation '{kind}'; known: {', '.join(BAD_KINDS)}")

    def _inconsistent_sides(self) -> list[tuple[Any, tuple]]:
        """(symmetry, side to leave unpermuted) pairs, as the verifier breaks symmetries."""
        out = []
        for sym in self.symmetries:
            groups = set(sym.groups)
            sides: list[tuple] = [
                (b.name, side)
                for b in self.graph.blocks
                if b.view is not None and b.name not in self.inert
                for side, rng in (("src", b.src), ("dst", b.dst))
                if rng.group in groups and rng.size > 1 and not (b.kind == "diagonal" and side == "src")
            ]
            sides += [
                (b.name, "slot", k)
                for b in self.graph.blocks
                if b.view is not None and len(b.view.parts) > 1 and b.name not in self.inert
                and {b.src.group, b.dst.group} & groups
                for k in range(len(b.view.parts))
                if f"{b.name}[{k}]" not in self.inert
            ]
            if len(sides) > 1:
                out += [(sym, side) for side in sides]
        return out

    def _slots(self, sym) -> tuple[list[str], int]:
        """Unit groups of a head symmetry (head-node groups excluded) and their common unit width."""
        count = self.sizes[sym.heads]
        members = [m for m in sym.members if self.roles[m] != "head"]
        width = min(self.sizes[m] // count for m in members)
        if any((self.sizes[m] // count) % width for m in members):
            raise ValueError(f"{sym.name}: unit groups do not share a head size")  # pragma: no cover
        return members, width

    def _slot_permutation(self, sym, kind: str) -> Perms:
        """A permutation ``tau`` of the (head, dim) slots, applied to every unit group of the heads:
        unit ``(h, r, j)`` (head ``h``, copy ``r`` — e.g. query head ``r`` of key/value group ``h``
        — dimension ``j``) moves to ``(tau(h, j), r)``. Head nodes stay."""
        count = self.sizes[sym.heads]
        members, dim = self._slots(sym)
        total = count * dim
        if kind == "cross-head-swap":
            a, b = self.rng.sample(range(count), 2)
            i, j = a * dim + self.rng.randrange(dim), b * dim + self.rng.randrange(dim)
            tau = torch.arange(total)
            tau[i], tau[j] = j, i
        elif kind == "cross-head-shuffle":
            for _ in range(100):
                tau = torch.randperm(total, generator=self.gen)
                if not torch.equal(tau.view(count, dim).div(dim, rounding_mode="floor").amax(1),
                                   tau.view(count, dim).div(dim, rounding_mode="floor").amin(1)):
                    break  # some head's units land in more than one head
        else:  # qk-within-head: query-key dims only, each head its own permutation (not all identity)
            for _ in range(100):
                keys = torch.rand(count, dim, generator=self.gen, dtype=torch.float64)
                tau = (keys.argsort(dim=1) + torch.arange(count).unsqueeze(1) * dim).reshape(-1)
                if not torch.equal(tau, torch.arange(total)):
                    break
            members = [m for m in members if self.roles[m] == "query_key"]
        perms: Perms = {}
        for m in members:
            copies = self.sizes[m] // count // dim
            h, rest = torch.arange(self.sizes[m]).div(copies * dim, rounding_mode="floor"), torch.arange(self.sizes[m])
            r = (rest % (copies * dim)).div(dim, rounding_mode="floor")
            j = rest % dim
            target = tau[h * dim + j]
            perms[m] = target.div(dim, rounding_mode="floor") * copies * dim + r * dim + target % dim
        return perms




def draw_permutations(
    graph, theta: torch.Tensor, generator: torch.Generator, rng: random.Random, *, n: int,
    good_fraction: float, bad_kinds: Sequence[str], name: str,
) -> tuple[list[Draw], torch.Tensor]:
    """``n`` draws (about ``good_fraction`` of them good, the rest of ``bad_kinds`` that apply to
    the layer, drawn uniformly, in a shuffled order) and the permuted parameter vectors ``[n, P]``."""
    sampler = _Sampler(graph, generator, rng)
    kinds_ok = sampler.available(bad_kinds)
    if not kinds_ok:
        raise ValueError(f"{name}: none of the bad kinds {list(bad_kinds)} applies to this layer")
    if len(kinds_ok) < len(bad_kinds):
        log.info("%s: bad kinds %s do not apply; using %s", name, sorted(set(bad_kinds) - set(kinds_ok)), kinds_ok)
    n_good = int(round(n * good_fraction))
    plan = [True] * n_good + [False] * (n - n_good)
    rng.shuffle(plan)
    draws = [sampler.good() if is_good else sampler.bad(rng.choice(kinds_ok)) for is_good in plan]
    vectors = torch.stack([permute_params(graph, theta, d.perms, skip=d.skip) for d in draws])
    return draws, vectors
