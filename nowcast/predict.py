"""One nowcasting step: from the last ``ctx`` parameter states to predicted parameters.

:func:`predict` is the single entry point. Given a neural graph, a ``[P, ctx]`` history of raw
flat parameter vectors (oldest first, ``neuralgraph.flatten_params`` order) and a horizon ``k``,
it returns the predicted flat vector ``[P]``. The predictor is either a :class:`NiNoModel` (NiNo
or WNN+): layerwise scaling (:mod:`nowcast.scaling`), edge features of the graph, one forward
pass, unscaling, back to a flat vector with ``graph.to_params``; or any object following the
:class:`Nowcaster` protocol (the baselines of :mod:`nowcast.baselines`, :class:`NiNoPredictor`,
:class:`WNNPlus`, your own).

Horizons: ``k`` counts *state intervals*, the spacing between two consecutive states of the
history. The NiNo checkpoints were trained on states 200 steps apart with targets on the same
grid, and the optimizer wrapper records a state every ``period / ctx`` steps, so ``k = ctx``
is one period ahead. Every predictor here uses the same unit.

``per_block=True`` predicts one transformer block / layer at a time (``graph.layers()``): each
part is a complete graph of its own, so only one part's edges are in memory at once. Parts see no
messages from their neighbours, so a graph network's predictions differ somewhat from whole-graph
predictions; element-wise predictors (Linefit, WNN) give the same values.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from .model import NiNoModel
from .scaling import scale_states, unscale

if TYPE_CHECKING:  # pragma: no cover
    from neuralgraph import NeuralGraph

__all__ = [
    "GraphPart",
    "ModelNowcaster",
    "NiNoPredictor",
    "Nowcaster",
    "WNNPlus",
    "as_nowcaster",
    "context_hops",
    "layer_parts",
    "predict",
]

log = logging.getLogger(__name__)


@runtime_checkable
class Nowcaster(Protocol):
    """What the optimizer wrapper and :func:`predict` need from a predictor.

    Attributes:
        name: a short human-readable name ("NiNo", "WNN+", "Linefit", ...).
        needs_graph: whether :meth:`predict` uses the neural graph (structure, edge types or
            per-tensor layout). Predictors with ``False`` accept ``graph=None``.

    Optional attributes read with ``getattr``: ``ctx`` (the history length the predictor
    requires, None for any), ``seq_len`` (the largest horizon it supports; the horizon
    schedule starts there; 40 when absent), ``context_hops`` (how far upstream in the graph
    its outputs look, for per-block prediction; 0 when absent, see :func:`layer_parts`) and
    ``uses_lr_interval`` (True: :meth:`predict` also takes ``lr_interval=``, the base learning
    rate times the steps between two states; False when absent).
    """

    name: str
    needs_graph: bool

    def predict(self, graph: NeuralGraph | None, states: torch.Tensor, k: int) -> torch.Tensor:
        """Predicted flat parameters ``[P]`` ``k`` state intervals after the last of ``states [P, ctx]``."""
        ...


# ---------------------------------------------------------------------------------------- parts
@dataclass(frozen=True)
class GraphPart:
    """One part of a graph for per-block prediction.

    Attributes:
        graph: the part as a complete :class:`neuralgraph.NeuralGraph`.
        segments: ``(start, stop)`` ranges of the whole graph's flat vector, in the order of the
            part's own flat vector (their concatenation is the part's vector).
        owned: for each segment, whether this part writes it back; the others are read-only
            context (parameters another part owns).
    """

    graph: NeuralGraph
    segments: tuple[tuple[int, int], ...]
    owned: tuple[bool, ...]

    @property
    def num_params(self) -> int:
        return sum(stop - start for start, stop in self.segments)

    def gather(self, states: torch.Tensor) -> torch.Tensor:
        """Rows of ``states`` (``[P]`` or ``[P, T]``) that make up this part's flat vector."""
        return torch.cat([states[start:stop] for start, stop in self.segments])

    def scatter(self, values: torch.Tensor, out: torch.Tensor) -> None:
        """Write the part's vector ``values`` into the whole flat vector ``out`` (owned segments only)."""
        offset = 0
        for (start, stop), owned in zip(self.segments, self.owned):
            n = stop - start
            if owned:
                out[start:stop] = values[offset : offset + n]
            offset += n


def _in_degrees(graph: NeuralGraph) -> torch.Tensor:
    """``[N]`` incoming edges per node (self-loops excluded), counted from the blocks."""
    from neuralgraph import edge_types as et

    degree = torch.zeros(graph.num_nodes, dtype=torch.long)
    for b in graph.blocks:
        if b.edge_type != et.SELF_LOOP:
            degree[b.dst.start : b.dst.stop] += b.src.size if b.kind == "dense" else 1
    return degree


def _node_map(graph: NeuralGraph, sub: NeuralGraph) -> torch.Tensor:
    """``[N_sub]`` whole-graph id of every node of a subgraph (its groups are whole groups)."""
    pieces = [torch.arange(graph.group(g.name).start, graph.group(g.name).stop) for g in sub.groups]
    return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)


def _block_names(block) -> set[str]:
    return {p.name for p in block.view.parts} if block.view is not None else set()


def _context_subgraph(graph: NeuralGraph, own: list[str], hops: int, degree: torch.Tensor) -> NeuralGraph:
    """The subgraph of ``own`` parameters plus every edge that can influence their outputs.

    Messages flow from source to target, and an edge's output depends on its endpoints' states
    after ``hops`` node updates; those depend on all edges entering the endpoints, the edges
    entering those edges' sources, ... ``hops`` levels deep. The subgraph holds all of them, so
    the model sees exactly what it sees in the whole graph (checked by comparing in-degrees).
    """
    from neuralgraph import edge_types as et

    blocks = [b for b in graph.blocks if b.edge_type != et.SELF_LOOP]
    wanted = set(own)
    reached = torch.zeros(graph.num_nodes, dtype=torch.bool)
    for b in blocks:
        if _block_names(b) & wanted:
            reached[b.src.start : b.src.stop] = True
            reached[b.dst.start : b.dst.stop] = True
    needed = torch.zeros_like(reached)  # nodes whose incoming edges must all be present
    frontier = reached.clone()
    for _ in range(hops):
        needed |= frontier
        nxt = torch.zeros_like(frontier)
        for b in blocks:
            if bool(frontier[b.dst.start : b.dst.stop].any()):
                wanted |= _block_names(b)
                nxt[b.src.start : b.src.stop] = True
        frontier = nxt & ~needed
    order = {name: i for i, name in enumerate(graph.param_names)}
    if not bool(needed.any()):
        return graph.subgraph(sorted(wanted, key=order.__getitem__))
    for _ in range(8):
        sub = graph.subgraph(sorted(wanted, key=order.__getitem__))
        ids = _node_map(graph, sub)
        inside = torch.zeros_like(needed)
        inside[ids] = True
        short = needed & ~inside
        sub_degree = torch.zeros(graph.num_nodes, dtype=torch.long)
        sub_degree[ids] = _in_degrees(sub)
        short |= needed & inside & (sub_degree != degree)
        if not bool(short.any()):
            return sub
        # an auxiliary block into these nodes comes from a group the subgraph does not hold yet:
        # add the parameters touching that group so that the group (and the block) come along
        grown = set(wanted)
        for b in blocks:
            if b.view is None and bool(short[b.dst.start : b.dst.stop].any()):
                for c in blocks:
                    if c.view is not None and b.src.group in (c.src.group, c.dst.group):
                        grown |= _block_names(c)
        if grown == wanted:
            break
        wanted = grown
    log.debug("per-block context for %s falls back to the whole graph", own[:3])
    return graph.subgraph(graph.param_names)


def layer_parts(graph: NeuralGraph, *, context_hops: int = 0) -> list[GraphPart]:
    """The parts of ``graph.layers()`` (one per transformer block / layer, then the rest) with
    the positions of their parameters in the whole flat vector.

    Args:
        graph: the whole graph.
        context_hops: how many node updates of a graph network feed its edge outputs
            (``NiNoConfig.num_edge_updates``; 0 for element-wise predictors). With ``h > 0`` each
            part also holds, as read-only context, every edge entering its nodes and the nodes
            ``h - 1`` levels further upstream, and its nodes keep the whole graph's positional
            encodings: a graph network then computes, for the part's own parameters, what it
            computes on the whole graph (up to float rounding). A transformer block's context is
            about the previous block.

    Every parameter is written back by exactly one part (the part ``graph.layers()`` puts it in).
    """
    if isinstance(context_hops, bool) or not isinstance(context_hops, int) or context_hops < 0:
        raise ValueError(f"context_hops must be a non-negative integer, got {context_hops!r}")
    where = graph.param_slices()
    layers = graph.layers()
    degree = _in_degrees(graph) if context_hops else None
    pos = graph.pos if context_hops else None
    parts: list[GraphPart] = []
    written: set[str] = set()
    for layer in layers:
        own = [name for name in layer.param_names if name not in written]
        if context_hops:
            sub = _context_subgraph(graph, own, context_hops, degree)
            if pos is not None:
                # cached_property: the part's nodes keep their encodings from the whole graph
                sub.__dict__["pos"] = pos[_node_map(graph, sub)]
        else:
            sub = layer
        mine = set(own)
        segments = tuple((where[name].start, where[name].stop) for name in sub.param_names)
        owned = tuple(name in mine for name in sub.param_names)
        written |= mine
        parts.append(GraphPart(sub, segments, owned))
    missing = set(graph.param_names) - written
    if missing:  # layer_subgraphs partitions the parameters; this guards the contract
        raise RuntimeError(f"graph.layers() does not cover parameters {sorted(missing)[:5]}")
    log.debug(
        "per-block prediction: %d parts, %s parameters (owned / with context)",
        len(parts),
        [(sum(stop - start for (start, stop), o in zip(p.segments, p.owned) if o), p.num_params) for p in parts],
    )
    return parts


def context_hops(predictor: Any) -> int:
    """Upstream levels a predictor's outputs depend on (0 for element-wise predictors)."""
    if isinstance(predictor, NiNoModel):
        return predictor.config.num_edge_updates
    return int(getattr(predictor, "context_hops", 0))


# ---------------------------------------------------------------------------------------- checks
def _check_k(k: Any) -> int:
    if isinstance(k, torch.Tensor) and k.numel() == 1:
        k = k.item()
    if isinstance(k, bool) or not isinstance(k, int):
        try:
            as_int = int(k)
        except (TypeError, ValueError):
            raise ValueError(f"horizon k must be a positive integer, got {k!r}") from None
        if as_int != k:
            raise ValueError(f"horizon k must be a positive integer, got {k!r}")
        k = as_int
    if k < 1:
        raise ValueError(f"horizon k must be a positive integer, got {k}")
    return k


def _check_states(states: Any, graph: NeuralGraph | None) -> torch.Tensor:
    if not isinstance(states, torch.Tensor) or states.ndim != 2 or not states.is_floating_point():
        shape = tuple(states.shape) if isinstance(states, torch.Tensor) else type(states).__name__
        raise ValueError(f"states must be a floating-point [P, ctx] history (oldest state first), got {shape}")
    if graph is not None and states.shape[0] != graph.num_params:
        raise ValueError(
            f"states have {states.shape[0]} rows but the {graph.arch} graph has {graph.num_params} parameters"
        )
    from neuralgraph.params import check_finite

    # one isfinite pass; a bad value is named by parameter, flat index and state (0 = oldest)
    check_finite(states, graph.params if graph is not None else None, "states", order="0 = oldest")
    return states


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 at least: scaling statistics of half-precision histories lose too much."""
    return torch.promote_types(dtype, torch.float32)


# ---------------------------------------------------------------------------------------- NiNoModel
def _model_device(model: NiNoModel) -> torch.device:
    return next(model.parameters()).device


def _predict_with_model(
    graph: NeuralGraph,
    states: torch.Tensor,
    k: int,
    model: NiNoModel,
    *,
    pos: torch.Tensor | None,
    edge_chunk: int | None,
) -> torch.Tensor:
    if graph is None:
        raise ValueError("a NiNo / WNN+ model needs the neural graph: pass graph=neuralgraph.convert(model)")
    cfg = model.config
    if states.shape[1] != cfg.ctx:
        raise ValueError(f"this model reads ctx={cfg.ctx} states but the history has {states.shape[1]}")
    if not 1 <= k <= cfg.seq_len:
        raise ValueError(f"horizon k must lie in 1..{cfg.seq_len} for this model, got {k}")
    device = _model_device(model)
    x = states.to(device=device, dtype=_work_dtype(states.dtype))
    scaled, scales = scale_states(x, graph.params)
    # states were checked by predict(); a non-finite prediction is left for the caller to judge
    data = SimpleNamespace(edge_attr=graph.edge_features(scaled, check=False), edge_type=graph.edge_type)
    del scaled
    if cfg.gnn:
        data.edge_index = graph.edge_index
        if cfg.lpe > 0:
            data.pos = graph.pos if pos is None else pos
            if data.pos is None:
                raise ValueError(
                    "this NiNo model uses Laplacian positional encodings but the graph was built with lpe=0: "
                    "convert the model with lpe=8 or pass pos="
                )
        if cfg.wte_pos_enc:
            data.pos_w = graph.pos_w
    with torch.no_grad():
        out = model(data, k, edge_chunk=edge_chunk)
    del data
    theta = unscale(graph.to_params(out.to(x.dtype), check=False), scales)
    return theta.to(device=states.device, dtype=states.dtype)


# ---------------------------------------------------------------------------------------- predictors
class ModelNowcaster:
    """A :class:`NiNoModel` as a :class:`Nowcaster` (base of :class:`NiNoPredictor` and :class:`WNNPlus`).

    The model is used as is: never moved, put in another mode or modified.
    """

    needs_graph = True

    def __init__(self, model: NiNoModel, *, edge_chunk: int | None = None, name: str | None = None) -> None:
        if not isinstance(model, NiNoModel):
            raise TypeError(f"expected a nowcast.NiNoModel, got {type(model).__name__}")
        self.model = model
        self.edge_chunk = edge_chunk
        self.name = name or ("NiNo" if model.config.gnn else "WNN+")

    @property
    def ctx(self) -> int:
        return self.model.config.ctx

    @property
    def seq_len(self) -> int:
        return self.model.config.seq_len

    @property
    def context_hops(self) -> int:
        """Node updates feeding the outputs (see :func:`layer_parts`); 0 for WNN+."""
        return self.model.config.num_edge_updates

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> ModelNowcaster:
        """Load a checkpoint with :func:`nowcast.load` (a published ``.pt`` file or our directory format)."""
        from .checkpoint import CheckpointError, load

        model = load(path)
        if not isinstance(model, NiNoModel):
            raise CheckpointError(f"{path} holds a regime router of two models, not one: load it with nowcast.load or nowcast.resolve")
        return cls(model, **kwargs)

    def predict(
        self, graph: NeuralGraph | None, states: torch.Tensor, k: int
    ) -> torch.Tensor:
        return predict(graph, states, k, self.model, edge_chunk=self.edge_chunk)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model.config})"


class NiNoPredictor(ModelNowcaster):
    """NiNo: the graph network over the neural graph (a :class:`NiNoModel` with ``gnn=True``).

    ``NiNoPredictor.load("nino_no_posw.pt")`` loads a published checkpoint.
    """

    def __init__(self, model: NiNoModel, *, edge_chunk: int | None = None, name: str = "NiNo") -> None:
        super().__init__(model, edge_chunk=edge_chunk, name=name)
        if not model.config.gnn:
            raise ValueError("this checkpoint is a WNN+ model (gnn=False): use nowcast.WNNPlus")


class WNNPlus(ModelNowcaster):
    """WNN+: a per-parameter MLP with layerwise scaling and edge-type embeddings (``gnn=False``).

    ``WNNPlus.load("nino_mlp.pt")`` loads the published checkpoint. It needs the graph only for
    the per-tensor layout and the edge types, not for message passing.
    """

    def __init__(self, model: NiNoModel, *, edge_chunk: int | None = None, name: str = "WNN+") -> None:
        super().__init__(model, edge_chunk=edge_chunk, name=name)
        if model.config.gnn:
            raise ValueError("this checkpoint is a NiNo graph network (gnn=True): use nowcast.NiNoPredictor")


def as_nowcaster(predictor: Any) -> Nowcaster:
    """Turn what users pass as a predictor into a :class:`Nowcaster`: the same as
    :func:`nowcast.resolve` (kept under this name; see :mod:`nowcast.resolver` for what is accepted)."""
    from .resolver import resolve

    return resolve(predictor)


# ---------------------------------------------------------------------------------------- predict
def _predict_whole(
    graph: NeuralGraph | None,
    states: torch.Tensor,
    k: int,
    predictor: Any,
    pos: torch.Tensor | None,
    edge_chunk: int | None,
    lr_interval: float | None,
) -> torch.Tensor:
    if isinstance(predictor, NiNoModel):
        return _predict_with_model(graph, states, k, predictor, pos=pos, edge_chunk=edge_chunk)
    if pos is not None:
        raise ValueError("pos= applies only when the predictor is a NiNoModel")
    from .resolver import resolve

    nowcaster = resolve(predictor)
    if nowcaster.needs_graph and graph is None:
        raise ValueError(f"predictor {nowcaster.name} needs the neural graph: pass graph=neuralgraph.convert(model)")
    if getattr(nowcaster, "uses_lr_interval", False):
        out = nowcaster.predict(graph, states, k, lr_interval=lr_interval)
    else:
        out = nowcaster.predict(graph, states, k)
    if not isinstance(out, torch.Tensor) or out.shape != (states.shape[0],):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"predictor {nowcaster.name} returned {shape}, expected [{states.shape[0]}]")
    return out.to(device=states.device, dtype=states.dtype)


def predict(
    graph: NeuralGraph | None,
    states: torch.Tensor,
    k: int,
    model: Any,
    *,
    per_block: bool = False,
    parts: Sequence[GraphPart] | None = None,
    pos: torch.Tensor | None = None,
    edge_chunk: int | None = None,
    lr_interval: float | None = None,
) -> torch.Tensor:
    """Predicted parameters ``k`` state intervals after the last state of ``states``.

    Args:
        graph: the network's neural graph (``neuralgraph.convert(network)``); may be None for
            predictors that do not need it (Linefit, WNN) unless ``per_block``.
        states: ``[P, ctx]`` raw flat parameter vectors, oldest first, in the graph's
            flat-vector order. NaN or Inf raises :class:`neuralgraph.errors.NonFiniteError` (a
            ``ValueError``) naming the parameter, its flat index and the state.
        k: horizon, a positive integer (for NiNo models at most ``config.seq_len``).
        model: a :class:`NiNoModel` (NiNo or WNN+), or any :class:`Nowcaster`; see
            :func:`nowcast.resolve` for the other accepted forms. Never modified.
        per_block: predict one part of ``graph.layers()`` at a time (bounds memory for large
            models; a graph network then sees each part on its own).
        parts: precomputed :func:`layer_parts` (saves rebuilding them at every call).
        pos: node positional encodings to use instead of ``graph.pos`` (whole-graph NiNo only),
            e.g. the exact encodings another implementation used.
        edge_chunk: overrides the model's ``edge_chunk`` (NiNoModel only).
        lr_interval: the base optimizer's learning rate times the steps between two states of
            ``states``; required by predictors that route by it (:class:`nowcast.RegimeRouter`),
            ignored by the others.

    Returns:
        ``[P]`` predicted parameters, on the device and in the dtype of ``states``. Computation
        runs on the model's device in at least float32.
    """
    k = _check_k(k)
    states = _check_states(states, graph)
    if not isinstance(model, NiNoModel):
        from .resolver import resolve

        model = resolve(model)  # once: a checkpoint path is read here, not once per part
    if not per_block:
        return _predict_whole(graph, states, k, model, pos, edge_chunk, lr_interval)
    if pos is not None:
        raise ValueError("pos= cannot be combined with per_block=True (each part has its own encodings)")
    if graph is None:
        raise ValueError("per_block=True needs the neural graph (its layers)")
    parts = layer_parts(graph, context_hops=context_hops(model)) if parts is None else parts
    out = torch.empty(states.shape[0], dtype=states.dtype, device=states.device)
    for part in parts:
        sub = part.gather(states)
        part.scatter(_predict_whole(part.graph, sub, k, model, None, edge_chunk, lr_interval), out)
    return out
