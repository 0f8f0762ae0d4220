"""Recording a model's forward as a flat list of aten ops (the traced converter's first step).

The forward runs under a ``TorchDispatchMode`` with every parameter and buffer replaced by a
``meta`` tensor of the same shape (``torch.func.functional_call``), so a full-size model costs no
weight memory and no arithmetic. The model's own tensors are never touched. Where that fails,
two more attempts follow, each cheaper than running the model for real (Hugging Face models
start with the first of them, which is what they need):

1. *fake tensors* (``FakeTensorMode``): still no storage, but the tensors claim the CPU device,
   and libraries that check for tracing (Hugging Face's mask code asks ``is_fake_tensor`` before
   it reads position ids with ``.item()``) take their trace-friendly branch;
2. the real tensors under ``torch.no_grad()``, where the weights are real (an op with no meta
   kernel, or a forward that reads values).
"""

from __future__ import annotations

import contextlib
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
        if func.namespace != "prim":  # metadata queries (prim.device under fake tensors) compute nothing
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


def record(model: nn.Module, inputs: tuple | Mapping) -> Trace:
    """Record ``model(*inputs)`` (or ``model(**inputs)``) as aten ops, on the meta device when it
    can. ``model`` should be in ``eval()`` mode (dropout would add random ops)."""
    named = list(model.named_parameters(remove_duplicate=False))
    first_name: dict[int, str] = {}
    for name, p in named:
        first_name.setdefault(id(p), name)
    # Hugging Face models read position ids unless they see fake tensors: start with those there
    first, second = ("fake", "meta") if _is_transformers(model) else ("meta", "fake")
    try:
        return _record(model, inputs, named, first_name, first)
    except NeuralGraphError:
        raise
    except Exception as first_err:  # no meta kernel, or the forward reads values
        log.debug("%s trace of %s failed (%s: %s); trying %s tensors", first, type(model).__name__,
                  type(first_err).__name__, first_err, second)
        try:
            return _record(model, inputs, named, first_name, second)
        except NeuralGraphError:
            raise
        except Exception as second_err:
            err = first_err if isinstance(second_err, _FakeUnavailable) else second_err
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
    fake = _fake_mode() if device == "fake" else None
    if device in ("meta", "fake"):
        substitutes: dict[int, torch.Tensor] = {}
        for name, p in named:
            t = substitutes.get(id(p))
            if t is None:
                # requires_grad keeps PyTorch off its fused inference fast paths (TransformerEncoderLayer,
                # MultiheadAttention), so the forward shows its real ops
                t = _empty(p, fake, requires_grad=True)
                substitutes[id(p)] = t
                params[id(t)] = first_name[id(p)]
            state[name] = t
        for name, buf in model.named_buffers(remove_duplicate=False):
            t = _shadow(buf, fake)
            state[name] = t
            buffers[id(t)] = name
        inputs = _shadow_inputs(inputs, fake)
    else:
        for name, p in named:
            params.setdefault(id(p), first_name[id(p)])
        for name, buf in model.named_buffers(remove_duplicate=False):
            buffers.setdefault(id(buf), name)
    keep.append(state)
    flat_inputs = [x for x in tree_flatten(dict(inputs) if isinstance(inputs, Mapping) else tuple(inputs))[0]
                   if isinstance(x, torch.Tensor)]
    recorder = _Recorder()
    context = torch.enable_grad() if device else torch.no_grad()
    with context, (fake if fake is not None else contextlib.nullcontext()), recorder:
        out = _call(model, inputs, state) if device else _call_real(model, inputs)
    return Trace(recorder.ops, params, buffers, flat_inputs, _outputs(out), device or "real", keep)


def _is_transformers(model: nn.Module) -> bool:
    return any(c.__module__.startswith("transformers.") for c in type(model).__mro__)


class _FakeUnavailable(RuntimeError):
    """This PyTorch has no usable ``FakeTensorMode``."""


def _fake_mode():
    try:
        from torch._subclasses.fake_tensor import FakeTensorMode
    except ImportError as err:  # pragma: no cover - private module moved
        raise _FakeUnavailable(str(err)) from err
    # scalar outputs stay unknown (no shape environment): a forward that needs a value fails here
    # and is traced on the real tensors instead
    return FakeTensorMode(allow_non_fake_inputs=False)


def _empty(like: torch.Tensor, fake, requires_grad: bool = False) -> torch.Tensor:
    """A storage-free tensor shaped like ``like``: meta, or fake on the CPU."""
    if fake is None:
        return torch.empty(like.shape, dtype=like.dtype, device="meta", requires_grad=requires_grad)
    with fake:
        return torch.empty(like.shape, dtype=like.dtype, device="cpu", requires_grad=requires_grad)


def _shadow(t: torch.Tensor, fake) -> torch.Tensor:
    """``t`` moved where the trace runs: its values are kept where it has any (buffers and inputs
    such as ids can steer the forward), a meta tensor becomes an empty one."""
    if fake is None:
        return t if t.is_meta else t.to("meta")
    if t.is_meta:
        return _empty(t, fake)
    return fake.from_tensor(t.detach().cpu())


def _shadow_inputs(inputs: tuple | Mapping, fake):
    def move(x):
        return _shadow(x, fake) if isinstance(x, torch.Tensor) else x

    if isinstance(inputs, Mapping):
        return {k: move(v) for k, v in inputs.items()}
    return tuple(move(x) for x in inputs)


def _call_real(model, inputs):
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(*inputs)
