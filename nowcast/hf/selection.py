"""Which parameters a Trainer run nowcasts, and the graph they are predicted on.

Only trainable parameters (``requires_grad``) are written by a jump: a frozen base with trainable
adapters (LoRA through PEFT, or your own) keeps its frozen weights bit for bit. What is recorded
and shown to the predictor depends on the predictor:

- element-wise predictors (Linefit, Linefit+, WNN: ``needs_graph`` is False) see the trainable
  parameters only, so a frozen 7B base costs nothing to record;
- graph predictors (NiNo, WNN+) need the neural graph: ``neuralgraph.convert(model)`` (or the
  ``graph`` given), cut down with ``graph.subgraph(trainable names)`` when some parameters are
  frozen. The subgraph keeps every edge block that carries a trainable parameter with the nodes
  it touches; frozen parameters sharing such a block come along as read-only context (recorded
  and shown to the predictor, never written). A model the converters do not know (PEFT's
  ``lora_A`` / ``lora_B`` layers, for one) cannot be converted: use an element-wise predictor,
  or pass ``graph=`` built for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

import neuralgraph

if TYPE_CHECKING:  # pragma: no cover
    from neuralgraph import NeuralGraph

__all__ = ["Selection", "select_parameters"]

log = logging.getLogger(__name__)


@dataclass
class Selection:
    """Parameters recorded for a nowcast, in flat-vector order.

    Attributes:
        names, params: the recorded parameters (the graph's order when there is a graph).
        write: for each, whether a jump writes it (it requires grad).
        graph: the graph of exactly these parameters, or None for element-wise predictors.
    """

    names: list[str]
    params: list[torch.Tensor]
    write: list[bool]
    graph: NeuralGraph | None

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.params)

    @property
    def num_written(self) -> int:
        return sum(p.numel() for p, w in zip(self.params, self.write) if w)


def _check_graph(graph: Any, named: dict[str, torch.Tensor]) -> None:
    if not isinstance(graph, neuralgraph.NeuralGraph):
        raise TypeError(f"graph must be a neuralgraph.NeuralGraph built with neuralgraph.convert(model), got {type(graph).__name__}")
    for spec in graph.params:
        p = named.get(spec.name)
        if p is None or tuple(p.shape) != tuple(spec.shape):
            found = "missing" if p is None else f"shape {tuple(p.shape)}"
            raise ValueError(
                f"graph does not describe this model: its parameter '{spec.name}' {tuple(spec.shape)} is {found} in the "
                "model; pass graph=neuralgraph.convert(model) of the model being trained, or leave graph out"
            )


def _convert(model: nn.Module) -> NeuralGraph:
    try:
        return neuralgraph.convert(model)
    except Exception as exc:  # converters raise many types; the advice is the same
        raise ValueError(
            f"the predictor needs the model's neural graph, and neuralgraph.convert failed on {type(model).__name__}: "
            f"{exc}. Pass graph= (a graph of the model or of its trainable parameters), or use a predictor that needs "
            "no graph (predictor='linefit+')"
        ) from exc


def select_parameters(model: nn.Module, *, needs_graph: bool, graph: NeuralGraph | None = None) -> Selection:
    """The parameters of ``model`` to record, and their graph when ``needs_graph``.

    Raises:
        ValueError: no trainable parameter, a ``graph`` of another model, or a model that does not
            convert (the message says what to pass instead).
    """
    named = dict(model.named_parameters())
    trainable = [n for n, p in named.items() if p.requires_grad]
    if not trainable:
        raise ValueError(f"{type(model).__name__} has no trainable parameters (requires_grad=True): there is nothing to nowcast")
    if not needs_graph and graph is None:
        return Selection(trainable, [named[n] for n in trainable], [True] * len(trainable), None)
    whole = _convert(model) if graph is None else graph
    _check_graph(whole, named)
    missing = [n for n in trainable if n not in set(whole.param_names)]
    if missing:
        raise ValueError(f"graph lacks trainable parameters {missing[:3]}: pass a graph that holds every trainable parameter")
    if len(whole.param_names) != len(trainable):  # frozen parameters: keep the blocks of the trainable ones
        whole = whole.subgraph(trainable)
    names = list(whole.param_names)
    write = [named[n].requires_grad for n in names]
    log.info(
        "nowcasting %d of %d parameter tensors (%d recorded as context only) on a graph of %d nodes",
        sum(write), len(named), len(names) - sum(write), whole.num_nodes,
    )
    return Selection(names, [named[n] for n in names], write, whole)
