"""The facts the traced converter collects about neurons, before any graph exists.

Rules add facts element by element (as index tensors, never one Python object per neuron):
which neurons exist and where they came from (:class:`Allocation`), which parameter elements
connect which neurons (:class:`DenseRelation`, :class:`PairedRelation`), which neurons are the
same neuron (``merges``), which must be permuted alike (auxiliary paired relations), which may
not move or only with others of the same label (``fixed`` / ``labels``), and which are reduced
together (``reductions``: a norm or softmax over them is invariant only to permutations inside
each set). :mod:`neuralgraph.trace.emit` turns them into node groups, edge blocks and symmetries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .elems import Elems
from .rows import unique_rows


__all__ = ["Allocation", "DenseRelation", "PairedRelation", "Relations"]


@dataclass
class Allocation:
    """``size`` consecutive neuron ids from ``start``, created by one op for one role."""

    start: int
    size: int
    role: str
    name: str


@dataclass
class DenseRelation:
    """Every ``src`` neuron to every ``dst`` neuron; ``elems[s, d, k]`` is the flat-vector offset
    of feature slot ``k`` of edge (src[s], dst[d]), usually a strided view costing no memory
    (``elems is None`` for auxiliary edges)."""

    src: torch.Tensor
    dst: torch.Tensor
    elems: Elems | None
    edge_type: int
    name: str


@dataclass
class PairedRelation:
    """``src[i]`` to ``dst[i]``; ``elems[i, k]`` as for :class:`DenseRelation`, or None for an
    auxiliary edge with a fixed value (residual sums, head membership, GQA pairs)."""

    src: torch.Tensor
    dst: torch.Tensor
    elems: Elems | None
    edge_type: int
    name: str
    ties: bool = True  # src and dst must be permuted alike (False: head membership)


@dataclass
class Relations:
    num_units: int = 0
    allocations: list[Allocation] = field(default_factory=list)
    dense: list[DenseRelation] = field(default_factory=list)
    paired: list[PairedRelation] = field(default_factory=list)
    merges: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    fixed: list[tuple[torch.Tensor, str]] = field(default_factory=list)
    labels: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    reductions: list[torch.Tensor] = field(default_factory=list)
    roles: list[tuple[torch.Tensor, str]] = field(default_factory=list)
    buffers: list[tuple[str, torch.Tensor]] = field(default_factory=list)
    symmetry_ties: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    opaque_ops: dict[str, int] = field(default_factory=dict)
    # mixture of experts (:mod:`neuralgraph.trace.experts`): the neurons a ``topk`` picks among
    # (a router), and per use of one slice of a stacked expert parameter ``(parameter, slices,
    # slice, routers seen before, neurons it creates)``; buffers added along neurons ``(name, neurons)``
    routers: list[torch.Tensor] = field(default_factory=list)
    expert_slices: list[tuple[str, int, int, int, torch.Tensor]] = field(default_factory=list)
    buffers_along: list[tuple[str, torch.Tensor]] = field(default_factory=list)

    def allocate(self, size: int, role: str, name: str) -> torch.Tensor:
        """``size`` new neuron ids."""
        start = self.num_units
        self.allocations.append(Allocation(start, int(size), role, name))
        self.num_units += int(size)
        return torch.arange(start, start + int(size))

    def fix(self, units: torch.Tensor, reason: str) -> None:
        """These neurons may not be permuted (model inputs and outputs, order-dependent ops)."""
        if units.numel():
            self.fixed.append((units.reshape(-1).unique(), reason))

    def label(self, units: torch.Tensor, coords: torch.Tensor) -> None:
        """Neuron ``units[i]`` sits at coordinate ``coords[i]`` of something that is not permuted
        with it (RoPE frequencies, a constant table): only neurons of equal labels may swap."""
        self.labels.append((units.reshape(-1), coords.reshape(-1)))

    def merge(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """``a[i]`` and ``b[i]`` are one neuron (a parameter used twice, q/k units of one dot product)."""
        a, b = a.reshape(-1), b.reshape(-1)
        keep = a != b
        if bool(keep.any()):
            self.merges.append((a[keep], b[keep]))

    def reduce(self, sets: torch.Tensor) -> None:
        """Each row of ``sets`` is a set of neurons reduced together (a norm's or softmax's denominator)."""
        sets = sets.reshape(-1, sets.shape[-1]) if sets.ndim else sets.reshape(1, 1)
        if sets.shape[-1] > 1:
            self.reductions.append(unique_rows(sets))
