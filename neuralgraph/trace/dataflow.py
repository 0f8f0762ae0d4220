"""Running a recorded forward through the op rules: the state rules read and write.

:class:`Dataflow` holds the :mod:`~neuralgraph.trace.values` of every tensor seen so far and the
:class:`~neuralgraph.trace.relations.Relations` collected, and gives rules the few operations
they share: reading a tensor's value, giving a data tensor neurons along a dimension (a model
input meeting its first layer), attaching a parameter elementwise to neurons (biases, norm
scales, position tables), and the conservative fallback for ops without a rule.
"""

from __future__ import annotations

import logging
from collections import Counter

import torch
from torch.utils._pytree import tree_flatten

from .. import edge_types as et
from ..errors import UnsupportedModelError
from ..params import ParamSpec
from .record import Trace
from .relations import DenseRelation, PairedRelation, Relations
from .elems import Elems
from .values import Data, Params, Units, Value
from .rows import unique_rows

__all__ = ["Dataflow", "TraceError"]

log = logging.getLogger(__name__)


class TraceError(UnsupportedModelError):
    """The forward does something the traced converter cannot turn into a correct graph."""


def _tensors(obj) -> list[torch.Tensor]:
    return [t for t in tree_flatten(obj)[0] if isinstance(t, torch.Tensor)]


class Dataflow:
    """Values of the traced tensors and the relations collected from them."""

    def __init__(self, trace: Trace, specs: list[ParamSpec]) -> None:
        self.trace = trace
        self.rel = Relations()
        self.values: dict[int, Value] = {}
        self.uses: Counter[int] = Counter()
        for op in trace.ops:
            for t in _tensors((op.args, op.kwargs)):
                self.uses[id(t)] += 1
            if op.name == "aten.index_add_":  # adding rows into a tensor in place (experts' outputs) is no read of it
                self.uses[id(op.args[0])] -= 1
        offsets = {s.name: s for s in specs}
        self._param_base: dict[int, ParamSpec] = {k: offsets[name] for k, name in trace.params.items()}
        self._inputs = {id(t) for t in trace.inputs}
        self._bias_nodes: dict[str, torch.Tensor] = {}
        self._row_groups: dict[tuple[str, int], torch.Tensor] = {}
        self.op_name = ""
        self.stale: set[int] = set()  # bases of views changed in place
        self.partial: dict[int, torch.Tensor] = {}  # bases being filled slice by slice: neuron ids, -1 unwritten
        self.kv_head: dict[int, int] = {}  # query head node -> its key/value head node

    # ------------------------------------------------------------------ values
    def value(self, t) -> Value | None:
        if not isinstance(t, torch.Tensor):
            return None
        v = self.values.get(id(t))
        if v is not None:
            return v
        spec = self._param_base.get(id(t))
        if spec is not None:
            v = Params(Elems.of(spec))
        elif id(t) in self._inputs:
            v = Data("input")
        else:
            v = Data("const", self.trace.buffers.get(id(t)))
        self.values[id(t)] = v
        return v

    def set(self, t, v: Value) -> None:
        if isinstance(t, torch.Tensor):
            self.values[id(t)] = v

    def param_name(self, offset: int) -> str:
        for spec in self._param_base.values():
            if spec.offset <= offset < spec.offset + spec.numel:
                return spec.name
        return f"<offset {offset}>"

    def params_named(self, p: Params) -> str:
        return f"'{self.param_name(p.idx.first())}'"

    # ------------------------------------------------------------------ neurons
    def units_along(self, t: torch.Tensor, dim: int, role: str = "input") -> Units:
        """The value of ``t`` as neurons; a data tensor gets new neurons along ``dim`` (a model
        input read by its first layer), which may never be permuted."""
        v = self.value(t)
        if isinstance(v, Units):
            return v
        if isinstance(v, Params):
            raise TraceError(
                f"{self.op_name}: parameter {self.params_named(v)} is used as an activation; the traced converter "
                "cannot tell which neurons it belongs to"
            )
        dim %= t.ndim
        size = t.shape[dim]
        kind = "input" if v.origin == "input" else "computed input"
        # a constant of equal elements (a zero initial state) tells no neuron apart: ordinary neurons
        ids = self.rel.allocate(size, "hidden" if v.uniform else "input", f"{kind} of {self.op_name}")
        if not v.uniform:  # a constant of equal elements (a zero initial state) tells no neuron apart
            self.rel.fix(ids, "a model input" if v.origin == "input" else "a value computed without parameters")
        shape = [1] * t.ndim
        shape[dim] = size
        u = Units(ids.reshape(shape).expand(t.shape).clone())
        self.set(t, u)
        return u

    @staticmethod
    def along(ids: torch.Tensor, dim: int, what: str) -> torch.Tensor:
        """The neurons of ``ids`` along ``dim``, which must not change along any other dimension."""
        dim %= ids.ndim
        rows = ids.movedim(dim, -1).reshape(-1, ids.shape[dim])
        if rows.shape[0] > 1 and not bool((rows == rows[:1]).all()):
            raise TraceError(f"{what}: the neurons along dimension {dim} differ between positions of the other dimensions")
        return rows[0].clone()

    @staticmethod
    def varies(ids: torch.Tensor, dim: int) -> bool:
        if ids.shape[dim] <= 1:
            return False
        return not bool((ids == ids.narrow(dim, 0, 1)).all())

    def is_head(self, unit: int) -> bool:
        """Whether ``unit`` is a head node (attention weights carry head ids)."""
        for a in reversed(self.rel.allocations):
            if a.start <= unit < a.start + a.size:
                return a.role == "head"
        return False

    def bias_node(self, name: str) -> torch.Tensor:
        """The single node of a 1-D parameter (one per parameter, whatever it is attached to)."""
        node = self._bias_nodes.get(name)
        if node is None:
            node = self.rel.allocate(1, "bias", name)
            self._bias_nodes[name] = node
        return node

    def row_group(self, name: str, rows: int, role: str) -> torch.Tensor:
        """One node per row of an embedding-like table (tokens, positions), one set per table."""
        key = (name, rows)
        ids = self._row_groups.get(key)
        if ids is None:
            ids = self.rel.allocate(rows, role, name)
            if role in ("token", "position"):
                self.rel.fix(ids, f"{role}s of '{name}'")
            self._row_groups[key] = ids
        return ids

    def attach(self, p: Params, units: Units, shape, edge_type: int) -> None:
        """Parameter ``p`` acts elementwise on the neurons ``units`` (broadcast to ``shape``): a
        bias, a norm or layer scale, a position table added to a stream."""
        elems, ids = p.idx.expand(shape), units.ids.expand(shape)
        # axes along which neither the parameter nor the neurons change (batch, sequence) repeat
        # the same pairs: keep one slice of each before looking at pairs
        first = tuple(slice(0, 1) if n > 1 and not elems.varies(d) and not self.varies(ids, d) else slice(None)
                      for d, n in enumerate(shape))
        idx, ids = elems[first].tensor().reshape(-1), ids[first].reshape(-1)
        pairs = unique_rows(torch.stack([idx, ids], 1))  # sorted by element, then neuron
        elem, unit = pairs[:, 0], pairs[:, 1]
        per_elem = torch.bincount(elem - elem.min())
        name = self.param_name(int(elem[0]))
        if bool((per_elem[per_elem > 0] > 1).any()):
            # one value shared by several neurons (a scalar gain): an edge of its own that moves with none
            if elem.unique().numel() != 1:
                self._attach_shared(p, name, elem, unit, edge_type)
                return
            target = self.rel.allocate(1, "bias", f"{name}:target")
            self.rel.fix(target, "target of a shared scalar parameter")
            self.rel.dense.append(DenseRelation(self.bias_node(name), target, p.idx.materialized(elem[:1].reshape(1, 1, 1)), edge_type, name))
            return
        units_sorted, counts = unit.unique(return_counts=True)
        c = int(counts[0])
        if not bool((counts == c).all()):
            raise TraceError(f"{self.op_name}: parameter '{name}' reaches its neurons unevenly")
        order = torch.argsort(unit * (elem.max() + 1) + elem)  # by neuron, then element
        grid = elem[order].reshape(-1, c)  # [neuron, k]
        if c == 1:
            self.rel.dense.append(DenseRelation(self.bias_node(name), units_sorted, p.idx.materialized(grid.reshape(1, -1, 1)), edge_type, name))
        else:  # the parameter also varies along data positions: one node per position
            positions = self.row_group(name, c, "position")
            etype = et.POSITION_EMBEDDING if edge_type == et.BIAS else edge_type
            self.rel.dense.append(DenseRelation(positions, units_sorted, p.idx.materialized(grid.t().unsqueeze(-1)), etype, name))

    def _attach_shared(self, p: Params, name: str, elem: torch.Tensor, unit: torch.Tensor, edge_type: int) -> None:
        """Each element of ``p`` scales several neurons, each neuron one element (QK-norm's gain over
        head dimensions, shared by every head): one fixed node per element holds its value on an edge
        from the parameter's node, auxiliary edges reach the neurons it scales, and those neurons are
        labelled by element, so only neurons sharing an element may be exchanged."""
        if unit.unique().numel() != unit.numel():
            raise TraceError(f"{self.op_name}: parameter '{name}' reaches some neurons through several elements and "
                             "others through the same element: the graph cannot hold that sharing")
        first = int(elem.min())
        slots = torch.unique(elem)
        coords = self.rel.allocate(slots.numel(), "coordinate", f"{name}:elements")
        self.rel.fix(coords, f"elements of '{name}', shared by several neurons")
        self.rel.dense.append(DenseRelation(self.bias_node(name), coords, p.idx.materialized(slots.reshape(1, -1, 1)), edge_type, name))
        slot_of = torch.searchsorted(slots, elem.contiguous())
        self.rel.paired.append(PairedRelation(coords[slot_of], unit, None, et.RESIDUAL, f"{name} (shared)", ties=False))
        self.rel.label(unit, elem - first)

    def opaque(self, op, reason: str) -> None:
        """No rule: every neuron the op reads is fixed (conservative) and its results are data."""
        self.rel.opaque_ops[op.name] = self.rel.opaque_ops.get(op.name, 0) + 1
        for t in _tensors((op.args, op.kwargs)):
            v = self.value(t)
            if isinstance(v, Params):
                raise TraceError(
                    f"parameter {self.params_named(v)} goes through {op.name}, which the traced converter has no rule for "
                    f"({reason}); add one (docs/converters.md, 'Adding a rule') or register a hand-written converter"
                )
            if isinstance(v, Units):
                self.rel.fix(v.ids, f"read by {op.name} ({reason})")
        for t in _tensors(op.out):
            self.set(t, Data("const"))
        log.debug("traced converter: no rule for %s (%s); the neurons it reads are kept fixed", op.name, reason)
