"""A neuron permutation as one value: per-group permutations, what was left out, and its kind.

:func:`neuralgraph.permute_params` and every assertion of :mod:`neuralgraph.testing` accept a
:class:`Permutation` as well as a plain ``{group name: tensor}`` mapping. The strategies of
``neuralgraph.testing.strategies`` draw :class:`Permutation` values, whose ``repr`` says what moved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

import torch

__all__ = ["Permutation", "PermutationLike", "as_permutation"]

#: How many moved units :meth:`Permutation.__repr__` lists per group before it summarises.
SHOWN_UNITS = 8

#: How many groups :meth:`Permutation.__repr__` lists before it summarises.
SHOWN_GROUPS = 6

KINDS = ("good", "bad", "given")


@dataclass(frozen=True, eq=False)
class Permutation:
    """A permutation of a neural graph's neurons, pushed onto its parameters by
    :func:`neuralgraph.permute_params`.

    Attributes:
        perms: for each permuted node group, a ``LongTensor`` of local indices: unit ``i`` of the
            group moves to position ``perms[group][i]``. Groups not listed stay where they are.
        skip: ``(block name, "src" | "dst")`` or ``(block name, "slot", k)`` entries left
            unpermuted on purpose: how a "bad" permutation breaks a declared symmetry (the
            incoming weights of a unit move but not its outgoing ones, say).
        kind: ``"good"`` (drawn from the graph's declared symmetries: the network's function
            must not change), ``"bad"`` (a declared symmetry broken on purpose: it must change)
            or ``"given"`` (built from a mapping; nothing is claimed).
        description: what was drawn, in words (which symmetry, which block was left out).
    """

    perms: Mapping[str, torch.Tensor]
    skip: tuple = ()
    kind: str = "given"
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Permutation kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        perms = {}
        for name, perm in dict(self.perms).items():
            perm = torch.as_tensor(perm, dtype=torch.long)
            if perm.ndim != 1 or not torch.equal(perm.sort().values, torch.arange(perm.numel())):
                raise ValueError(
                    f"the permutation of group '{name}' must be a 1-D tensor holding each of 0..n-1 once, got "
                    f"{_short(perm)}"
                )
            perms[name] = perm
        object.__setattr__(self, "perms", perms)
        object.__setattr__(self, "skip", tuple(tuple(s) for s in self.skip))

    @property
    def is_identity(self) -> bool:
        """Whether no unit moves (a skip then changes nothing either)."""
        return all(torch.equal(p, torch.arange(p.numel())) for p in self.perms.values())

    def moved(self) -> dict[str, int]:
        """Number of units each group moves (groups that move none are left out)."""
        counts = {name: int((perm != torch.arange(perm.numel())).sum()) for name, perm in self.perms.items()}
        return {name: n for name, n in counts.items() if n}

    def __repr__(self) -> str:
        moved = self.moved()
        parts = [f"'{name}': {_moves(self.perms[name])}" for name in list(moved)[:SHOWN_GROUPS]]
        if len(moved) > SHOWN_GROUPS:
            parts.append(f"... {len(moved) - SHOWN_GROUPS} more groups")
        body = "; ".join(parts) if parts else "identity"
        what = f"{self.description}; " if self.description else ""
        skip = f"; left unpermuted: {', '.join(_side(s) for s in self.skip)}" if self.skip else ""
        return f"Permutation({self.kind}: {what}{body}{skip})"


PermutationLike = Union[Permutation, Mapping[str, Any]]
"""What the functions taking a permutation accept: a :class:`Permutation` or a mapping
``{group name: local permutation}`` (tensors, lists or arrays of ints)."""


def as_permutation(perm: PermutationLike, skip: tuple = ()) -> Permutation:
    """``perm`` as a :class:`Permutation` (a mapping becomes kind ``"given"``); extra ``skip``
    entries are added to its own."""
    if isinstance(perm, Permutation):
        if not skip:
            return perm
        return Permutation(perm.perms, perm.skip + tuple(skip), perm.kind, perm.description)
    if isinstance(perm, Mapping):
        return Permutation(perm, tuple(skip))
    raise TypeError(
        f"expected a neuralgraph.testing.Permutation or a mapping {{group name: permutation tensor}}, got "
        f"{type(perm).__name__}"
    )


def _short(perm: torch.Tensor) -> str:
    values = perm.reshape(-1).tolist()
    return str(values[:12])[:-1] + (", ...]" if len(values) > 12 else "]")


def _moves(perm: torch.Tensor) -> str:
    """``0→3 3→0 (2 of 6 units moved)``: the first moved units of a group."""
    moving = torch.nonzero(perm != torch.arange(perm.numel())).reshape(-1)
    shown = " ".join(f"{i}→{int(perm[i])}" for i in moving[:SHOWN_UNITS].tolist())
    more = " ..." if moving.numel() > SHOWN_UNITS else ""
    return f"{shown}{more} ({moving.numel()} of {perm.numel()} units moved)"


def _side(side: tuple) -> str:
    if len(side) == 3 and side[1] == "slot":
        return f"tensor {side[2]} of block '{side[0]}'"
    return f"{side[1]} side of block '{side[0]}'"
