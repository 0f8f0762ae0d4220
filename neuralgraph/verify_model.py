"""The model side of verification: a working copy with the verifier's own parameters, its inputs,
and its outputs for any parameter vector and neuron permutation.

``verify`` (``neuralgraph/verify.py``) decides which permutations to try and what their outcomes
mean; this module only runs the model.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .float64_mode import StayInFloat64
from .graph import NeuralGraph
from .params import flatten_params, load_params
from .permute import permute_buffers
from .registry import get_converter

__all__ = ["FLOAT32_RTOL", "ModelRunner", "model_outputs", "redraw_parameters", "working_copy"]

#: Tolerance of good permutations when a model can only be checked in float32.
FLOAT32_RTOL = 1e-4


def _floats(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out.reshape(-1)] if out.is_floating_point() else []
    if isinstance(out, Mapping):
        return [t for v in out.values() for t in _floats(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _floats(v)]
    if hasattr(out, "to_tuple"):
        return _floats(out.to_tuple())
    return []


def model_outputs(model: nn.Module, inputs: tuple | dict) -> torch.Tensor:
    """All floating-point outputs of ``model(*inputs)`` (or ``model(**inputs)``), flattened into one
    vector (tensors, nested tuples / dicts and Hugging Face output objects), without grad. A float64
    model runs in float64 throughout (:class:`StayInFloat64`: its float32 steps, such as RMSNorm's
    and softmax's, would otherwise set the round-off)."""
    wide = next((p.dtype == torch.float64 for p in model.parameters() if p.is_floating_point()), False)
    with torch.no_grad(), (StayInFloat64() if wide else contextlib.nullcontext()):
        out = model(**inputs) if isinstance(inputs, dict) else model(*inputs)
    flat = _floats(out)
    if not flat:
        raise ValueError(f"{type(model).__name__} returned no floating-point tensor to compare")
    return torch.cat(flat)


def redraw_parameters(model: nn.Module, graph: NeuralGraph | None, generator: torch.Generator) -> None:
    """Fresh random parameters, in place: weights ~ N(0.5, 1) / sqrt(fan_in), 1-D parameters ~ U(0.5, 1.5),
    running means ~ U(-0.5, 0.5) and running variances ~ U(0.5, 1.5).

    The verifier tests structure, not trained values. Positive means keep ReLU units active on
    the inputs tried (a unit that is never active hides any permutation of it, e.g. after global
    pooling, where inputs barely vary); the noise keeps every unit different from the others.
    """
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.ndim >= 2:
                fan_in = max(1, p.numel() // max(1, p.shape[0]))
                p.copy_((torch.randn(p.shape, generator=generator, dtype=p.dtype) + 0.5) * fan_in**-0.5)
            else:
                p.copy_(torch.rand(p.shape, generator=generator, dtype=p.dtype) + 0.5)
        # per-unit statistics: the graph's declared unit buffers and any BatchNorm-style ones
        declared = {ub.name for ub in graph.buffers} if graph is not None else set()
        for name, buf in model.named_buffers():
            if buf.is_floating_point() and (name in declared or name.endswith(("running_mean", "running_var"))):
                noise = torch.rand(buf.shape, generator=generator, dtype=buf.dtype)
                buf.copy_(noise + 0.5 if name.endswith("var") else noise - 0.5)


class ModelRunner:
    """A working copy of the model and its inputs: outputs for any parameter vector, with the unit
    buffers reset to the copy's own and moved by the permutation (the copy is reused: loading a
    vector replaces whatever the previous call left)."""

    def __init__(self, model: nn.Module, graph: NeuralGraph, inputs: tuple | dict) -> None:
        self.model, self.graph, self.inputs = model, graph, inputs
        self.buffers = {name: buf.clone() for name, buf in model.named_buffers()}

    def outputs(self, vector: torch.Tensor, perms=None) -> torch.Tensor:
        load_params(self.model, vector)
        with torch.no_grad():
            for name, buf in self.model.named_buffers():
                buf.copy_(self.buffers[name])
        if perms:
            permute_buffers(self.graph, self.model, perms)
        return model_outputs(self.model, self.inputs)

    def zero_mean_draw(self, theta: torch.Tensor, seed: int) -> torch.Tensor:
        """``theta`` with every weight of two or more dimensions redrawn ~ N(0, 1) / sqrt(fan_in)."""
        generator = torch.Generator().manual_seed(seed)
        vector = theta.clone()
        for spec in self.graph.params:
            if len(spec.shape) >= 2:
                fan_in = max(1, spec.numel // max(1, spec.shape[0]))
                vector[spec.offset : spec.offset + spec.numel] = (
                    torch.randn(spec.numel, generator=generator, dtype=theta.dtype) * fan_in**-0.5)
        return vector


def working_copy(model: nn.Module, graph: NeuralGraph, inputs: Any, seed: int, dtype: torch.dtype, *,
                 redraw: bool = True):
    """A copy of ``model`` in ``dtype`` with the verifier's parameters (``redraw=False``: the
    model's own): the generator (continuing after the draws), a :class:`ModelRunner` on it, its
    flat parameters and its reference outputs (a forward that cannot run in ``dtype`` raises here)."""
    generator = torch.Generator().manual_seed(seed)
    work = copy.deepcopy(model).to(dtype).eval()
    if getattr(getattr(work, "config", None), "_experts_implementation", None) not in (None, "eager") and hasattr(
            work, "set_experts_implementation"):
        work.set_experts_implementation("eager")  # grouped expert matmuls have no float64 kernel
    if redraw:
        redraw_parameters(work, graph, generator)
    theta = flatten_params(work)
    x = _inputs_for(work, graph, inputs, generator, dtype)
    return generator, ModelRunner(work, graph, x), theta, model_outputs(work, x)


def _inputs_for(model: nn.Module, graph: NeuralGraph, inputs: Any, generator: torch.Generator,
                dtype: torch.dtype = torch.float64) -> tuple | dict:
    if inputs is None:
        try:
            converter = get_converter(graph.arch)
        except Exception:
            converter = None
        if converter is None or converter.example_inputs is None:
            raise ValueError(f"no example inputs are known for '{graph.arch}' graphs: pass inputs= to verify")
        inputs = converter.example_inputs(model, graph, generator, 32)
        return inputs if isinstance(inputs, dict) else tuple(inputs)

    def cast(x):
        return x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x

    if isinstance(inputs, dict):
        return {k: cast(v) for k, v in inputs.items()}
    if not isinstance(inputs, tuple):
        inputs = (inputs,)
    return tuple(cast(x) for x in inputs)
