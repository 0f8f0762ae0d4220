"""Parameterized ops: ``mm``/``addmm`` with a weight, ``embedding``, ``convolution``, norms and biases
create neurons and the parameter edges into them."""

from __future__ import annotations

from math import prod

import torch
from torch.utils._pytree import tree_map

from ... import edge_types as et
from ..dataflow import Dataflow, TraceError
from ..elems import Elems
from ..record import Op
from ..relations import DenseRelation, PairedRelation
from ..values import Data, Params, Units
from .attention import contract
from .elementwise import combine
from .reductions import reduce_over
from .registry import data_origin, tensors_of, rule


def _linear(flow: Dataflow, x: torch.Tensor, w: Elems, out_shape, what: str) -> Units:
    """``x[..., K] @ W[K, N]``: the neurons of x along K feed N new neurons."""
    u = flow.units_along(x, -1)
    src = flow.along(u.ids, -1, what)
    n = w.shape[-1]
    dst = flow.rel.allocate(n, "hidden", what)
    if src.unique().numel() != src.numel():
        neurons, slots = _positions(flow, src, w, what)
        # each input neuron read at several positions (Swin's patch merging, a Flatten of a conv
        # output): one edge per (neuron, output) holding the weights of every position, as a kernel
        offsets = w.tensor()[slots.reshape(-1)].reshape(*slots.shape, n).permute(0, 2, 1)
        flow.rel.dense.append(DenseRelation(neurons, dst, w.materialized(offsets), et.CONV, flow.param_name(w.first())))
    else:
        flow.rel.dense.append(DenseRelation(src, dst, w.unsqueeze(-1), et.LINEAR, flow.param_name(w.first())))
    picked = expert_slice(w)
    if picked is not None:  # one expert's weight, a slice of all experts' stacked weights
        flow.rel.expert_slices.append((w.spec.name, *picked, len(flow.rel.routers), dst))
    return Units(dst.expand(out_shape).clone(), True)


def expert_slice(w: Elems) -> tuple[int, int] | None:
    """``(slices, slice)`` where ``w`` is exactly ``P[slice]`` of a stacked 3-d parameter ``P``
    (``slices`` experts' weights, one matrix each), else None."""
    s = w.strided()
    if s is None or len(w.spec.shape) != 3:
        return None
    first, shape, strides = s
    count = w.spec.shape[0]
    per = w.spec.numel // count
    at = first - w.spec.offset
    if prod(shape) != per or at % per:
        return None
    expect = 1
    for st, n in sorted((st, n) for n, st in zip(shape, strides) if n > 1):
        if st != expect:
            return None
        expect *= n
    return count, at // per


def _positions(flow: Dataflow, src: torch.Tensor, w: Elems, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Input neurons that appear several times along the contracted axis: the neurons and, per
    neuron, the rows of the weight that read it, in the order they appear (slot ``j`` is the
    neuron's ``j``-th position, the same spatial offset for every neuron)."""
    neurons, inverse, counts = src.unique(return_inverse=True, return_counts=True)
    if not bool((counts == counts[0]).all()):
        raise TraceError(
            f"{what} with parameter '{flow.param_name(w.first())}' reads some input neurons at more positions than "
            "others: one edge per neuron pair cannot say which weight reads which position"
        )
    order = torch.argsort(inverse, stable=True)  # rows grouped by neuron, each group in order of position
    return neurons, order.reshape(neurons.numel(), int(counts[0]))


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
    elif isinstance(vx, Params) and isinstance(vw, Params) and w.ndim == 2 and _varies_only_last(vx.idx, x):
        # a learned input (an attention-pooling probe, a learned query) read by a weight: its rows are
        # inputs of their own, like rows of an embedding table
        flow.set(x, _learned_rows(flow, vx, x))
        res = _linear(flow, x, vw.idx, out.shape, op.name)
    else:
        raise TraceError(f"{op.name}: parameters {flow.params_named(vx)} and {flow.params_named(vw)} multiplied together "
                         "(a factorized weight): a graph edge holds one parameter value")
    if bias is not None:
        vb = flow.value(bias)
        if isinstance(vb, Params):
            flow.attach(vb, res, out.shape, et.BIAS)
        elif isinstance(vb, Units):
            res = combine(flow, op, [(bias, vb), (out, res)], [vb.ids.expand(out.shape), res.ids], out.shape)
    flow.set(out, res)


def _varies_only_last(idx: Elems, x: torch.Tensor) -> bool:
    """Whether the parameter elements behind ``x`` are one vector repeated along every other axis."""
    if x.ndim == 0:
        return False
    offsets = idx.tensor().reshape(-1, x.shape[-1])
    return bool((offsets == offsets[:1]).all())


def _learned_rows(flow: Dataflow, vx: Params, x: torch.Tensor) -> Units:
    """A parameter vector used as an activation: one fixed node for the vector, one new neuron per
    element, an edge between them holding the element (an embedding table with a single row)."""
    offsets = vx.idx.tensor().reshape(-1, x.shape[-1])[:1]
    name = flow.param_name(int(offsets[0, 0]))
    src = flow.row_group(name, 1, "position")
    dst = flow.rel.allocate(x.shape[-1], "hidden", name)
    flow.rel.dense.append(DenseRelation(src, dst, vx.idx.materialized(offsets.reshape(1, -1, 1)), et.POSITION_EMBEDDING, name))
    return Units(dst.expand(x.shape).clone(), True)


def _batched_weight(flow: Dataflow, op: Op, x, vw: Params, out) -> None:
    raise TraceError(f"{op.name}: a batched weight {flow.params_named(vw)} (one matrix per batch entry) is not supported")


@rule("aten.mm", "aten.bmm", "aten.matmul")
def _mm(flow: Dataflow, op: Op) -> None:
    a, b = op.args[:2]
    if isinstance(flow.value(a), Params) or isinstance(flow.value(b), Params):
        _weight_rows(flow, op, a, b, op.out)
    else:
        contract(flow, op, a, b, op.out)


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


def _rows(flow: Dataflow, op: Op, table: Elems, vi: Data, out) -> None:
    """Rows of a parameter table picked by indices: one node per row (token or position)."""
    name = flow.param_name(table.first())
    rows = table.shape[0]
    width = table.numel() // max(rows, 1)
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
    index_tensors = tensors_of((op.args[1:], op.kwargs))
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
        flow.set(op.out, data_origin(flow, [src, *index_tensors]))
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
    name = flow.param_name(idx.first())
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
    reduce_over(flow, u.ids, dims)
    _norm_params(flow, u, x.shape, weight, bias, tuple(normalized))
    outs = tensors_of(op.out)
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
    outs = tensors_of(op.out)
    flow.set(outs[0], Units(u.ids, u.fresh and flow.uses[id(x)] == 1))
    for t in outs[1:]:
        flow.set(t, Data("const"))


@rule("aten._weight_norm_interface")
def _weight_norm(flow: Dataflow, op: Op) -> None:
    """``w = g * v / ||v||`` (``torch.nn.utils.parametrizations.weight_norm``) with the norm taken
    per kernel position (``dim`` >= 2, wav2vec2's positional convolution): the layer's edges hold
    ``v``, and each gain ``g[k]`` — shared by every edge at kernel position ``k`` — sits on a fixed
    node of its own. Neuron permutations keep every ``||v[:, :, k]||``. A gain per output neuron
    (``dim=0``, the default) is not placed yet."""
    v, g = op.args[:2]
    dim = op.args[2] if len(op.args) > 2 else op.kwargs.get("dim", 0)
    vv, vg = flow.value(v), flow.value(g)
    if not isinstance(vv, Params) or not isinstance(vg, Params):
        flow.opaque(op, "a weight norm of computed tensors")
        return
    dim %= v.ndim
    if dim < 2:
        raise TraceError(
            f"parameter {flow.params_named(vg)} is a weight-norm gain per {'output' if dim == 0 else 'input'} neuron "
            f"of {flow.params_named(vv)} (weight_norm(dim={dim})): the traced converter places gains per kernel position "
            "only; remove the parametrization (torch.nn.utils.parametrize.remove_parametrizations) to convert the weight"
        )
    offsets = vg.idx.tensor().reshape(-1)
    name = flow.param_name(int(offsets[0]))
    gains = flow.rel.allocate(offsets.numel(), "coordinate", f"{name}:elements")
    flow.rel.fix(gains, f"gains of '{name}' per kernel position")
    flow.rel.dense.append(DenseRelation(flow.bias_node(name), gains, vg.idx.materialized(offsets.reshape(1, -1, 1)), et.NORM, name))
    weight, norms = tensors_of(op.out)[:2]
    flow.set(weight, Params(vv.idx))
    flow.set(norms, Data("const"))


@rule("aten.index_put", "aten.index_put_")
def _index_put(flow: Dataflow, op: Op) -> None:
    """``x[mask] = p`` with a boolean mask over data axes (wav2vec2's masked time steps take a learned
    vector): the vector is added to the neurons it replaces, as a bias is; other forms are opaque."""
    x, indices, values = op.args[:3]
    vx, vv = flow.value(x), flow.value(values)
    index_tensors = [t for t in indices if isinstance(t, torch.Tensor)]
    out = tensors_of(op.out)[0]
    if (isinstance(vx, Units) and isinstance(vv, Params) and len(index_tensors) == 1
            and all(isinstance(flow.value(t), Data) for t in index_tensors)
            and index_tensors[0].dtype == torch.bool and index_tensors[0].ndim == x.ndim - 1
            and not any(flow.varies(vx.ids, d) for d in range(x.ndim - 1)) and values.ndim == 1):
        flow.attach(Params(vv.idx.reshape([1] * (x.ndim - 1) + [-1])), vx, tuple(x.shape), et.BIAS)
        flow.set(out, Units(vx.ids.clone(), False))
        if out is not x:
            flow.set(x, Units(vx.ids.clone(), False))
        return
    flow.opaque(op, "writes by index")
