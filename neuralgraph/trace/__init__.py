"""The traced converter: a neural graph read off the model's own computation.

:func:`trace_graph` records the forward as aten ops (:mod:`.record`), runs them through the op
rules (:mod:`.rules`) that say which neurons each tensor element belongs to and which parameter
elements connect which neurons (:mod:`.dataflow`, :mod:`.relations`), and turns those facts into
node groups, edge blocks and symmetries (:mod:`.emit`). ``docs/converters.md`` describes the rules.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping

import torch
from torch import nn

from ..builder import GraphBuilder
from ..params import param_specs
from .dataflow import Dataflow, TraceError
from .emit import emit
from .record import Trace, record
from .selfcheck import keep_structural_symmetries
from .rules import RULES, apply, rule
from .usage import check_coverage
from .values import Units

__all__ = ["trace_builder", "TraceError", "RULES", "rule", "record", "Trace"]

log = logging.getLogger(__name__)


_WINDOWS = ("aten.slice", "aten.select", "aten.narrow", "aten.view", "aten.as_strided", "aten.alias")


def run_rules(trace: Trace, specs) -> Dataflow:
    """Every recorded op through its rule; the model's outputs become fixed output neurons."""
    flow = Dataflow(trace, specs)
    for op in trace.ops:
        for t in op.args:
            if isinstance(t, torch.Tensor) and id(t) in flow.stale and not (
                    id(t) in flow.partial and op.name in _WINDOWS):  # a base being filled: windows to write into
                raise TraceError(
                    f"{op.name} reads a tensor after a view of it was changed in place; the traced converter cannot "
                    "follow in-place writes into views (write the forward without them)"
                )
        apply(flow, op)
    for t in trace.outputs:
        v = flow.value(t)
        if isinstance(v, Units):
            flow.rel.fix(v.ids, "a model output")
            flow.rel.roles.append((v.ids.reshape(-1), "output"))
    return flow


@contextlib.contextmanager
def _eager_experts(model: nn.Module):
    """Hugging Face mixture-of-experts layers traced with their ``eager`` implementation: one
    ``linear`` per expert on the tokens routed to it, which the rules read expert by expert,
    instead of one ``_grouped_mm`` over all experts. The model's own choice is restored after."""
    config = getattr(model, "config", None)
    chosen = getattr(config, "_experts_implementation", None)
    if chosen in (None, "eager") or not hasattr(model, "set_experts_implementation"):
        yield
        return
    model.set_experts_implementation("eager")
    try:
        yield
    finally:
        model.set_experts_implementation(chosen)


def trace_builder(model: nn.Module, inputs: tuple | Mapping, *, arch: str = "traced") -> GraphBuilder:
    """Declare ``model``'s neural graph from its forward on ``inputs`` (see the module docstring)."""
    specs = param_specs(model)
    was_training = model.training
    model.eval()
    try:
        with _eager_experts(model):
            trace = record(model, inputs)
    finally:
        model.train(was_training)
    flow = run_rules(trace, specs)
    check_coverage(flow.rel, specs)
    builder = emit(flow.rel, specs, arch)
    builder.finishers.append(keep_structural_symmetries)
    builder.meta["traced"] = {
        "ops": len(trace.ops),
        "device": trace.device,
        "opaque_ops": dict(flow.rel.opaque_ops),
    }
    if flow.rel.opaque_ops:
        log.info("traced %s: no rule for %s; the neurons they read are kept fixed", type(model).__name__,
                 ", ".join(f"{k} (x{v})" for k, v in flow.rel.opaque_ops.items()))
    return builder
