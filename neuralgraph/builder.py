"""Declarative construction of neural graphs.

Converters describe an architecture with node groups and edge blocks::

    b = GraphBuilder(specs, arch="mlp")
    x = b.group("input", 4, role="input")
    h = b.group("0", 5, role="hidden")
    b.dense(b.param("0.weight"), src=x, dst=h, edge_type=LINEAR)   # weight stored (out, in)
    b.bias(b.param("0.bias"), dst=h)
    b.permutable(h)
    graph = b.build(lpe=8)

Views passed to :meth:`GraphBuilder.dense` are shaped ``(n_dst, n_src, *kernel)`` — PyTorch's
``(out, in, ...)`` layout; pass ``view.t()`` for weights stored ``(in, out)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import edge_types as et
from .blocks import DENSE, DIAGONAL, STAR, EdgeBlock
from .errors import GraphConstructionError
from .graph import NeuralGraph, UnitBuffer
from .groups import ROLES, NodeGroup, NodeRange, as_range
from .params import ParamSpec, ParamView, StackedView
from .symmetry import Permutable, PermutableHeads

__all__ = ["GraphBuilder"]


class GraphBuilder:
    """Collects node groups, edge blocks and symmetries, then builds a :class:`NeuralGraph`."""

    def __init__(self, params: Sequence[ParamSpec], *, arch: str = "custom") -> None:
        self.params = list(params)
        self.arch = arch
        self._specs = {p.name: p for p in self.params}
        self._groups: list[NodeGroup] = []
        self._blocks: list[EdgeBlock] = []
        self._symmetries: list[Permutable | PermutableHeads] = []
        self._buffers: list[UnitBuffer] = []
        self._num_nodes = 0
        self._num_edges = 0
        self.meta: dict = {}
        self.finishers: list = []  # callables NeuralGraph -> NeuralGraph, applied by build() in order

    # ------------------------------------------------------------------ parameters
    def has_param(self, name: str) -> bool:
        return name in self._specs

    def param(self, name: str) -> ParamView:
        """The whole parameter ``name`` as a view (raises naming the parameter if unknown)."""
        try:
            return self._specs[name].view()
        except KeyError:
            raise GraphConstructionError(
                f"{self.arch} converter: the model has no parameter '{name}'"
            ) from None

    # ------------------------------------------------------------------ nodes
    def group(self, name: str, size: int, *, role: str, tokens: bool = False) -> NodeGroup:
        """Append a node group of ``size`` nodes."""
        if role not in ROLES:
            raise GraphConstructionError(f"node group '{name}': unknown role '{role}' (known: {', '.join(ROLES)})")
        if any(g.name == name for g in self._groups):
            raise GraphConstructionError(f"node group '{name}' declared twice")
        if size < 1:
            raise GraphConstructionError(f"node group '{name}' must have at least one node, got {size}")
        g = NodeGroup(name, self._num_nodes, int(size), role, tokens)
        self._groups.append(g)
        self._num_nodes += g.size
        return g

    def bias_node(self, name: str) -> NodeGroup:
        """A single node carrying one 1-D parameter (bias or norm scale) to the units it acts on."""
        return self.group(name, 1, role="bias")

    # ------------------------------------------------------------------ edges
    def _add(self, name, kind, src, dst, edge_type, view=None, value=0.0) -> EdgeBlock:
        block = EdgeBlock(name, kind, as_range(src), as_range(dst), int(edge_type), self._num_edges, view, float(value))
        self._blocks.append(block)
        self._num_edges = block.edge_stop
        return block

    def dense(
        self,
        view: ParamView,
        src: NodeGroup | NodeRange,
        dst: NodeGroup | NodeRange,
        edge_type: int,
        *,
        name: str | None = None,
    ) -> EdgeBlock:
        """Every ``src`` node to every ``dst`` node; ``view`` is ``(n_dst, n_src, *kernel)``.

        A list of ``(n_dst, n_src)`` views stacks them as feature slots of one edge (the naive
        attention graph's ``[W_q, W_k, W_v]``)."""
        src, dst = as_range(src), as_range(dst)
        if isinstance(view, (list, tuple)):
            parts = []
            for v in view:
                if v.shape != (dst.size, src.size):
                    raise GraphConstructionError(
                        f"dense block '{name or v.name}': stacked view {v.shape} must be ({dst.size}, {src.size})"
                    )
                parts.append(v.t().reshape_tail(2))
            return self._add(name or parts[0].name, DENSE, src, dst, edge_type, StackedView(tuple(parts)))
        if view.ndim < 2 or view.shape[:2] != (dst.size, src.size):
            raise GraphConstructionError(
                f"dense block '{name or view.name}': view of shape {view.shape} does not connect "
                f"{src.size} source nodes ({src}) to {dst.size} target nodes ({dst}); expected "
                f"({dst.size}, {src.size}, ...)"
            )
        edges = view.t().reshape_tail(2)
        return self._add(name or view.name, DENSE, src, dst, edge_type, edges)

    def star(
        self, view: ParamView, src: NodeGroup, dst: NodeGroup | NodeRange, edge_type: int, *, name: str | None = None
    ) -> EdgeBlock:
        """One node (``src``, size 1) to every ``dst`` node; ``view`` is ``(n_dst,)``, or
        ``(n_dst, K)`` for K feature slots per edge."""
        dst = as_range(dst)
        if isinstance(view, (list, tuple)):
            if any(v.shape != (dst.size,) for v in view):
                raise GraphConstructionError(f"star block '{name}': stacked views must all have shape ({dst.size},)")
            stacked = StackedView(tuple(v.reshape_tail(1) for v in view))
            return self._add(name or stacked.name, STAR, src, dst, edge_type, stacked)
        if view.ndim not in (1, 2) or view.shape[0] != dst.size:
            raise GraphConstructionError(
                f"star block '{name or view.name}': parameter of shape {view.shape} cannot act on "
                f"{dst.size} nodes of '{dst}'"
            )
        return self._add(name or view.name, STAR, src, dst, edge_type, view.reshape_tail(1))

    def bias(self, view: ParamView, dst: NodeGroup | NodeRange, edge_type: int = et.BIAS) -> NodeGroup:
        """Create the parameter's own node and a star block from it to ``dst``; returns the node."""
        node = self.bias_node(view.name)
        self.star(view, node, dst, edge_type)
        return node

    def diagonal(
        self,
        src: NodeGroup | NodeRange,
        dst: NodeGroup | NodeRange,
        edge_type: int,
        *,
        view: ParamView | None = None,
        value: float | None = None,
        name: str | None = None,
    ) -> EdgeBlock:
        """Unit ``i`` of ``src`` to unit ``i`` of ``dst``: parameter values (``(n,)``, or ``(n, K)`` for K
        feature slots per edge, e.g. a depthwise convolution's kernel) or a fixed value."""
        src, dst = as_range(src), as_range(dst)
        if src.size != dst.size:
            raise GraphConstructionError(f"diagonal block '{name}': {src} and {dst} differ in size")
        if view is not None:
            if view.ndim not in (1, 2) or view.shape[0] != dst.size:
                raise GraphConstructionError(f"diagonal block '{name or view.name}': view shape {view.shape}")
            return self._add(name or view.name, DIAGONAL, src, dst, edge_type, view.reshape_tail(1))
        if value is None:
            value = et.AUXILIARY_VALUES.get(edge_type, 1.0)
        return self._add(name or f"{src}->{dst}", DIAGONAL, src, dst, edge_type, None, value)

    def connect(
        self,
        src: NodeGroup | NodeRange,
        dst: NodeGroup | NodeRange,
        edge_type: int,
        *,
        value: float | None = None,
        name: str | None = None,
    ) -> EdgeBlock:
        """An auxiliary dense block (every ``src`` node to every ``dst`` node) with a fixed value,
        e.g. head membership; one source node makes it a star."""
        src, dst = as_range(src), as_range(dst)
        if value is None:
            value = et.AUXILIARY_VALUES.get(edge_type, 1.0)
        kind = STAR if src.size == 1 else DENSE
        return self._add(name or f"{src}->{dst}", kind, src, dst, edge_type, None, value)

    def head_membership(self, heads: NodeGroup, prefix: str, *, unit: str = "head", **members: NodeGroup | NodeRange) -> None:
        """Head node ``h`` gets a HEAD edge to every unit of segment ``h`` of each member group
        (each split into ``heads.size`` equal segments); blocks are named
        ``{prefix}{unit}{h}.{member}``."""
        for label, group in members.items():
            if as_range(group).size % heads.size:
                raise GraphConstructionError(f"'{label}' does not split into {heads.size} heads")
        for h in range(heads.size):
            for label, group in members.items():
                width = as_range(group).size // heads.size
                self.connect(heads[h : h + 1], group[h * width : (h + 1) * width], et.HEAD, name=f"{prefix}{unit}{h}.{label}")

    def residual(self, src: NodeGroup | NodeRange, dst: NodeGroup | NodeRange, *, name: str | None = None) -> EdgeBlock:
        """A residual (identity) connection: auxiliary diagonal block of type RESIDUAL."""
        return self.diagonal(src, dst, et.RESIDUAL, name=name or f"{as_range(dst)}.res")

    # ------------------------------------------------------------------ symmetries, buffers
    def permutable(self, *groups: NodeGroup, segments: int = 1) -> Permutable:
        """Declare that permuting these groups together (within segments) keeps the function."""
        sizes = {g.size for g in groups}
        if len(sizes) != 1:
            raise GraphConstructionError(f"permutable groups {[g.name for g in groups]} differ in size")
        sym = Permutable(tuple(g.name for g in groups), segments)
        self._symmetries.append(sym)
        return sym

    def permutable_heads(self, heads: NodeGroup, *members: NodeGroup, within: int = 1) -> PermutableHeads:
        """Declare that whole heads may be reordered: ``heads`` has one node per head and each
        member group (query-key units, value units) is split into that many equal segments.
        ``within`` keeps heads inside equal runs (query heads of one key/value head)."""
        for g in members:
            if g.size % heads.size:
                raise GraphConstructionError(f"group '{g.name}' ({g.size}) does not split into {heads.size} heads")
        if heads.size % within:
            raise GraphConstructionError(f"{heads.size} heads do not split into {within} runs")
        sym = PermutableHeads(heads.name, tuple(g.name for g in members), within)
        self._symmetries.append(sym)
        return sym

    def without_effect(self, block: EdgeBlock, reason: str, *, slot: int | None = None) -> None:
        """Record that the model's outputs do not depend on this block's values — or, with
        ``slot``, on that tensor of a stacked block (e.g. the key bias in a naive graph's
        ``[b_q, b_k, b_v]`` edge). Attention key biases are the usual case: they shift every score
        of a query equally and vanish in the softmax. The verifier then does not expect a
        permutation that skips them to change the outputs."""
        key = block.name if slot is None else f"{block.name}[{slot}]"
        self.meta.setdefault("without_effect", {})[key] = reason

    def unit_buffer(self, name: str, group: NodeGroup, dim: int = 0) -> None:
        """Declare a per-unit buffer (e.g. BatchNorm running mean) that moves with ``group``."""
        self._buffers.append(UnitBuffer(name, group.name, dim))

    # ------------------------------------------------------------------ build
    def build(self, *, lpe: int = 8) -> NeuralGraph:
        """Add one self-loop per node and return the validated :class:`NeuralGraph`."""
        if not self._groups:
            raise GraphConstructionError(f"{self.arch} converter declared no nodes")
        everything = NodeRange("*", 0, 0, self._num_nodes)
        blocks = list(self._blocks)
        blocks.append(
            EdgeBlock("self_loops", DIAGONAL, everything, everything, et.SELF_LOOP, self._num_edges, None,
                      et.AUXILIARY_VALUES[et.SELF_LOOP])
        )
        graph = NeuralGraph(
            groups=tuple(self._groups),
            blocks=tuple(blocks),
            params=tuple(self.params),
            symmetries=tuple(self._symmetries),
            buffers=tuple(self._buffers),
            arch=self.arch,
            lpe=lpe,
            meta=dict(self.meta),
        )
        for finish in self.finishers:
            graph = finish(graph)
        return graph
