"""Where parameter elements sit in the flat parameter vector, without spending memory on it.

A rule that meets a parameter needs, for every element, its offset in the flat vector
(``named_parameters()`` order), so that a graph edge can point back at it. Materializing those
offsets costs eight bytes per parameter: 1 GB for GPT-2, 64 GB for an 8B model. :class:`Elems`
keeps them as a *strided view*: a ``meta`` tensor that aliases a storage as long as the parameter,
whose ``storage_offset`` and ``stride`` are exactly the affine map from index to offset. Views,
transposes, slices and expansions run on that meta tensor and stay free; an op that would copy
(a reshape of a non-contiguous view, a flip) gets the offsets materialized, element by element,
as before. Consumers ask :meth:`Elems.strided` for the affine form and fall back to
:meth:`Elems.tensor`.
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

import torch

from ..params import ParamSpec

__all__ = ["Elems"]


class Elems:
    """Flat-vector offsets of (a view of) parameter elements: symbolic (``view`` a meta tensor
    aliasing ``root``, of ``spec``) or materialized (``offsets``; ``spec`` is then the one
    parameter holding them all, or None where they may span several)."""

    __slots__ = ("spec", "view", "root", "_offsets")

    def __init__(self, offsets: torch.Tensor | None = None, *, spec: ParamSpec | None = None,
                 view: torch.Tensor | None = None, root: torch.Tensor | None = None) -> None:
        self._offsets = offsets
        self.spec, self.view, self.root = spec, view, root

    @classmethod
    def of(cls, spec: ParamSpec) -> Elems:
        """All of ``spec``'s elements, in its own shape."""
        root = torch.empty(spec.numel, dtype=torch.int8, device="meta")
        return cls(spec=spec, view=root.view(spec.shape) if spec.shape else root.view(()), root=root)

    # ------------------------------------------------------------------ tensor-like
    def materialized(self, offsets: torch.Tensor) -> Elems:
        """Offsets picked from these elements (same parameter), as a materialized ``Elems``."""
        return Elems(offsets, spec=self.spec)

    @property
    def symbolic(self) -> bool:
        return self.view is not None

    @property
    def shape(self) -> torch.Size:
        return self.view.shape if self.view is not None else self._offsets.shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def numel(self) -> int:
        return prod(self.shape)

    def apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Elems:
        """``fn`` (a view op) applied to the offsets; stays symbolic where ``fn`` returns a view."""
        if self.view is not None:
            out = fn(self.view)
            if out._base is self.root or out is self.root:
                return Elems(spec=self.spec, view=out, root=self.root)
        return Elems(fn(self.tensor()), spec=self.spec)

    def reshape(self, *shape) -> Elems:
        return self.apply(lambda t: t.reshape(*shape))

    def expand(self, *shape) -> Elems:
        return self.apply(lambda t: t.expand(*shape))

    def transpose(self, a: int, b: int) -> Elems:
        return self.apply(lambda t: t.transpose(a, b))

    def t(self) -> Elems:
        return self.apply(lambda t: t.t())

    def unsqueeze(self, dim: int) -> Elems:
        return self.apply(lambda t: t.unsqueeze(dim))

    def __getitem__(self, key) -> Elems:
        return self.apply(lambda t: t[key])

    # ------------------------------------------------------------------ offsets
    def strided(self) -> tuple[int, tuple[int, ...], tuple[int, ...]] | None:
        """``(offset of element 0, shape, strides)`` in the flat vector, or None when materialized."""
        if self.view is None:
            return None
        return self.spec.offset + self.view.storage_offset(), tuple(self.view.shape), tuple(self.view.stride())

    def tensor(self) -> torch.Tensor:
        """The offsets themselves (int64, shaped like the view)."""
        if self._offsets is None:
            first, shape, strides = self.strided()
            out = torch.full(shape, first, dtype=torch.long)
            for d, (n, st) in enumerate(zip(shape, strides)):
                if n > 1 and st:
                    out += (torch.arange(n) * st).reshape([-1 if j == d else 1 for j in range(len(shape))])
            self._offsets = out
        return self._offsets

    def first(self) -> int:
        """Offset of the first element."""
        s = self.strided()
        return s[0] if s is not None else int(self._offsets.reshape(-1)[0])

    def step(self, dim: int) -> int:
        """Offset difference between index 1 and index 0 along ``dim`` (the other indices 0)."""
        s = self.strided()
        if s is not None:
            return s[2][dim]
        t = self._offsets
        return int(t.select(dim, 1).reshape(-1)[0] - t.reshape(-1)[0])

    def varies(self, dim: int) -> bool:
        """Whether the offsets change along ``dim`` (an expanded parameter does not)."""
        if self.shape[dim] <= 1:
            return False
        s = self.strided()
        if s is not None:
            return s[2][dim] != 0
        t = self._offsets
        return not bool((t == t.narrow(dim, 0, 1)).all())

    def covers_spec(self) -> bool:
        """Symbolic, and every element of its parameter exactly once."""
        s = self.strided()
        if s is None or prod(s[1]) != self.spec.numel or s[0] != self.spec.offset:
            return False
        dims = sorted((st, n) for n, st in zip(s[1], s[2]) if n > 1)
        expect = 1
        for st, n in dims:
            if st != expect:
                return False
            expect *= n
        return True

    def __repr__(self) -> str:
        s = self.strided()
        if s is not None:
            return f"Elems({self.spec.name}, offset={s[0]}, shape={s[1]}, strides={s[2]})"
        return f"Elems(materialized, shape={tuple(self._offsets.shape)})"
