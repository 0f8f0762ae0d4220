"""The :class:`NeuralGraph`: node groups + edge blocks, and everything derived from them.

The graph is stored compactly as groups and blocks; ``edge_index``, ``edge_type``, edge
features and positional encodings are derived with vectorized tensor operations (one pass per
block, never per edge or neuron). Parameters move between flat vectors and edge features through
strided views, so the mapping is exact in both directions.
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from . import edge_types as et
from .block_features import BlockFeatures, pack, unpack
from .blocks import DENSE, DIAGONAL, STAR, EdgeBlock
from .errors import GraphConstructionError, NonFiniteError, ParameterMismatchError
from .groups import NodeGroup
from .kernel_split import split_kernels
from .lpe import Connection, laplacian_pe
from .params import ParamSpec, check_finite
from .subgraph import layer_subgraphs, subgraph
from .symmetry import Permutable, PermutableHeads

__all__ = ["NeuralGraph", "UnitBuffer"]

log = logging.getLogger(__name__)

_EXACT_COVERAGE_LIMIT = 1 << 28  # parameters larger than this get a count check instead


@dataclass(frozen=True)
class UnitBuffer:
    """A model buffer with one entry per unit of a node group (BatchNorm running statistics).

    It is not a parameter (not on any edge) but must move with the units when they are permuted.
    """

    name: str
    group: str
    dim: int = 0


@dataclass(eq=False)
class NeuralGraph:
    """A neural network as a graph of neurons (``docs/design.md``, "Graph semantics").

    Built by converters through :class:`~neuralgraph.builder.GraphBuilder`; users get one from
    :func:`neuralgraph.convert`.
    """

    groups: tuple[NodeGroup, ...]
    blocks: tuple[EdgeBlock, ...]
    params: tuple[ParamSpec, ...]
    symmetries: tuple[Permutable | PermutableHeads, ...] = ()
    buffers: tuple[UnitBuffer, ...] = ()
    arch: str = "custom"
    lpe: int = 8
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.groups = tuple(self.groups)
        self.blocks = tuple(self.blocks)
        self.params = tuple(self.params)
        self.symmetries = tuple(self.symmetries)
        self.buffers = tuple(self.buffers)
        if self.lpe < 0:
            raise ValueError(f"lpe must be >= 0 (number of positional-encoding columns), got {self.lpe}")
        self._group_by_name = {g.name: g for g in self.groups}
        self._validate()

    # ------------------------------------------------------------------ sizes
    @property
    def num_nodes(self) -> int:
        return self.groups[-1].stop if self.groups else 0

    @property
    def num_edges(self) -> int:
        return self.blocks[-1].edge_stop if self.blocks else 0

    @property
    def num_params(self) -> int:
        return sum(p.numel for p in self.params)

    @cached_property
    def max_feat_size(self) -> int:
        return max((b.feat_size for b in self.blocks), default=1)

    @property
    def param_names(self) -> list[str]:
        """Parameter names in flat-vector order."""
        return [p.name for p in self.params]

    def group(self, name: str) -> NodeGroup:
        try:
            return self._group_by_name[name]
        except KeyError:
            raise KeyError(f"no node group '{name}'; groups: {', '.join(self._group_by_name)}") from None

    def block(self, name: str) -> EdgeBlock:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(f"no edge block '{name}'")

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        expected = 0
        for g in self.groups:
            if g.start != expected or g.size < 0:
                raise GraphConstructionError(f"node group '{g.name}' does not continue the node ids at {expected}")
            expected = g.stop
        if len(self._group_by_name) != len(self.groups):
            raise GraphConstructionError("node group names must be unique")
        n = self.num_nodes
        edge = 0
        for b in self.blocks:
            where = b.describe()
            if b.edge_start != edge:
                raise GraphConstructionError(f"{where}: edges must be numbered consecutively")
            edge = b.edge_stop
            for r in (b.src, b.dst):
                if r.start < 0 or r.stop > n or r.size < 0:
                    raise GraphConstructionError(f"{where}: node range outside the graph")
            if b.kind == STAR and b.src.size != 1:
                raise GraphConstructionError(f"{where}: a star block needs exactly one source node")
            if b.kind == DIAGONAL and b.src.size != b.dst.size:
                raise GraphConstructionError(
                    f"{where}: a diagonal block needs ranges of equal size ({b.src.size} vs {b.dst.size})"
                )
            if b.kind not in (DENSE, STAR, DIAGONAL):
                raise GraphConstructionError(f"{where}: unknown block kind '{b.kind}'")
            if b.view is not None:
                want = (b.src.size, b.dst.size) if b.kind == DENSE else (b.dst.size,)
                if b.view.shape[:-1] != want:
                    raise GraphConstructionError(
                        f"{where}: parameter view has shape {b.view.shape[:-1]} but the block needs {want}"
                    )
            elif b.edge_type in et.PARAMETER_TYPES:
                raise GraphConstructionError(f"{where}: edge type {et.name(b.edge_type)} needs parameter values")
        self._check_coverage()

    def _check_coverage(self) -> None:
        """Every parameter element sits on exactly one edge feature slot."""
        by_param: dict[str, list[EdgeBlock]] = {}
        for b in self.blocks:
            if b.view is not None:
                for part in b.view.parts:
                    by_param.setdefault(part.name, []).append(part)
        for spec in self.params:
            views = by_param.pop(spec.name, [])
            count = sum(v.numel for v in views)
            if count != spec.numel:
                raise GraphConstructionError(
                    f"parameter '{spec.name}' {spec.shape} has {spec.numel} values but the graph's blocks "
                    f"place {count} of them"
                )
            lo, hi = spec.offset, spec.offset + spec.numel
            for v in views:
                first = v.offset
                last = v.offset + sum((s - 1) * st for s, st in zip(v.shape, v.strides))
                if v.numel and (first < lo or last >= hi or min(v.strides) < 0):
                    raise GraphConstructionError(f"a block's view of parameter '{spec.name}' leaves the parameter")
            if 0 < spec.numel <= _EXACT_COVERAGE_LIMIT and views:
                # count hits through the strided views themselves (no index tensors); the counts add
                # up to numel, so any element placed twice leaves another at 0
                hits = torch.zeros(spec.numel, dtype=torch.uint8)
                for v in views:
                    torch.as_strided(hits, v.shape, v.strides, v.offset - spec.offset).add_(1)
                if not bool((hits == 1).all()):
                    bad = int(torch.nonzero(hits != 1)[0])
                    raise GraphConstructionError(
                        f"parameter '{spec.name}': element {bad} is placed on {int(hits[bad])} edges (must be 1)"
                    )
        if by_param:
            raise GraphConstructionError(f"blocks refer to unknown parameters: {', '.join(by_param)}")

    # ------------------------------------------------------------------ structure
    @cached_property
    def edge_index(self) -> torch.Tensor:
        """``[2, E]`` int64 source/target node ids, derived block by block."""
        out = torch.empty(2, self.num_edges, dtype=torch.int64)
        for b in self.blocks:
            src, dst = out[0, b.edge_start : b.edge_stop], out[1, b.edge_start : b.edge_stop]
            if b.kind == DENSE:
                ns, nd = b.src.size, b.dst.size
                src.view(ns, nd).copy_(torch.arange(b.src.start, b.src.stop).unsqueeze(1).expand(ns, nd))
                dst.view(ns, nd).copy_(torch.arange(b.dst.start, b.dst.stop).unsqueeze(0).expand(ns, nd))
            else:
                if b.kind == STAR:
                    src.fill_(b.src.start)
                else:
                    torch.arange(b.src.start, b.src.stop, out=src)
                torch.arange(b.dst.start, b.dst.stop, out=dst)
        return out

    @cached_property
    def edge_type(self) -> torch.Tensor:
        """``[E]`` int64 edge types (see :mod:`neuralgraph.edge_types`)."""
        out = torch.empty(self.num_edges, dtype=torch.int64)
        for b in self.blocks:
            out[b.edge_start : b.edge_stop] = b.edge_type
        return out

    @cached_property
    def pos_w(self) -> torch.Tensor:
        """``[N]`` int64: token id + 1 for vocabulary nodes, else 0."""
        out = torch.zeros(self.num_nodes, dtype=torch.int64)
        for g in self.groups:
            if g.tokens:
                torch.arange(1, g.size + 1, out=out[g.start : g.stop])
        return out

    def connections(self):
        """The graph's structure as :class:`neuralgraph.lpe.Connection` ranges (no self-loops; the
        later parts of a split kernel repeat their first part's connection and are left out, so a
        split graph has the positional encodings of the unsplit one)."""
        return [
            Connection("diagonal" if b.kind == DIAGONAL else "dense", b.src.start, b.src.size, b.dst.start, b.dst.size)
            for b in self.blocks
            if b.edge_type != et.SELF_LOOP and b.slot_offset == 0
        ]

    @cached_property
    def pos(self) -> torch.Tensor | None:
        """``[N, lpe]`` float32 Laplacian positional encodings, or None when ``lpe == 0``."""
        if self.lpe == 0:
            return None
        return laplacian_pe(self.num_nodes, self.connections(), self.lpe).pos

    # ------------------------------------------------------------------ parameters <-> edges
    def _as_states(self, states: torch.Tensor) -> torch.Tensor:
        if not isinstance(states, torch.Tensor):
            raise ParameterMismatchError(f"expected a tensor of parameters, got {type(states).__name__}")
        if states.ndim == 1:
            states = states.unsqueeze(1)
        if states.ndim != 2 or states.shape[0] != self.num_params:
            raise ParameterMismatchError(
                f"expected parameters of shape [{self.num_params}] or [{self.num_params}, T] for this "
                f"{self.arch} graph, got {tuple(states.shape)}"
            )
        if not states.is_floating_point():
            states = states.to(torch.get_default_dtype())
        return states.contiguous()

    def edge_features(
        self, states: torch.Tensor, *, check: bool = True, packed: bool = False
    ) -> torch.Tensor | BlockFeatures:
        """Edge features ``[E, max_feat_size * T]`` of a vector ``[P]`` or stack ``[P, T]``.

        Column ``f * T + t`` holds feature slot ``f`` of state ``t``; slots beyond a block's
        kernel are zero; auxiliary edges hold their fixed value in slot 0 of every state.

        ``packed=True`` returns :class:`~neuralgraph.block_features.BlockFeatures` instead: each
        block only as wide as its own kernel, so memory is ``(parameters + auxiliary edges) * T``
        however wide the widest kernel is (:meth:`to_params` reads both).

        Raises :class:`~neuralgraph.errors.NonFiniteError` (a ``ValueError``) naming the parameter,
        its flat index and the state when ``states`` hold NaN or Inf; ``check=False`` skips that
        test (one ``isfinite`` pass over ``states``).
        """
        states = self._as_states(states)
        if check:
            check_finite(states if states.shape[1] > 1 else states[:, 0], self.params, "edge_features")
        if packed:
            return pack(self, states)
        steps = states.shape[1]
        width = self.max_feat_size * steps
        out = torch.zeros(self.num_edges, width, dtype=states.dtype, device=states.device)
        for b in self.blocks:
            rows = out[b.edge_start : b.edge_stop]
            if b.view is None:
                rows[:, :steps] = b.value
            else:
                k = b.feat_size
                rows[:, : k * steps] = b.view.read_states(states).reshape(b.num_edges, k * steps)
        return out

    def to_params(
        self, edge_features: torch.Tensor | BlockFeatures, state: int | None = None, *, check: bool = True
    ) -> torch.Tensor:
        """Parameters read back out of edge features: the inverse of :meth:`edge_features`.

        Args:
            edge_features: ``[E, max_feat_size * T]``, laid out as :meth:`edge_features` returns,
                or the :class:`~neuralgraph.block_features.BlockFeatures` of ``packed=True``.
            state: which of the ``T`` states to read, giving a vector ``[P]``. None (default):
                every state, ``[P]`` when the features hold one and ``[P, T]`` when they hold a
                stack, so ``to_params(edge_features(x))`` equals ``x`` for ``x`` of shape
                ``[P]`` or ``[P, T]`` with ``T > 1``.
            check: raise :class:`~neuralgraph.errors.NonFiniteError` (a ``ValueError``) naming
                the parameter, its flat index, the edge and the state when a value read back is
                NaN or Inf (slots outside the parameters are never read, so never checked).

        Raises:
            ParameterMismatchError: the features are not ``[E, max_feat_size * T]`` for this graph
                (or block features of another graph), or ``state`` is outside ``0..T-1``.
        """
        if isinstance(edge_features, BlockFeatures):
            steps = edge_features.steps
            state = self._pick_state(state, steps, f"block features of {steps} state(s)")
            out = unpack(self, edge_features, state)
        else:
            steps = self._feature_steps(edge_features)
            state = self._pick_state(state, steps, f"edge features of shape {tuple(edge_features.shape)}")
            out = self._dense_to_params(edge_features, steps, state)
        if check:
            self._check_read_back(out, steps, state)
        return out

    def _feature_steps(self, edge_features) -> int:
        """States held by a dense feature matrix, after checking its shape."""
        if (
            not isinstance(edge_features, torch.Tensor)
            or edge_features.ndim != 2
            or edge_features.shape[0] != self.num_edges
            or edge_features.shape[1] % self.max_feat_size
        ):
            shape = tuple(edge_features.shape) if isinstance(edge_features, torch.Tensor) else type(edge_features)
            hint = ""
            if isinstance(edge_features, torch.Tensor) and edge_features.ndim and edge_features.shape[0] == self.num_params:
                hint = " (these look like parameters [P] / [P, T]: pass them to edge_features first)"
            raise ParameterMismatchError(
                f"expected edge features of shape [{self.num_edges}, {self.max_feat_size}*T] for this {self.arch} "
                f"graph ({self.num_edges} edges, {self.max_feat_size} feature slots per state), got {shape}{hint}"
            )
        return edge_features.shape[1] // self.max_feat_size

    @staticmethod
    def _pick_state(state, steps: int, what: str) -> int | None:
        if state is None:
            return None
        try:
            state = operator.index(state)  # Python, NumPy or 0-d torch integers
        except TypeError:
            raise ParameterMismatchError(f"state must be an integer or None, got {state!r}") from None
        if not -steps <= state < steps:
            raise ParameterMismatchError(f"state {state} out of range: {what} hold {steps} state(s)")
        return state % steps

    def _dense_to_params(self, edge_features: torch.Tensor, steps: int, state: int | None) -> torch.Tensor:
        if state is None and steps > 1:
            out = torch.empty(self.num_params, steps, dtype=edge_features.dtype, device=edge_features.device)
            for b in self.blocks:
                if b.view is not None:
                    rows = edge_features[b.edge_start : b.edge_stop, : b.feat_size * steps]
                    b.view.write_states(out, rows.reshape(b.view.shape + (steps,)))
            return out
        pick = state or 0
        out = torch.empty(self.num_params, dtype=edge_features.dtype, device=edge_features.device)
        for b in self.blocks:
            if b.view is not None:
                k = b.feat_size
                rows = edge_features[b.edge_start : b.edge_stop, : k * steps].reshape(b.num_edges, k, steps)
                b.view.write(out, rows[:, :, pick].reshape(b.view.shape))
        return out

    def _check_read_back(self, values: torch.Tensor, steps: int, state: int | None) -> None:
        """:func:`check_finite` on what :meth:`to_params` read, naming the edge of the bad value."""
        try:
            check_finite(values, self.params, "to_params")
        except NonFiniteError as err:
            t = err.state if err.state is not None else (state or 0)
            spec = next(p for p in self.params if p.name == err.name)
            edge, slot = self._edge_of(spec.offset + err.index)
            where = f"edge {edge}, feature slot {slot}, column {slot * steps + t}"
            if err.state is None and steps > 1:
                where += f", state {t} of {steps}"
            raise NonFiniteError(
                f"{err} (read from {where})", name=err.name, index=err.index, state=t if steps > 1 else err.state
            ) from None

    def _edge_of(self, position: int) -> tuple[int, int]:
        """Edge and feature slot holding flat-vector position ``position`` (slow: error paths only)."""
        for b in self.blocks:
            if b.view is None:
                continue
            start = 0
            for part in b.view.parts:
                if part.numel:
                    hit = torch.nonzero(part.flat_indices() == position)
                    if len(hit):
                        lead, slot = hit[0, :-1].tolist(), int(hit[0, -1])
                        row = 0
                        for size, i in zip(part.shape[:-1], lead):
                            row = row * size + i
                        return b.edge_start + row, start + slot
                start += part.shape[-1]
        raise KeyError(position)  # coverage is checked at construction: never reached

    # ------------------------------------------------------------------ parts
    def subgraph(self, param_names, *, lpe: int | None = None) -> "NeuralGraph":
        """The graph of some parameters only (see :func:`neuralgraph.subgraph.subgraph`)."""
        return subgraph(self, param_names, lpe=lpe)

    def split_kernels(self, max_slots: int) -> "NeuralGraph":
        """This graph with kernels wider than ``max_slots`` split over parallel edges (see
        :func:`neuralgraph.kernel_split.split_kernels`); ``self`` when no edge is wider."""
        return split_kernels(self, max_slots)

    def layers(self, *, lpe: int | None = None) -> list["NeuralGraph"]:
        """One graph per transformer block / layer, then the rest (see :func:`layer_subgraphs`)."""
        return layer_subgraphs(self, lpe=lpe)

    def param_slices(self) -> dict[str, slice]:
        """Where each parameter sits in the flat vector."""
        return {p.name: slice(p.offset, p.offset + p.numel) for p in self.params}

    def block_table(self) -> torch.Tensor:
        """``[B, 8]`` int64, one row per edge block: edge start, edge count, source start, source
        count, target start, target count, kind (0 dense, 1 star, 2 diagonal) and edge type —
        what block-aware consumers (NiNo's streamed forward) need instead of ``edge_index``."""
        kinds = {DENSE: 0, STAR: 1, DIAGONAL: 2}
        return torch.tensor(
            [[b.edge_start, b.num_edges, b.src.start, b.src.size, b.dst.start, b.dst.size, kinds[b.kind], b.edge_type]
             for b in self.blocks],
            dtype=torch.int64,
        ).reshape(-1, 8)

    # ------------------------------------------------------------------ exports
    def to_pyg(self, states: torch.Tensor | None = None):
        """A ``torch_geometric.data.Data`` with edge_index, edge_type, pos, pos_w, num_nodes,
        ``blocks`` (:meth:`block_table`) and, given states ``[P]`` or ``[P, T]``, ``edge_attr``."""
        from torch_geometric.data import Data

        data = Data(
            edge_index=self.edge_index,
            edge_type=self.edge_type,
            pos=self.pos,
            pos_w=self.pos_w,
            num_nodes=self.num_nodes,
        )
        data.blocks = self.block_table()
        if states is not None:
            data.edge_attr = self.edge_features(states)
        return data

    def to_networkx(self, states: torch.Tensor | None = None):
        """A ``networkx.MultiDiGraph``: nodes carry group, role and pos_w; edges carry
        edge_type, block and (given states) their feature vector."""
        import networkx as nx

        graph = nx.MultiDiGraph(arch=self.arch)
        pos_w = self.pos_w.tolist()
        for g in self.groups:
            graph.add_nodes_from(
                (i, {"group": g.name, "role": g.role, "pos_w": pos_w[i]}) for i in range(g.start, g.stop)
            )
        src, dst = self.edge_index.tolist()
        types = self.edge_type.tolist()
        names = [b.name for b in self.blocks for _ in range(b.num_edges)]
        if states is None:
            attrs = ({"edge_type": t, "block": n} for t, n in zip(types, names))
        else:
            feats = self.edge_features(states).tolist()
            attrs = ({"edge_type": t, "block": n, "feat": f} for t, n, f in zip(types, names, feats))
        graph.add_edges_from((s, d, a) for s, d, a in zip(src, dst, attrs))
        return graph

    # ------------------------------------------------------------------ reporting
    def group_degrees(self) -> dict[str, tuple[int, int]]:
        """Per group: (incoming edges, outgoing edges), counted from the blocks."""
        counts = {g.name: [0, 0] for g in self.groups}
        for b in self.blocks:
            if b.edge_type == et.SELF_LOOP:
                for g in self.groups:
                    counts[g.name][0] += g.size
                    counts[g.name][1] += g.size
                continue
            counts[b.dst.group][0] += b.num_edges
            counts[b.src.group][1] += b.num_edges
        return {k: (v[0], v[1]) for k, v in counts.items()}

    def edge_type_counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for b in self.blocks:
            counts[b.edge_type] = counts.get(b.edge_type, 0) + b.num_edges
        return dict(sorted(counts.items()))

    def summary(self) -> str:
        """A per-group table of nodes and edges, then totals and edge-type counts."""
        permutable = {}
        for s in self.symmetries:
            for name in s.groups:
                kind = "within heads" if s.segments > 1 else ("whole heads" if hasattr(s, "heads") else "yes")
                permutable[name] = f"{permutable[name]}, {kind}" if name in permutable else kind
        degrees = self.group_degrees()
        rows = [("group", "role", "nodes", "in-edges", "out-edges", "permutable")]
        for g in self.groups:
            i, o = degrees[g.name]
            rows.append((g.name, g.role, str(g.size), str(i), str(o), permutable.get(g.name, "-")))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = [
            "  ".join(cell.ljust(w) if c < 2 else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths)))
            for r in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        types = ", ".join(f"{et.name(t)}={n}" for t, n in self.edge_type_counts().items())
        lines.append("-" * len(lines[0]))
        lines.append(
            f"{self.arch}: {self.num_nodes} nodes, {self.num_edges} edges, {self.num_params} parameters, "
            f"max_feat_size {self.max_feat_size}"
        )
        lines.append(f"edge types: {types}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"NeuralGraph(arch={self.arch!r}, num_nodes={self.num_nodes}, num_edges={self.num_edges}, "
            f"num_params={self.num_params}, max_feat_size={self.max_feat_size}, groups={len(self.groups)}, "
            f"blocks={len(self.blocks)})"
        )
