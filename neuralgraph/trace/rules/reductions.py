"""Reductions and softmaxes over neurons (the sets they reduce bound the permutations), ops along
an axis (sorts, cumulative sums) and creation ops."""

from __future__ import annotations

import torch

from ..dataflow import Dataflow, TraceError
from ..record import Op
from ..values import Data, Params, Units
from ..rows import unique_rows
from .registry import data_origin, set_all, tensors_of, rule


def reduce_over(flow: Dataflow, ids: torch.Tensor, dims) -> None:
    dims = sorted(d % ids.ndim for d in dims)
    rest = [d for d in range(ids.ndim) if d not in dims]
    if any(flow.varies(ids, d) for d in dims):
        # kept axes along which nothing changes (batch, sequence) repeat the same sets: one slice
        ids = ids[tuple(slice(0, 1) if d in rest and not flow.varies(ids, d) else slice(None) for d in range(ids.ndim))]
        size = 1
        for d in dims:
            size *= ids.shape[d]
        flow.rel.reduce(ids.permute(*rest, *dims).reshape(-1, size))


REDUCTIONS = (
    "aten.sum", "aten.mean", "aten.amax", "aten.amin", "aten.max", "aten.min", "aten.var", "aten.std",
    "aten.logsumexp", "aten.norm", "aten.linalg_vector_norm", "aten.prod", "aten.any", "aten.all",
    "aten.argmax", "aten.argmin", "aten.var_mean", "aten.std_mean", "aten.nansum", "aten.nanmean", "aten.count_nonzero",
)


def _reduced_dims(op: Op, ndim: int) -> list[int] | None:
    dims = op.kwargs.get("dim")
    if dims is None and len(op.args) > 1:
        cand = op.args[2] if op.name == "aten.linalg_vector_norm" and len(op.args) > 2 else op.args[1]
        dims = cand if isinstance(cand, (int, list, tuple)) and not isinstance(cand, bool) else None
        if op.name == "aten.linalg_vector_norm" and len(op.args) <= 2:
            dims = None
    if dims is None:
        return list(range(ndim))
    dims = [dims] if isinstance(dims, int) else list(dims)
    return [d % ndim for d in dims] if dims else list(range(ndim))


@rule(*REDUCTIONS)
def _reduction(flow: Dataflow, op: Op) -> None:
    x = op.args[0]
    v = flow.value(x)
    outs = tensors_of(op.out)
    if not isinstance(v, Units):
        set_all(flow, op.out, [Data("const") if isinstance(v, Params) else data_origin(flow, [x])] * len(outs))
        if isinstance(v, Params):
            raise TraceError(f"{op.name} reduces parameter {flow.params_named(v)} before it is used (a weight norm?)")
        return
    dims = _reduced_dims(op, x.ndim)
    varying = [d for d in dims if flow.varies(v.ids, d)]
    if not varying:  # over data axes only: each remaining element keeps its neuron
        index = [slice(None)] * x.ndim
        for d in dims:
            index[d] = slice(0, 1)
        ids = v.ids[tuple(index)]
        first = outs[0]
        if ids.numel() != first.numel():
            ids = ids.squeeze(tuple(dims)) if ids.ndim != first.ndim else ids
        ids = ids.reshape(first.shape) if ids.numel() == first.numel() else ids.expand(first.shape)
        index_out = op.name in ("aten.argmax", "aten.argmin")
        flow.set(first, Data("const") if index_out else Units(ids.clone(), False))
        for t in outs[1:]:
            flow.set(t, Data("const") if op.name in ("aten.max", "aten.min") else Units(ids.clone(), False))
        return
    kept = [d for d in range(x.ndim) if d not in dims]
    reduce_over(flow, v.ids, dims)
    if any(flow.varies(v.ids, d) for d in kept):
        if op.name in _STATISTICS:
            # one value per set (a per-head norm): the sets recorded above keep permutations inside
            # a set or of whole sets, and the values move with their sets
            set_all(flow, op.out, [Data("const", statistic=True)] * len(outs))
            return
        flow.rel.fix(v.ids, f"reduced by {op.name} over some of its neuron axes only")
    set_all(flow, op.out, [Data("const")] * len(outs))


_STATISTICS = ("aten.mean", "aten.sum", "aten.var", "aten.std", "aten.var_mean", "aten.std_mean", "aten.norm",
               "aten.linalg_vector_norm", "aten.amax", "aten.logsumexp")


@rule("aten._softmax", "aten._safe_softmax", "aten._log_softmax", "aten.softmax", "aten.log_softmax")
def _softmax(flow: Dataflow, op: Op) -> None:
    x, dim = op.args[:2]
    v = flow.value(x)
    if isinstance(v, Units):
        reduce_over(flow, v.ids, [dim])
        flow.set(op.out, Units(v.ids, False))
    elif isinstance(v, Params):
        raise TraceError(f"{op.name} of parameter {flow.params_named(v)} before it is used is not supported")
    else:
        flow.set(op.out, data_origin(flow, [x]))


ALONG = ("aten.cumsum", "aten.cumprod", "aten.sort", "aten.topk", "aten.argsort", "aten.cummax", "aten.cummin",
         "aten.tril", "aten.triu", "aten.kthvalue")


@rule(*ALONG)
def _along(flow: Dataflow, op: Op) -> None:
    x = op.args[0]
    v = flow.value(x)
    outs = tensors_of(op.out)
    if not isinstance(v, Units):
        if isinstance(v, Params):
            flow.opaque(op, "order-dependent op on a parameter")
            return
        set_all(flow, op.out, [data_origin(flow, [x])] * len(outs))
        return
    if op.name in ("aten.tril", "aten.triu"):
        dims = [x.ndim - 2, x.ndim - 1]
    elif op.name == "aten.topk":
        dims = [op.args[2] if len(op.args) > 2 else op.kwargs.get("dim", -1)]
    elif op.name == "aten.kthvalue":
        dims = [op.args[2] if len(op.args) > 2 else op.kwargs.get("dim", -1)]
    else:
        dims = [op.args[1] if len(op.args) > 1 else op.kwargs.get("dim", -1)]
    if any(flow.varies(v.ids, d % x.ndim) for d in dims):  # order along neurons: no symmetry survives
        flow.opaque(op, "depends on the order of neurons")
        if op.name == "aten.topk":
            _route(flow, v.ids, dims[0] % x.ndim)
        return
    first = outs[0]
    index = [slice(None)] * x.ndim
    for d in dims:
        index[d % x.ndim] = slice(0, 1)
    ids = v.ids[tuple(index)].expand(first.shape).clone() if first.ndim == x.ndim else None
    if ids is None:
        flow.opaque(op, "changes the number of dimensions")
        return
    flow.set(first, Data("const") if op.name == "aten.argsort" else Units(ids, False))
    for t in outs[1:]:
        flow.set(t, Data("const"))


def _route(flow: Dataflow, ids: torch.Tensor, dim: int) -> None:
    """``topk`` over neurons picks some by value (a router choosing experts): which are picked stays
    the same under permutations inside each set it picks from (recorded as a reduction), and a
    single set is recorded as a router; its neurons stay fixed (the indices are data) unless
    :mod:`neuralgraph.trace.experts` finds experts picked by them, which move with them."""
    sets = unique_rows(ids.movedim(dim, -1).reshape(-1, ids.shape[dim]))
    flow.rel.reduce(sets)
    if sets.shape[0] == 1:
        flow.rel.routers.append(sets[0].clone())


CREATION_LIKE = ("aten.zeros_like", "aten.ones_like", "aten.full_like", "aten.empty_like", "aten.rand_like",
                 "aten.randn_like", "aten.new_zeros", "aten.new_ones", "aten.new_full", "aten.new_empty",
                 "aten.fill", "aten.fill_", "aten.zero_", "aten.bernoulli", "aten.bernoulli_", "aten.randint_like",
                 "aten.empty_strided", "aten.new_empty_strided", "aten.scalar_tensor", "aten.arange", "aten.zeros",
                 "aten.ones", "aten.full", "aten.empty", "aten.ones_like")


UNIFORM = ("aten.zeros_like", "aten.ones_like", "aten.full_like", "aten.new_zeros", "aten.new_ones", "aten.new_full",
           "aten.fill", "aten.fill_", "aten.zero_", "aten.scalar_tensor", "aten.zeros", "aten.ones", "aten.full")


@rule(*CREATION_LIKE)
def _creation(flow: Dataflow, op: Op) -> None:
    for t in tensors_of(op.out):
        flow.set(t, Data("const", uniform=op.name in UNIFORM))
