"""Recording a model's forward as a flat list of aten ops (the traced converter's first step).

The forward runs under a ``TorchDispatchMode`` with every parameter and buffer replaced by a
``meta`` tensor of the same shape (``torch.func.functional_call``), so a full-size model costs no
weight memory and no arithmetic. The model's own tensors are never touched. Where an op has no
meta kernel or the forward reads a value (``.item()``, data-dependent control flow), the
recording is repeated on the real tensors under ``torch.no_grad()``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..errors import NeuralGraphError

__all__ = ["Op", "Trace", "record"]

log = logging.getLogger(__name__)


@dataclass
class Op:
    """One aten call: the overload, its arguments and its result, as they were passed."""

    func: Any
    args: tuple
    kwargs: dict
    out: Any

    @property
    def name(self) -> str:
        """``aten.addmm`` style name of the op (overload dropped)."""
        return str(self.func.overloadpacket)


@dataclass
class Trace:
    """What the forward did. Tensors are identified by ``id()``; the trace holds a reference to
    each so that no id is reused while it lives."""

    ops: list[Op]
    params: dict[int, str]  # id(tensor) -> parameter name (first name of tied parameters)
    buffers: dict[int, str]  # id(tensor) -> buffer name
    inputs: list[torch.Tensor]  # the model's tensor inputs, flattened
    outputs: list[torch.Tensor]  # the model's tensor outputs, flattened
    device: str = "meta"
    keep: list = field(default_factory=list, repr=False)


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Op] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops.append(Op(func, args, kwargs, out))
        return out


def _call(model: nn.Module, inputs: tuple | Mapping, state: dict[str, torch.Tensor]):
    args, kwargs = (tuple(inputs), {}) if not isinstance(inputs, Mapping) else ((), dict(inputs))
    return torch.func.functional_call(model, state, args, kwargs, strict=False)


def _outputs(out: Any) -> list[torch.Tensor]:
    if hasattr(out, "to_tuple"):  # Hugging Face ModelOutput
        out = out.to_tuple()
    leaves, _ = tree_flatten(out)
    return [t for t in leaves if isinstance(t, torch.Tensor)]


def _to(inputs: tuple | Mapping, device: str):
    def move(x):
        return x.to(device) if isinstance(x, torch.Tensor) else x

    if isinstance(inputs, Mapping):
        return {k: move(v) for k, v in inputs.items()}
    return tuple(move(x) for x in inputs)


def record(model: nn.Module, inputs: tuple | Mapping) -> Trace:
    """Record ``model(*inputs)`` (or ``model(**inputs)``) as aten ops, on the meta device when it
    can. ``model`` should be in ``eval()`` mode (dropout would add random ops)."""
    named = list(model.named_parameters(remove_duplicate=False))
    first_name: dict[int, str] = {}
    for name, p in named:
        first_name.setdefault(id(p), name)
    try:
        return _record(model, inputs, named, first_name, "meta")
    except NeuralGraphError:
        raise
    except Exception as err:  # no meta kernel, or the forward reads values
        if any(p.is_meta for _, p in named):
            raise NeuralGraphError(
                f"tracing {type(model).__name__} on the meta device failed ({type(err).__name__}: {err}); the model's "
                "weights are on the meta device too, so it cannot be traced on real tensors: load real weights, or "
                "give inputs it can run on"
            ) from err
        log.debug("meta trace of %s failed (%s: %s); tracing on real tensors", type(model).__name__, type(err).__name__, err)
        try:
            return _record(model, inputs, named, first_name, None)
        except NeuralGraphError:
            raise
        except Exception as err2:
            raise NeuralGraphError(
                f"could not run {type(model).__name__} on the example inputs to trace it: {type(err2).__name__}: {err2}. "
                "Pass example_inputs= that the model's forward accepts (a tensor, a tuple of arguments or a dict of "
                "keyword arguments)"
            ) from err2


def _record(model, inputs, named, first_name, device) -> Trace:
    keep: list = []
    state: dict[str, torch.Tensor] = {}
    params: dict[int, str] = {}
    buffers: dict[int, str] = {}
    if device == "meta":
        substitutes: dict[int, torch.Tensor] = {}
        for name, p in named:
            t = substitutes.get(id(p))
            if t is None:
                # requires_grad keeps PyTorch off its fused inference fast paths (TransformerEncoderLayer,
                # MultiheadAttention), so the forward shows its real ops
                t = torch.empty(p.shape, dtype=p.dtype, device="meta", requires_grad=True)
                substitutes[id(p)] = t
                params[id(t)] = first_name[id(p)]
            state[name] = t
        for name, buf in model.named_buffers(remove_duplicate=False):
            t = buf.to("meta") if buf.device.type != "meta" else buf
            state[name] = t
            buffers[id(t)] = name
        inputs = _to(inputs, "meta")
    else:
        for name, p in named:
            params.setdefault(id(p), first_name[id(p)])
        for name, buf in model.named_buffers(remove_duplicate=False):
            buffers.setdefault(id(buf), name)
    keep.append(state)
    flat_inputs = [x for x in tree_flatten(dict(inputs) if isinstance(inputs, Mapping) else tuple(inputs))[0]
                   if isinstance(x, torch.Tensor)]
    recorder = _Recorder()
    context = torch.enable_grad() if device == "meta" else torch.no_grad()
    with context, recorder:
        out = _call(model, inputs, state) if device == "meta" else _call_real(model, inputs)
    return Trace(recorder.ops, params, buffers, flat_inputs, _outputs(out), device or "real", keep)


def _call_real(model, inputs):
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(*inputs)
