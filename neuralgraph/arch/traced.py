"""The traced converter: any ``nn.Module``, read off its own forward (:mod:`neuralgraph.trace`).

Registered as the fallback: :func:`neuralgraph.convert` uses it whenever no hand-written converter
matches the model, and for ``nn.Sequential`` models whose chain the trace does not confirm. The
example inputs (``convert(..., example_inputs=...)``, a Hugging Face config, or the first layer)
are stored in ``graph.meta["example_inputs"]`` and become :func:`neuralgraph.verify`'s default
inputs, with floating tensors redrawn.
"""

from __future__ import annotations

import torch

from ..builder import GraphBuilder
from ..errors import UnsupportedModelError
from ..inputs import example_inputs_for, redraw_inputs
from ..registry import register
from ..source import ModelSource
from ..trace import trace_builder
from ..trace.function_check import refuse_broken_symmetries
from ..trace.grammar import sample_traced_model


def traced_inputs(model, graph, generator: torch.Generator, batch: int):
    stored = graph.meta.get("example_inputs") if graph is not None else None
    if stored is None:
        stored = example_inputs_for(model)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype())
    return redraw_inputs(stored, generator, dtype)


@register(
    "traced",
    fallback=True,
    example=sample_traced_model,
    example_inputs=traced_inputs,
    description="any nn.Module, read off its forward: neurons, heads and symmetries from the traced dataflow",
)
def convert_traced(source: ModelSource, *, naive: bool = False) -> GraphBuilder:
    """Any module: the graph of what its forward computes on the example inputs."""
    if naive:
        raise UnsupportedModelError("the traced converter builds only the head-aware graph (naive=False)")
    inputs = example_inputs_for(source.module, source.example_inputs)
    builder = trace_builder(source.module, inputs)
    builder.finishers.append(refuse_broken_symmetries(source.module, inputs))
    builder.meta["example_inputs"] = inputs
    return builder


__all__ = ["convert_traced", "traced_inputs", "sample_traced_model"]
