"""One nowcasting step: from the last ``ctx`` parameter states to predicted parameters.

:func:`predict` is the single entry point. Given a neural graph, a ``[P, ctx]`` history of raw
flat parameter vectors (oldest first, ``neuralgraph.flatten_params`` order) and a horizon ``k``,
it returns the predicted flat vector ``[P]``. The predictor is either a :class:`NiNoModel` (NiNo
or WNN+): layerwise scaling (:mod:`nowcast.scaling`), edge features of the graph, one forward
pass, unscaling, back to a flat vector with ``graph.to_params``; or any object following the
:class:`Nowcaster` protocol (the baselines of :mod:`nowcast.nowcasters.baselines`, :class:`NiNoPredictor`,
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

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from .model import NiNoModel
from .nowcasters.base import check_k, check_states
from .nowcasters.model_nowcaster import predict_with_model
from .nowcasters.resolver import resolve
from .parts import GraphPart, context_hops, layer_parts

if TYPE_CHECKING:  # pragma: no cover
    from neuralgraph import NeuralGraph

__all__ = ["predict"]


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
        return predict_with_model(graph, states, k, predictor, pos=pos, edge_chunk=edge_chunk)
    if pos is not None:
        raise ValueError("pos= applies only when the predictor is a NiNoModel")
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
    k = check_k(k)
    states = check_states(states, graph)
    if not isinstance(model, NiNoModel):
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
