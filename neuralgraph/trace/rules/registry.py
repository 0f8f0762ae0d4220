"""The rule table and the helpers every rule shares."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils._pytree import tree_flatten

from ..dataflow import Dataflow
from ..record import Op
from ..values import Data, Units

__all__ = ["RULES", "rule", "apply"]

UNIFORM_CREATION = ("aten.zeros", "aten.ones", "aten.full", "aten.scalar_tensor")

Rule = Callable[[Dataflow, Op], None]
RULES: dict[str, Rule] = {}


def rule(*names: str) -> Callable[[Rule], Rule]:
    """Register ``fn(flow, op)`` as the rule of the named aten ops (``"aten.addmm"``)."""

    def decorate(fn: Rule) -> Rule:
        for n in names:
            RULES[n] = fn
        return fn

    return decorate


def apply(flow: Dataflow, op: Op) -> None:
    """Run one recorded op through its rule (opaque when it has none)."""
    flow.op_name = op.name
    fn = RULES.get(op.name)
    if fn is None:
        if not tensors_of(op.out):
            return  # asserts, size queries: nothing to propagate
        if not tensors_of((op.args, op.kwargs)):
            uniform = op.name in UNIFORM_CREATION
            for t in tensors_of(op.out):  # a creation op: constants (all equal for zeros, ones, full)
                flow.set(t, Data("const", uniform=uniform))
            return
        flow.opaque(op, "no rule")
        return
    fn(flow, op)


def tensors_of(obj) -> list[torch.Tensor]:
    return [t for t in tree_flatten(obj)[0] if isinstance(t, torch.Tensor)]


def is_fresh(flow: Dataflow, t: torch.Tensor, v) -> bool:
    """Neurons just created by a parameterized op and read by nothing but this op."""
    return isinstance(v, Units) and v.fresh and flow.uses[id(t)] == 1


def set_all(flow: Dataflow, out, values) -> None:
    outs = tensors_of(out)
    for t, v in zip(outs, values):
        flow.set(t, v)


def data_origin(flow: Dataflow, tensors) -> Data:
    values = [flow.value(t) for t in tensors]
    origins = {getattr(v, "origin", "const") for v in values}
    data = [(t, v) for t, v in zip(tensors, values) if isinstance(v, Data)]
    statistic = any(v.statistic for _, v in data) and all(
        v.statistic or v.uniform or not isinstance(t, torch.Tensor) or t.numel() <= 1 for t, v in data)
    return Data("input" if "input" in origins else "const", statistic=statistic)
