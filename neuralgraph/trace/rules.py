"""The op rules of the traced converter: what each aten op says about neurons.

One table, :data:`RULES`, maps an op name (``aten.addmm``) to its rule ``rule(flow, op)``; the
decorator :func:`rule` adds to it (``docs/converters.md``, "Adding a rule"). The kinds of op:

* **movers** (views, transposes, ``cat``, ``split``, ``select``, ``expand``, ...) only move
  elements: the rule runs the same op on the neuron ids, so every layout change is exact;
* **elementwise** ops keep each element's neuron; combining two different neurons (a residual
  sum, a gate) makes a new neuron tied to both, unless one of them was just created by a
  parameterized op and is read nowhere else, which then *is* the sum (as hand-written graphs
  draw it: a projection lands on the stream it is added to);
* **parameterized** ops (``mm``/``addmm``/``bmm`` with a weight, ``convolution``, ``embedding``,
  norms, biases) create neurons and the parameter edges into them;
* **contractions** of two activations: ``q @ k^T`` over a neuron axis makes one head node per
  distinct query row and makes the contracted query and key neurons one neuron (or, when key
  neurons serve several heads, ties them with head edges); ``probs @ v`` over a data axis makes
  the value neurons members of the head;
* **reductions** and softmaxes over neurons record the sets they reduce (permutations must stay
  inside each set); over data axes they keep the neurons;
* any other op is **opaque**: the neurons it reads are fixed — never a false symmetry.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils._pytree import tree_flatten, tree_map

from .. import edge_types as et
from .dataflow import Dataflow, TraceError
from .record import Op
from .relations import DenseRelation, PairedRelation
from .values import Data, Params, Units

__all__ = ["RULES", "rule", "apply"]

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
        if not _tensors(op.out):
            return  # asserts, size queries: nothing to propagate
        if not _tensors((op.args, op.kwargs)):
            for t in _tensors(op.out):  # a creation op: constants
                flow.set(t, Data("const"))
            return
        flow.opaque(op, "no rule")
        return
    fn(flow, op)


def _tensors(obj) -> list[torch.Tensor]:
    return [t for t in tree_flatten(obj)[0] if isinstance(t, torch.Tensor)]


def _fresh(flow: Dataflow, t: torch.Tensor, v) -> bool:
    """Neurons just created by a parameterized op and read by nothing but this op."""
    return isinstance(v, Units) and v.fresh and flow.uses[id(t)] == 1


def _set_all(flow: Dataflow, out, values) -> None:
    outs = _tensors(out)
    for t, v in zip(outs, values):
        flow.set(t, v)


def _data_origin(flow: Dataflow, tensors) -> Data:
    origins = {getattr(flow.value(t), "origin", "const") for t in tensors}
    return Data("input" if "input" in origins else "const")


# ---------------------------------------------------------------------------------- movers
IDENTITY = (
    "aten.clone", "aten.contiguous", "aten.alias", "aten.detach", "aten.lift_fresh", "aten.lift_fresh_copy",
    "aten._to_copy", "aten.to", "aten.type_as", "aten._copy_from_and_resize", "aten.dropout", "aten.feature_dropout",
    "aten.resolve_conj", "aten.resolve_neg", "aten.positive",
)
MOVERS = (
    "aten.view", "aten._unsafe_view", "aten.reshape", "aten.t", "aten.transpose", "aten.permute", "aten.expand",
    "aten.unsqueeze", "aten.squeeze", "aten.select", "aten.slice", "aten.split", "aten.split_with_sizes",
    "aten.unsafe_split", "aten.unsafe_split_with_sizes", "aten.chunk", "aten.unsafe_chunk", "aten.unbind",
    "aten.narrow", "aten.flatten", "aten.unflatten", "aten.repeat", "aten.movedim", "aten.expand_as", "aten.view_as",
    "aten.flip", "aten.roll", "aten.tile", "aten.repeat_interleave", "aten.pixel_shuffle", "aten.pixel_unshuffle",
    "aten.channel_shuffle", "aten.diagonal", "aten.swapaxes", "aten.swapdims", "aten.im2col", "aten.col2im",
)


@rule(*IDENTITY)
def _identity(flow: Dataflow, op: Op) -> None:
    src = op.args[0]
    v = flow.value(src)
    if isinstance(v, Units):
        v = Units(v.ids, v.fresh and flow.uses[id(src)] == 1)
    for t in _tensors(op.out):
        flow.set(t, v)


@rule(*MOVERS)
def _mover(flow: Dataflow, op: Op) -> None:
    tensors = _tensors((op.args, op.kwargs))
    vals = [flow.value(t) for t in tensors]
    if all(isinstance(v, Data) for v in vals):
        origin = _data_origin(flow, tensors)
        origin.uniform = all(v.uniform for v in vals)
        _set_all(flow, op.out, [origin] * len(_tensors(op.out)))
        return
    kinds = {type(v) for v in vals}
    if len(kinds) > 1:
        flow.opaque(op, "moves neurons together with other values")
        return
    sub = {id(t): (v.ids if isinstance(v, Units) else v.idx) for t, v in zip(tensors, vals)}
    args, kwargs = tree_map(lambda x: sub.get(id(x), x) if isinstance(x, torch.Tensor) else x, (op.args, op.kwargs))
    func = torch.reshape if op.name in ("aten.view", "aten._unsafe_view") else op.func  # ids need not be contiguous
    result = func(*args, **kwargs)
    outs = _tensors(result)
    src = tensors[0]
    if isinstance(vals[0], Units):
        fresh = vals[0].fresh and flow.uses[id(src)] == 1
        _set_all(flow, op.out, [Units(o, fresh) for o in outs])
    else:
        _set_all(flow, op.out, [Params(o) for o in outs])


@rule("aten.cat", "aten.stack", "aten.concat", "aten.concatenate", "aten.hstack", "aten.vstack")
def _cat(flow: Dataflow, op: Op) -> None:
    parts = list(op.args[0])
    dim = op.args[1] if len(op.args) > 1 else op.kwargs.get("dim", 0)
    vals = [flow.value(t) for t in parts]
    if all(isinstance(v, Data) for v in vals):
        flow.set(op.out, _data_origin(flow, parts))
        return
    if all(isinstance(v, Params) for v in vals):
        flow.set(op.out, Params(op.func([v.idx for v in vals], dim)))
        return
    stacking = op.name == "aten.stack"
    ndim = parts[0].ndim
    d = dim % (ndim + 1 if stacking else ndim)
    units = [v for v in vals if isinstance(v, Units)]
    along_units = not stacking and any(flow.varies(u.ids, d) for u in units)
    ids = []
    for t, v in zip(parts, vals):
        if isinstance(v, Units):
            ids.append(v.ids)
            continue
        if along_units:  # concatenated beside neurons: a data part gets neurons of its own
            if isinstance(v, Params):
                raise TraceError(f"{op.name}: parameter {flow.params_named(v)} is concatenated with activations along their neurons")
            ids.append(flow.units_along(t, d).ids)
            continue
        # along a data axis (a [CLS] token or padding placed before the sequence): the part
        # belongs to the neurons of the activations beside it
        ref = units[0].ids
        shape = list(ref.shape)
        shape[d] = t.shape[d]
        first = ref.narrow(d, 0, 1).expand(shape).clone()
        if isinstance(v, Params):
            flow.attach(v, Units(first), shape, et.BIAS)
        else:
            _pin_by_data(flow, first, t)
        ids.append(first)
    flow.set(op.out, Units(op.func(ids, dim), False))


# ---------------------------------------------------------------------------------- elementwise
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
        extra = [t for t in _tensors((op.args[1:], op.kwargs))]
        for t in extra:  # prelu's weight: a per-neuron parameter
            pv = flow.value(t)
            if isinstance(pv, Params):
                shape = [1] * src.ndim
                shape[1 if src.ndim > 1 else 0] = -1
                flow.attach(Params(pv.idx.reshape(shape)), v, src.shape, et.NORM)
    elif isinstance(v, Data):
        v = Data(_data_origin(flow, [src]).origin, uniform=v.uniform)
    _stale_check(flow, op)
    for t in _tensors(op.out):
        flow.set(t, v)


def _pin_by_data(flow: Dataflow, ids: torch.Tensor, data: torch.Tensor) -> None:
    """A data tensor that varies along a neuron axis gives those neurons labels (RoPE's angles,
    a constant table): only neurons at the same coordinate may be exchanged."""
    shape = (1,) * (ids.ndim - data.ndim) + tuple(data.shape)
    for k in range(ids.ndim):
        if shape[k] > 1 and flow.varies(ids, k):
            coords = torch.arange(ids.shape[k]).reshape([-1 if j == k else 1 for j in range(ids.ndim)]).expand(ids.shape)
            flow.rel.label(ids, coords)


@rule(*BINARY)
def _binary(flow: Dataflow, op: Op) -> None:
    _stale_check(flow, op)
    operands = [a for a in (*op.args, *op.kwargs.values()) if isinstance(a, torch.Tensor)]
    if op.name == "aten.copy_":  # dst.copy_(src): dst now holds src
        operands = operands[1:]
    out = _tensors(op.out)[0]
    shape = tuple(out.shape)
    vals = [flow.value(t) for t in operands]
    units = [(t, v) for t, v in zip(operands, vals) if isinstance(v, Units)]
    params = [(t, v) for t, v in zip(operands, vals) if isinstance(v, Params)]
    data = [t for t, v in zip(operands, vals) if isinstance(v, Data) and t.numel() > 1 and not v.uniform]
    if not units and not params:
        origin = _data_origin(flow, operands)
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
        (ut, uv), (pt, pv) = units[0], params[0]
        edge_type = et.NORM if op.name in _SCALE_OPS else et.BIAS
        base = Units(uv.ids.expand(shape), _fresh(flow, ut, uv))
        flow.attach(pv, base, shape, edge_type)
        for t in data:
            _pin_by_data(flow, base.ids, t)
        flow.set(out, Units(base.ids.clone(), base.fresh))
        return
    ids = [v.ids.expand(shape) for _, v in units]
    for t in data:
        for i in ids:
            _pin_by_data(flow, i, t)
    if len(units) == 1 or all(torch.equal(ids[0], i) for i in ids[1:]):
        t, v = units[0]
        flow.set(out, Units(ids[0].clone(), _fresh(flow, t, v)))
        return
    flow.set(out, _combine(flow, op, units, ids, shape))


def _combine(flow: Dataflow, op: Op, units, ids, shape) -> Units:
    """Two or more different neurons combined elementwise (a residual sum, a gate)."""
    if len(ids) == 2 and _reordered(flow, ids[0], ids[1]):
        return Units(ids[0].clone(), False)
    fresh = [i for i, (t, v) in enumerate(units) if _fresh(flow, t, v)]
    if fresh:
        keep = ids[fresh[0]]
        for i in fresh[1:]:  # two fresh projections summed: one neuron receives both
            flow.rel.merge(keep, ids[i])
        others = [i for i in range(len(ids)) if i not in fresh]
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


def _reordered(flow: Dataflow, a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a`` combined with the same neurons in another order along one axis (RoPE's
    ``x * cos + rotate_half(x) * sin``): each element keeps its neuron, and the neurons along that
    axis are told apart (labelled by position), since only permutations that commute with the
    reordering would keep the function — none is claimed."""
    pairs = torch.stack([a.reshape(-1), b.reshape(-1)], 1).unique(dim=0)
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


def _tie(flow: Dataflow, src: torch.Tensor, dst: torch.Tensor, name: str) -> None:
    pairs = torch.stack([src.reshape(-1), dst.reshape(-1)], 1).unique(dim=0)
    flow.rel.paired.append(PairedRelation(pairs[:, 0], pairs[:, 1], None, et.RESIDUAL, name))


# ---------------------------------------------------------------------------------- parameterized
def _linear(flow: Dataflow, x: torch.Tensor, w: torch.Tensor, out_shape, what: str) -> Units:
    """``x[..., K] @ W[K, N]``: the neurons of x along K feed N new neurons."""
    u = flow.units_along(x, -1)
    src = flow.along(u.ids, -1, what)
    _distinct_inputs(flow, src, w, what)
    n = w.shape[-1]
    dst = flow.rel.allocate(n, "hidden", what)
    flow.rel.dense.append(DenseRelation(src, dst, w.unsqueeze(-1), et.LINEAR, flow.param_name(int(w.reshape(-1)[0]))))
    return Units(dst.expand(out_shape).clone(), True)


def _distinct_inputs(flow: Dataflow, src: torch.Tensor, w: torch.Tensor, what: str) -> None:
    """A layer whose inputs repeat a neuron (a Flatten of a conv output with spatial size > 1)
    has a weight per (neuron, position): one edge per neuron pair cannot hold it."""
    if src.unique().numel() != src.numel():
        per = src.numel() // max(1, src.unique().numel())
        raise TraceError(
            f"{what} with parameter '{flow.param_name(int(w.reshape(-1)[0]))}' reads each input neuron at {per} "
            "positions (a Flatten of a convolution output with spatial size > 1?). A neural graph has one node per "
            "neuron and cannot say which position each weight reads; pool to spatial size 1 before Flatten "
            "(e.g. nn.AdaptiveAvgPool2d(1))"
        )


def _weight_rows(flow: Dataflow, op: Op, x, w, out, bias=None) -> None:
    vx, vw = flow.value(x), flow.value(w)
    if isinstance(vw, Params) and not isinstance(vx, Params):
        if w.ndim != 2:
            if not all(s == 1 for s in w.shape[:-2]) and flow.values.get(id(x)) is not None:
                _batched_weight(flow, op, x, vw, out)
                return
            vw = Params(vw.idx.reshape(w.shape[-2:]))
        res = _linear(flow, x, vw.idx, out.shape, op.name)
    elif isinstance(vx, Params) and not isinstance(vw, Params):  # W @ x: neurons along dim -2 of the result
        xt = w.transpose(-1, -2)
        uw = flow.units_along(w, -2)
        flow.set(xt, Units(uw.ids.transpose(-1, -2)))
        idx = vx.idx.reshape(x.shape[-2:]).transpose(-1, -2)
        res = _linear(flow, xt, idx, out.transpose(-1, -2).shape, op.name)
        res = Units(res.ids.transpose(-1, -2).clone(), True)
    else:
        raise TraceError(f"{op.name}: parameters {flow.params_named(vx)} and {flow.params_named(vw)} multiplied together "
                         "(a factorized weight): a graph edge holds one parameter value")
    if bias is not None:
        vb = flow.value(bias)
        if isinstance(vb, Params):
            flow.attach(vb, res, out.shape, et.BIAS)
        elif isinstance(vb, Units):
            res = _combine(flow, op, [(bias, vb), (out, res)], [vb.ids.expand(out.shape), res.ids], out.shape)
    flow.set(out, res)


def _batched_weight(flow: Dataflow, op: Op, x, vw: Params, out) -> None:
    raise TraceError(f"{op.name}: a batched weight {flow.params_named(vw)} (one matrix per batch entry) is not supported")


@rule("aten.mm", "aten.bmm", "aten.matmul")
def _mm(flow: Dataflow, op: Op) -> None:
    a, b = op.args[:2]
    if isinstance(flow.value(a), Params) or isinstance(flow.value(b), Params):
        _weight_rows(flow, op, a, b, op.out)
    else:
        _contract(flow, op, a, b, op.out)


@rule("aten.addmm", "aten.baddbmm")
def _addmm(flow: Dataflow, op: Op) -> None:
    bias, a, b = op.args[:3]
    if isinstance(flow.value(a), Params) or isinstance(flow.value(b), Params):
        _weight_rows(flow, op, a, b, op.out, bias)
    else:
        flow.opaque(op, "adds to a product of two activations")


@rule("aten.embedding")
def _embedding(flow: Dataflow, op: Op) -> None:
    weight, indices = op.args[:2]
    vw, vi = flow.value(weight), flow.value(indices)
    if not isinstance(vw, Params) or not isinstance(vi, Data):
        flow.opaque(op, "an embedding of computed indices")
        return
    _rows(flow, op, vw.idx, vi, op.out)


def _rows(flow: Dataflow, op: Op, table: torch.Tensor, vi: Data, out) -> None:
    """Rows of a parameter table picked by indices: one node per row (token or position)."""
    name = flow.param_name(int(table.reshape(-1)[0]))
    rows, width = table.shape[0], table[0].numel()
    role = "token" if vi.origin == "input" else "position"
    src = flow.row_group(name, rows, role)
    dst = flow.rel.allocate(width, "hidden", name)
    etype = et.TOKEN_EMBEDDING if role == "token" else et.POSITION_EMBEDDING
    flow.rel.dense.append(DenseRelation(src, dst, table.reshape(rows, width, 1), etype, name))
    flow.set(out, Units(dst.expand(out.shape).clone(), True))


@rule("aten.index", "aten.index_select", "aten.gather", "aten.take_along_dim")
def _index(flow: Dataflow, op: Op) -> None:
    src = op.args[0]
    v = flow.value(src)
    index_tensors = _tensors((op.args[1:], op.kwargs))
    if any(not isinstance(flow.value(t), Data) for t in index_tensors):
        flow.opaque(op, "indices computed from neurons")
        return
    if isinstance(v, Params):
        dim0 = op.name == "aten.index" and op.args[1][0] is not None and len(op.args[1]) == 1
        dim0 = dim0 or (op.name == "aten.index_select" and op.args[1] == 0)
        if dim0:
            _rows(flow, op, v.idx.reshape(v.idx.shape[0], -1), flow.value(index_tensors[0]), op.out)
            return
        flow.opaque(op, "a parameter indexed by data")
        return
    if isinstance(v, Data):
        flow.set(op.out, _data_origin(flow, [src, *index_tensors]))
        return
    # an activation indexed by data: fine where its neurons do not change along the indexed dims
    zeros = {id(t): torch.zeros(t.shape, dtype=torch.int64) for t in index_tensors}
    args, kwargs = tree_map(lambda x: zeros.get(id(x), x) if isinstance(x, torch.Tensor) else x, (op.args, op.kwargs))
    args = (v.ids, *args[1:])
    dims = _indexed_dims(op, src.ndim)
    if any(flow.varies(v.ids, d) for d in dims):
        flow.opaque(op, "picks neurons by data")
        return
    flow.set(op.out, Units(op.func(*args, **kwargs), False))


def _indexed_dims(op: Op, ndim: int) -> list[int]:
    if op.name == "aten.index":
        return [d for d, i in enumerate(op.args[1]) if i is not None]
    return [op.args[1] % ndim]


@rule("aten.convolution", "aten._convolution")
def _convolution(flow: Dataflow, op: Op) -> None:
    x, w, bias = op.args[:3]
    transposed, groups = bool(op.args[6]), int(op.args[8])
    vw = flow.value(w)
    if not isinstance(vw, Params):
        flow.opaque(op, "a convolution with a computed kernel")
        return
    u = flow.units_along(x, 1)
    src = flow.along(u.ids, 1, op.name)
    idx = vw.idx
    if transposed:  # (in, out/g, *k) -> (out, in/g, *k)
        cin, og = idx.shape[:2]
        idx = idx.reshape(groups, cin // groups, og, *idx.shape[2:]).transpose(1, 2).reshape(groups * og, cin // groups, *idx.shape[2:])
    cout, cg = idx.shape[:2]
    og = cout // groups
    kernel = idx.reshape(cout, cg, -1)  # [out, in/g, K]
    dst = flow.rel.allocate(cout, "hidden", op.name)
    name = flow.param_name(int(idx.reshape(-1)[0]))
    if cg == 1 and og == 1 and groups > 1:  # depthwise: channel c to channel c
        flow.rel.paired.append(PairedRelation(src, dst, kernel[:, 0, :], et.CONV, name))
    else:
        for g in range(groups):
            k = kernel[g * og : (g + 1) * og].transpose(0, 1)  # [in/g, out/g, K]
            flow.rel.dense.append(DenseRelation(src[g * cg : (g + 1) * cg], dst[g * og : (g + 1) * og], k, et.CONV, name))
    shape = [1] * op.out.ndim
    shape[1] = cout
    res = Units(dst.reshape(shape).expand(op.out.shape).clone(), True)
    vb = flow.value(bias) if bias is not None else None
    if isinstance(vb, Params):
        flow.attach(Params(vb.idx.reshape(shape)), res, op.out.shape, et.BIAS)
    flow.set(op.out, res)


def _norm_params(flow: Dataflow, x_units: Units, shape, weight, bias, param_shape) -> None:
    for t, etype in ((weight, et.NORM), (bias, et.BIAS)):
        v = flow.value(t) if t is not None else None
        if isinstance(v, Params):
            flow.attach(Params(v.idx.reshape(param_shape)), x_units, shape, etype)
        elif isinstance(v, Units):
            raise TraceError(f"{flow.op_name}: a norm scaled by an activation is not supported")


def _reduce_over(flow: Dataflow, ids: torch.Tensor, dims) -> None:
    dims = sorted(d % ids.ndim for d in dims)
    rest = [d for d in range(ids.ndim) if d not in dims]
    if any(flow.varies(ids, d) for d in dims):
        size = 1
        for d in dims:
            size *= ids.shape[d]
        flow.rel.reduce(ids.permute(*rest, *dims).reshape(-1, size))


@rule("aten.native_layer_norm", "aten._fused_rms_norm", "aten.rms_norm", "aten.layer_norm")
def _layer_norm(flow: Dataflow, op: Op) -> None:
    x, normalized = op.args[:2]
    if op.name in ("aten._fused_rms_norm", "aten.rms_norm"):
        weight, bias = (op.args[2] if len(op.args) > 2 else None), None
    else:
        weight, bias = (op.args[2] if len(op.args) > 2 else None), (op.args[3] if len(op.args) > 3 else None)
    dims = list(range(x.ndim - len(normalized), x.ndim))
    u = flow.units_along(x, -1) if len(normalized) == 1 else flow.value(x)
    if not isinstance(u, Units):
        u = flow.units_along(x, -1)
    _reduce_over(flow, u.ids, dims)
    _norm_params(flow, u, x.shape, weight, bias, tuple(normalized))
    outs = _tensors(op.out)
    flow.set(outs[0], Units(u.ids, u.fresh and flow.uses[id(x)] == 1))
    for t in outs[1:]:
        flow.set(t, Data("const"))


@rule("aten.native_batch_norm", "aten._native_batch_norm_legit_no_training", "aten._native_batch_norm_legit",
      "aten._native_batch_norm_legit_functional", "aten.native_group_norm", "aten.instance_norm")
def _channel_norm(flow: Dataflow, op: Op) -> None:
    x, weight, bias = op.args[:3]
    u = flow.units_along(x, 1)
    channels = flow.along(u.ids, 1, op.name)
    pshape = [1] * x.ndim
    pshape[1] = -1
    _norm_params(flow, u, x.shape, weight, bias, tuple(pshape))
    if op.name == "aten.native_group_norm":
        groups = int(op.args[6])
        flow.rel.reduce(channels.reshape(groups, -1))
    elif op.name != "aten.instance_norm":
        for t in op.args[3:5]:
            name = flow.trace.buffers.get(id(t))
            if name is None and isinstance(t, torch.Tensor):
                name = getattr(flow.value(t), "buffer", None)
            if name is not None:
                flow.rel.buffers.append((name, channels))
    outs = _tensors(op.out)
    flow.set(outs[0], Units(u.ids, u.fresh and flow.uses[id(x)] == 1))
    for t in outs[1:]:
        flow.set(t, Data("const"))


# ---------------------------------------------------------------------------------- attention
def _contract(flow: Dataflow, op: Op, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    va, vb = flow.value(a), flow.value(b)
    if isinstance(va, Data) and isinstance(vb, Data):
        flow.set(out, _data_origin(flow, [a, b]))
        return
    ia = va.ids if isinstance(va, Units) else None
    ib = vb.ids if isinstance(vb, Units) else None
    squeeze = a.ndim == 2
    if squeeze:
        ia = ia.unsqueeze(0) if ia is not None else None
        ib = ib.unsqueeze(0) if ib is not None else None
    res = contract_ids(flow, op.name, ia, ib, tuple(a.shape[-2:]), tuple(b.shape[-2:]))
    if res is None:
        for v in (va, vb):
            if isinstance(v, Units):
                flow.rel.fix(v.ids, f"contracted by {op.name} in a way without a rule")
        flow.set(out, Data("const"))
        return
    flow.set(out, Units(res.squeeze(0) if squeeze else res, False))


def contract_ids(flow: Dataflow, what: str, ia, ib, sa, sb) -> torch.Tensor | None:
    """Neurons of ``A @ B`` for ``A [N, M, K]`` and ``B [N, K, P]`` (either may be data: None).

    Two kinds of contraction are understood: over a neuron axis between two activations (q @ k^T:
    the result belongs to one head node per query row) and over a data axis, weighting neurons of
    one side by data or by attention weights (probs @ v: the result keeps the value neurons)."""
    n = (ia if ia is not None else ib).shape[0]
    m, k, p = sa[0], sa[1], sb[1]
    a_k = ia is not None and flow.varies(ia, 2)
    b_k = ib is not None and flow.varies(ib, 1)
    a_m = ia is not None and flow.varies(ia, 1)
    b_p = ib is not None and flow.varies(ib, 2)
    a_head = ia is not None and flow.is_head(int(ia.reshape(-1)[0]))
    b_head = ib is not None and flow.is_head(int(ib.reshape(-1)[0]))
    if ia is not None and ib is not None and not a_head and not b_head and not a_m and not b_p and (a_k or b_k or k == 1):
        heads = _query_key(flow, what, ia[:, 0, :], ib[:, :, 0])  # q @ k^T over the heads' query-key neurons
        return heads.reshape(n, 1, 1).expand(n, m, p).clone()
    if ib is not None and not b_k and not b_head and (ia is None or (not a_k and not a_m)):
        v = ib[:, 0, :]  # probs @ v (or data @ v) over a data axis
        if ia is None or not a_head:
            if ia is not None:
                return None
            return v.unsqueeze(1).expand(n, m, p).clone()
        return _weighted_values(flow, what, ia[:, 0, 0], v).unsqueeze(1).expand(n, m, p).clone()
    if ia is not None and not a_k and not a_head and (ib is None or (not b_k and not b_p)):
        # the same, transposed: v^T @ probs^T
        res = contract_ids(flow, what, ib.transpose(1, 2) if ib is not None else None, ia.transpose(1, 2), (p, k), (k, m))
        return res.transpose(1, 2).clone() if res is not None else None
    return None


def _query_key(flow: Dataflow, what: str, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Contracted query and key neurons [N, K]: one head node per distinct query row."""
    pairs = torch.stack([q.reshape(-1), k.reshape(-1)], 1).unique(dim=0)
    q_once = pairs[:, 0].unique().numel() == pairs.shape[0]
    k_once = pairs[:, 1].unique().numel() == pairs.shape[0]
    flow.rel.roles.append((pairs[:, 0], "query"))
    flow.rel.roles.append((pairs[:, 1], "key"))
    rows, inverse = q.unique(dim=0, return_inverse=True)
    heads = flow.rel.allocate(rows.shape[0], "head", what)
    width = rows.shape[1]
    flow.rel.paired.append(PairedRelation(heads.repeat_interleave(width), rows.reshape(-1), None, et.HEAD, what, ties=False))
    if q_once and k_once:  # one key neuron per query neuron: they are the same neuron
        flow.rel.merge(pairs[:, 0], pairs[:, 1])
        return heads[inverse]
    # grouped-query attention: a key neuron serves several query heads. One node per key/value
    # head joins its key neurons and its query heads; key neuron j meets query neuron j of each
    flow.rel.paired.append(PairedRelation(pairs[:, 1], pairs[:, 0], None, et.HEAD, what + " (key-query pairs)", ties=False))
    krows, kinverse = k.unique(dim=0, return_inverse=True)
    kv = flow.rel.allocate(krows.shape[0], "head", what + " (key/value heads)")
    flow.rel.paired.append(PairedRelation(kv.repeat_interleave(krows.shape[1]), krows.reshape(-1), None, et.HEAD,
                                          what + " (key heads)", ties=False))
    served = torch.stack([kv[kinverse], heads[inverse]], 1).unique(dim=0)
    flow.rel.paired.append(PairedRelation(served[:, 0], served[:, 1], None, et.HEAD, what + " (query heads)", ties=False))
    flow.kv_head.update(zip(served[:, 1].tolist(), served[:, 0].tolist()))
    return heads[inverse]


def _weighted_values(flow: Dataflow, what: str, heads: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Head ``heads[n]`` averages value neurons ``v[n]``: they join the head (or, shared by
    several heads, each head gets output neurons of its own tied to them)."""
    n, p = v.shape
    h = heads.reshape(n, 1).expand(n, p).reshape(-1)
    pairs, inverse = torch.stack([h, v.reshape(-1)], 1).unique(dim=0, return_inverse=True)
    flow.rel.roles.append((v.reshape(-1), "value"))
    if pairs[:, 1].unique().numel() == pairs.shape[0]:
        out = v
        members = pairs
    else:
        new = flow.rel.allocate(pairs.shape[0], "value", what + " (per-head outputs)")
        flow.rel.paired.append(PairedRelation(pairs[:, 1], new, None, et.HEAD, what + " (value pairs)", ties=False))
        out = new[inverse].reshape(n, p)
        members = torch.stack([pairs[:, 0], new], 1)
        kv = [flow.kv_head.get(int(h)) for h in pairs[:, 0].tolist()]
        if all(k is not None for k in kv):  # the shared values join their key/value head
            owned = torch.stack([torch.tensor(kv), pairs[:, 1]], 1).unique(dim=0)
            flow.rel.paired.append(PairedRelation(owned[:, 0], owned[:, 1], None, et.HEAD, what + " (value heads)", ties=False))
    flow.rel.paired.append(PairedRelation(members[:, 0], members[:, 1], None, et.HEAD, what + " (values)", ties=False))
    return out


@rule("aten._scaled_dot_product_flash_attention_for_cpu", "aten._scaled_dot_product_flash_attention",
      "aten._scaled_dot_product_efficient_attention", "aten._scaled_dot_product_cudnn_attention",
      "aten.scaled_dot_product_attention", "aten._scaled_dot_product_attention_math",
      "aten._scaled_dot_product_fused_attention_overrideable")
def _sdpa(flow: Dataflow, op: Op) -> None:
    q, k, v = op.args[:3]
    vals = [flow.value(t) for t in (q, k, v)]
    mask = op.kwargs.get("attn_mask")
    if mask is None and op.name in ("aten.scaled_dot_product_attention", "aten._scaled_dot_product_attention_math",
                                    "aten._scaled_dot_product_flash_attention_for_cpu"):
        mask = next((a for a in op.args[3:] if isinstance(a, torch.Tensor)), None)
    if op.name == "aten._scaled_dot_product_efficient_attention" and len(op.args) > 3:
        mask = op.args[3]
    if not all(isinstance(x, Units) for x in vals) or (mask is not None and not isinstance(flow.value(mask), Data)):
        flow.opaque(op, "attention over values without neurons")
        return
    iq, ik, iv = (x.ids for x in vals)
    lead = iq.shape[:-2]
    hq, hk = iq.shape[-3] if iq.ndim > 3 else 1, ik.shape[-3] if ik.ndim > 3 else 1
    if hq != hk:  # grouped-query attention: each key/value head serves hq // hk query heads
        ik = ik.repeat_interleave(hq // hk, dim=-3)
        iv = iv.repeat_interleave(hq // hk, dim=-3)
    n = int(torch.tensor(lead).prod()) if lead else 1
    iq, ik, iv = iq.reshape(n, *iq.shape[-2:]), ik.reshape(n, *ik.shape[-2:]), iv.reshape(n, *iv.shape[-2:])
    scores = contract_ids(flow, op.name, iq, ik.transpose(1, 2), tuple(iq.shape[1:]), (ik.shape[2], ik.shape[1]))
    if scores is None:
        flow.opaque(op, "attention whose query and key neurons cannot be paired")
        return
    out = contract_ids(flow, op.name, scores, iv, tuple(scores.shape[1:]), tuple(iv.shape[1:]))
    if out is None:
        flow.opaque(op, "attention whose values cannot be placed")
        return
    outs = _tensors(op.out)
    flow.set(outs[0], Units(out.reshape(outs[0].shape), False))
    for t in outs[1:]:
        flow.set(t, Data("const"))


# ---------------------------------------------------------------------------------- reductions
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
    outs = _tensors(op.out)
    if not isinstance(v, Units):
        _set_all(flow, op.out, [Data("const") if isinstance(v, Params) else _data_origin(flow, [x])] * len(outs))
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
    _reduce_over(flow, v.ids, dims)
    if any(flow.varies(v.ids, d) for d in kept):
        flow.rel.fix(v.ids, f"reduced by {op.name} over some of its neuron axes only")
    _set_all(flow, op.out, [Data("const")] * len(outs))


@rule("aten._softmax", "aten._safe_softmax", "aten._log_softmax", "aten.softmax", "aten.log_softmax")
def _softmax(flow: Dataflow, op: Op) -> None:
    x, dim = op.args[:2]
    v = flow.value(x)
    if isinstance(v, Units):
        _reduce_over(flow, v.ids, [dim])
        flow.set(op.out, Units(v.ids, False))
    elif isinstance(v, Params):
        raise TraceError(f"{op.name} of parameter {flow.params_named(v)} before it is used is not supported")
    else:
        flow.set(op.out, _data_origin(flow, [x]))


ALONG = ("aten.cumsum", "aten.cumprod", "aten.sort", "aten.topk", "aten.argsort", "aten.cummax", "aten.cummin",
         "aten.tril", "aten.triu", "aten.kthvalue")


@rule(*ALONG)
def _along(flow: Dataflow, op: Op) -> None:
    x = op.args[0]
    v = flow.value(x)
    outs = _tensors(op.out)
    if not isinstance(v, Units):
        if isinstance(v, Params):
            flow.opaque(op, "order-dependent op on a parameter")
            return
        _set_all(flow, op.out, [_data_origin(flow, [x])] * len(outs))
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


CREATION_LIKE = ("aten.zeros_like", "aten.ones_like", "aten.full_like", "aten.empty_like", "aten.rand_like",
                 "aten.randn_like", "aten.new_zeros", "aten.new_ones", "aten.new_full", "aten.new_empty",
                 "aten.fill", "aten.fill_", "aten.zero_", "aten.bernoulli", "aten.bernoulli_", "aten.randint_like",
                 "aten.empty_strided", "aten.new_empty_strided", "aten.scalar_tensor", "aten.arange", "aten.zeros",
                 "aten.ones", "aten.full", "aten.empty", "aten.ones_like")


UNIFORM = ("aten.zeros_like", "aten.ones_like", "aten.full_like", "aten.new_zeros", "aten.new_ones", "aten.new_full",
           "aten.fill", "aten.fill_", "aten.zero_", "aten.scalar_tensor", "aten.zeros", "aten.ones", "aten.full")


@rule(*CREATION_LIKE)
def _creation(flow: Dataflow, op: Op) -> None:
    for t in _tensors(op.out):
        flow.set(t, Data("const", uniform=op.name in UNIFORM))
