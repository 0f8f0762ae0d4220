"""Elementwise ops: each element keeps its neuron; combining different neurons (a residual sum, a
gate) merges a fresh projection into the sum or makes a new neuron tied to both."""

from __future__ import annotations

import bisect

import torch

from ... import edge_types as et
from ..dataflow import Dataflow, TraceError
from ..record import Op
from ..relations import PairedRelation
from ..rows import unique_pairs
from ..values import Data, Params, Units
from .registry import data_origin, is_fresh, tensors_of, rule


UNARY = (
    "aten.relu", "aten.gelu", "aten.silu", "aten.tanh", "aten.sigmoid", "aten.neg", "aten.exp", "aten.log",
    "aten.log1p", "aten.expm1", "aten.abs", "aten.sqrt", "aten.rsqrt", "aten.reciprocal", "aten.sin", "aten.cos",
    "aten.erf", "aten.erfc", "aten.softplus", "aten.elu", "aten.leaky_relu", "aten.hardtanh", "aten.clamp",
    "aten.clamp_min", "aten.clamp_max", "aten.hardswish", "aten.hardsigmoid", "aten.mish", "aten.relu6", "aten.sign",
    "aten.square", "aten.celu", "aten.selu", "aten.threshold", "aten.logit", "aten.log_sigmoid_forward",
    "aten.log_sigmoid", "aten.glu_jvp", "aten.prelu", "aten.rrelu", "aten.softshrink", "aten.hardshrink",
    "aten.tan", "aten.atan", "aten.sinh", "aten.cosh", "aten.asinh", "aten.log2", "aten.log10", "aten.exp2",
    "aten.floor", "aten.ceil", "aten.round", "aten.trunc", "aten.frac", "aten.nan_to_num", "aten.isnan",
    "aten.isinf", "aten.logical_not", "aten.bitwise_not", "aten.sgn", "aten.erfinv",
    "aten.relu_", "aten.gelu_", "aten.silu_", "aten.tanh_", "aten.sigmoid_", "aten.neg_", "aten.exp_",
    "aten.clamp_", "aten.hardtanh_", "aten.leaky_relu_", "aten.elu_", "aten.sqrt_", "aten.rsqrt_", "aten.abs_",
    "aten.hardswish_", "aten.hardsigmoid_", "aten.mish_", "aten.celu_", "aten.selu_", "aten.threshold_",
)
BINARY = (
    "aten.add", "aten.sub", "aten.mul", "aten.div", "aten.rsub", "aten.maximum", "aten.minimum", "aten.pow",
    "aten.atan2", "aten.fmod", "aten.remainder", "aten.where", "aten.masked_fill", "aten.addcmul", "aten.addcdiv",
    "aten.lerp", "aten.copysign", "aten.xlogy", "aten.eq", "aten.ne", "aten.lt", "aten.le", "aten.gt", "aten.ge",
    "aten.logical_and", "aten.logical_or", "aten.logical_xor", "aten.bitwise_and", "aten.bitwise_or",
    "aten.floor_divide", "aten.hypot", "aten.fmax", "aten.fmin", "aten.true_divide",
    "aten.add_", "aten.sub_", "aten.mul_", "aten.div_", "aten.masked_fill_", "aten.addcmul_", "aten.clamp_min_",
    "aten.where_", "aten.pow_", "aten.lerp_", "aten.copy_",
)
_SCALE_OPS = ("aten.mul", "aten.div", "aten.mul_", "aten.div_", "aten.addcmul", "aten.addcmul_")


def _stale_check(flow: Dataflow, op: Op) -> None:
    """An in-place op on a view changes its base too: the base is unusable afterwards."""
    if op.name.endswith("_") and op.args and isinstance(op.args[0], torch.Tensor):
        base = op.args[0]._base
        if base is not None:
            flow.stale.add(id(base))


@rule(*UNARY)
def _unary(flow: Dataflow, op: Op) -> None:
    src = op.args[0]
    v = flow.value(src)
    if isinstance(v, Units):
        v = Units(v.ids, v.fresh and flow.uses[id(src)] == 1)
        extra = [t for t in tensors_of((op.args[1:], op.kwargs))]
        for t in extra:  # prelu's weight: a per-neuron parameter
            pv = flow.value(t)
            if isinstance(pv, Params):
                shape = [1] * src.ndim
                shape[1 if src.ndim > 1 else 0] = -1
                flow.attach(Params(pv.idx.reshape(shape)), v, src.shape, et.NORM)
    elif isinstance(v, Data):
        v = Data(data_origin(flow, [src]).origin, uniform=v.uniform, statistic=v.statistic)
    _stale_check(flow, op)
    for t in tensors_of(op.out):
        flow.set(t, v)


def pin_by_data(flow: Dataflow, ids: torch.Tensor, data: torch.Tensor) -> None:
    """A data tensor that varies along a neuron axis gives those neurons labels (RoPE's angles,
    a constant table): only neurons at the same coordinate may be exchanged."""
    shape = (1,) * (ids.ndim - data.ndim) + tuple(data.shape)
    buffer = getattr(flow.value(data), "buffer", None)
    for k in range(ids.ndim):
        if shape[k] > 1 and flow.varies(ids, k):
            coords = torch.arange(ids.shape[k]).reshape([-1 if j == k else 1 for j in range(ids.ndim)]).expand(ids.shape)
            flow.rel.label(ids, coords)
            if buffer is not None and data.numel() == shape[k]:  # a buffer with one entry per neuron
                flow.rel.buffers_along.append((buffer, ids.movedim(k, -1).reshape(-1, shape[k])[0].clone()))


def _copy_into_view(flow: Dataflow, op: Op) -> bool:
    """``view.copy_(src)`` where ``view`` is a window of a contiguous base (DeepSeek-V3 assembles its
    keys in slices of an empty tensor): the base's neurons at those places become ``src``'s. Until
    every place of a base built this way is written, reading the base is an error. False where this
    is not such a copy (the caller falls back to marking the base stale)."""
    dst, src = op.args[0], op.args[1]
    base = dst._base
    if base is None or not base.is_contiguous() or not isinstance(src, torch.Tensor):
        return False
    vs, vb = flow.value(src), flow.value(base)
    if not isinstance(vs, Units):
        return False
    partial = flow.partial.get(id(base))
    if partial is not None:
        ids = partial
    elif isinstance(vb, Units):
        ids = vb.ids.reshape(-1).clone()
    elif isinstance(vb, Data) and id(base) not in flow.stale:
        ids = torch.full((base.numel(),), -1, dtype=torch.long)  # nothing written yet
    else:
        return False
    places = torch.as_strided(torch.arange(base.numel()), tuple(dst.shape), tuple(dst.stride()),
                              dst.storage_offset() - base.storage_offset())
    ids[places.reshape(-1)] = vs.ids.expand(dst.shape).reshape(-1)
    flow.set(dst, Units(vs.ids.expand(dst.shape).clone(), False))
    if bool((ids >= 0).all()):
        flow.partial.pop(id(base), None)
        flow.stale.discard(id(base))
        flow.set(base, Units(ids.reshape(base.shape), False))
    else:
        flow.partial[id(base)] = ids
        flow.stale.add(id(base))
    return True


@rule(*BINARY)
def _binary(flow: Dataflow, op: Op) -> None:
    if op.name == "aten.copy_" and op.args[0]._base is not None and _copy_into_view(flow, op):
        return
    _stale_check(flow, op)
    operands = [a for a in (*op.args, *op.kwargs.values()) if isinstance(a, torch.Tensor)]
    if op.name == "aten.copy_":  # dst.copy_(src): dst now holds src
        operands = operands[1:]
    out = tensors_of(op.out)[0]
    shape = tuple(out.shape)
    vals = [flow.value(t) for t in operands]
    units = [(t, v) for t, v in zip(operands, vals) if isinstance(v, Units)]
    params = [(t, v) for t, v in zip(operands, vals) if isinstance(v, Params)]
    data = [t for t, v in zip(operands, vals) if isinstance(v, Data) and t.numel() > 1 and not v.uniform and not v.statistic]
    if not units and not params:
        origin = data_origin(flow, operands)
        origin.uniform = all(v.uniform for v in vals)
        flow.set(out, origin)
        return
    if params and not units:
        if len(params) > 1:
            raise TraceError(
                f"{op.name} combines parameters {', '.join(flow.params_named(v) for _, v in params)} before they are "
                "used: a graph edge holds one parameter value"
            )
        (t, v), = params
        flow.set(out, Params(v.idx.expand(shape) if tuple(v.idx.shape) != shape else v.idx))
        return
    if params:
        if len(params) > 1 or len(units) > 1:
            raise TraceError(
                f"{op.name} combines parameter {flow.params_named(params[0][1])} with activations in a way the graph "
                "cannot hold (one parameter scaling or shifting one activation is supported)"
            )
        (ut, uv), (_, pv) = units[0], params[0]
        edge_type = et.NORM if op.name in _SCALE_OPS else et.BIAS
        base = Units(uv.ids.expand(shape), is_fresh(flow, ut, uv))
        flow.attach(pv, base, shape, edge_type)
        for t in data:
            pin_by_data(flow, base.ids, t)
        flow.set(out, Units(base.ids.clone(), base.fresh))
        return
    ids = [v.ids.expand(shape) for _, v in units]
    for t in data:
        for i in ids:
            pin_by_data(flow, i, t)
    if len(units) == 1 or all(torch.equal(ids[0], i) for i in ids[1:]):
        t, v = units[0]
        flow.set(out, Units(ids[0].clone(), is_fresh(flow, t, v)))
        return
    flow.set(out, combine(flow, op, units, ids, shape))


def combine(flow: Dataflow, op: Op, units, ids, shape) -> Units:
    """Two or more different neurons combined elementwise (a residual sum, a gate)."""
    heads = _per_head_bias(flow, op, ids)
    if heads is not None:
        return Units(heads.clone(), False)
    single = [i for i, x in enumerate(ids) if x.numel() > 1 and bool((x == x.reshape(-1)[0]).all())]
    if single and len(single) < len(ids):
        # one neuron broadcast over many (Qwen2-MoE's sigmoid gate on its shared expert): it scales
        # them all alike and tells none apart; an auxiliary edge reaches each, nothing is merged
        rest = [i for i in range(len(ids)) if i not in single]
        if len(rest) == 1:
            t, v = units[rest[0]]
            out = Units(ids[rest[0]].clone(), is_fresh(flow, t, v))
        else:
            out = combine(flow, op, [units[i] for i in rest], [ids[i] for i in rest], shape)
        targets = out.ids.unique()
        for i in single:
            source = ids[i].reshape(-1)[:1].expand(targets.numel())
            flow.rel.paired.append(PairedRelation(source, targets, None, et.RESIDUAL, f"{op.name} (one neuron to many)", ties=False))
        return out
    if len(ids) == 2 and _reordered(flow, ids[0], ids[1]):
        return Units(ids[0].clone(), False)
    fresh = [i for i, (t, v) in enumerate(units) if is_fresh(flow, t, v)]
    if fresh:
        keep = ids[fresh[0]]
        same_block = [i for i in fresh[1:] if _allocation(flow, ids[i]) == _allocation(flow, keep)]
        for i in fresh[1:]:  # two fresh projections summed: one neuron receives both
            if i not in same_block:
                flow.rel.merge(keep, ids[i])
        # halves of one fused projection (Phi-3's gate_up_proj): merged, one edge would hold two values
        others = [i for i in range(len(ids)) if i not in fresh or i in same_block]
        for i in others:
            _tie(flow, ids[i], keep, op.name)
        return Units(keep.clone(), True)
    stacked = torch.stack([i.reshape(-1) for i in ids], 1)
    rows, inverse = stacked.unique(dim=0, return_inverse=True)
    role = "stream" if op.name.startswith(("aten.add", "aten.sub")) else "hidden"
    new = flow.rel.allocate(rows.shape[0], role, op.name)
    for j in range(rows.shape[1]):
        _tie(flow, rows[:, j], new, op.name)
    return Units(new[inverse].reshape(shape), True)


def _head_mask(flow: Dataflow, ids: torch.Tensor) -> torch.Tensor:
    """Per element of ``ids``: whether it is a head node (attention scores carry head ids)."""
    starts = torch.tensor([a.start for a in flow.rel.allocations])
    heads = torch.tensor([a.role == "head" for a in flow.rel.allocations])
    return heads[torch.bucketize(ids.contiguous(), starts, right=True) - 1]


def _per_head_bias(flow: Dataflow, op: Op, ids: list[torch.Tensor]) -> torch.Tensor | None:
    """A table with one column per head added to attention scores (T5's, MPNet's and Swin's
    relative position biases): its column for head ``h`` is head ``h``'s, so the neurons that
    carry it are merged into the head nodes, and permuting heads moves the table's columns. The
    head ids, or None where this is no such sum (one side all head nodes, the other none, paired
    one to one)."""
    if len(ids) != 2 or not op.name.startswith(("aten.add", "aten.sub")):
        return None
    side = [flow.is_head(int(i.reshape(-1)[0])) for i in ids]
    if sum(side) != 1:
        return None
    scores, table = (ids[0], ids[1]) if side[0] else (ids[1], ids[0])
    pairs = unique_pairs(scores, table)
    one_to_one = pairs[:, 0].unique().numel() == pairs[:, 1].unique().numel() == pairs.shape[0]
    if not one_to_one or not bool(_head_mask(flow, pairs[:, 0]).all()) or bool(_head_mask(flow, pairs[:, 1]).any()):
        return None
    flow.rel.merge(pairs[:, 0], pairs[:, 1])
    return scores


def _reordered(flow: Dataflow, a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a`` combined with the same neurons in another order along one axis (RoPE's
    ``x * cos + rotate_half(x) * sin``): each element keeps its neuron, and the neurons along that
    axis are told apart (labelled by position), since only permutations that commute with the
    reordering would keep the function — none is claimed."""
    pairs = unique_pairs(a, b)
    left, right = pairs[:, 0].unique(), pairs[:, 1].unique()
    if left.numel() != pairs.shape[0] or right.numel() != pairs.shape[0] or not torch.equal(left, right):
        return False
    found = False
    for k in range(a.ndim):
        if flow.varies(a, k) and not torch.equal(a, b) and torch.equal(a.sort(k).values, b.sort(k).values):
            coords = torch.arange(a.shape[k]).reshape([-1 if j == k else 1 for j in range(a.ndim)]).expand(a.shape)
            flow.rel.label(a, coords)
            found = True
    if not found:
        flow.rel.fix(a, "combined with a reordering of itself")
    return True


def _allocation(flow: Dataflow, ids: torch.Tensor) -> int:
    """Index of the allocation that created neuron ``ids.min()``."""
    unit = int(ids.min())
    starts = [a.start for a in flow.rel.allocations]
    return bisect.bisect_right(starts, unit) - 1


def _tie(flow: Dataflow, src: torch.Tensor, dst: torch.Tensor, name: str) -> None:
    pairs = unique_pairs(src, dst)
    flow.rel.paired.append(PairedRelation(pairs[:, 0], pairs[:, 1], None, et.RESIDUAL, name))


@rule("aten.index_add", "aten.index_add_")
def _index_add(flow: Dataflow, op: Op) -> None:
    """``base.index_add_(dim, index, source)`` along a data axis (tokens routed to an expert, added
    back into the output): each row is an elementwise sum of ``base`` and ``source`` neurons."""
    base, dim, _index, source = op.args[:4]
    out = tensors_of(op.out)[0]
    dim = dim % base.ndim
    pairs = [(base, flow.value(base)), (source, flow.value(source))]
    if any(isinstance(v, Params) for _, v in pairs):
        flow.opaque(op, "adds parameters by index")
        return
    if any(isinstance(v, Units) and flow.varies(v.ids, dim) for _, v in pairs):
        flow.opaque(op, "adds along a neuron axis")
        return
    units = [(t, v) for t, v in pairs if isinstance(v, Units)]
    _stale_check(flow, op)
    if not units:
        flow.set(out, data_origin(flow, [base, source]))
        return
    shape = tuple(out.shape)
    ids = [v.ids.narrow(dim, 0, 1).expand(shape) for _, v in units]
    if len(units) == 1 or torch.equal(ids[0], ids[1]):
        t, v = units[0]
        flow.set(out, Units(ids[0].clone(), is_fresh(flow, t, v)))
        return
    flow.set(out, combine(flow, op, units, ids, shape))
