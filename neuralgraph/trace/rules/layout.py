"""Movers: ops that only move elements (views, transposes, ``cat``, ``split``, ...). The rule runs
the same op on the neuron ids (or on a parameter's strided offsets), so every layout change is exact."""

from __future__ import annotations

import torch
from torch.utils._pytree import tree_map

from ... import edge_types as et
from ..dataflow import Dataflow, TraceError
from ..elems import Elems
from ..record import Op
from ..values import Data, Params, Units
from .elementwise import pin_by_data
from .registry import data_origin, set_all, tensors_of, rule


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
# in-place layout changes (``h.transpose_(0, 1)`` in RNN code): the tensor now holds its own
# elements in another layout; the ids move by the out-of-place op, never in place (they are shared)
IN_PLACE_MOVERS = {
    "aten.transpose_": torch.transpose, "aten.t_": torch.t, "aten.squeeze_": torch.squeeze,
    "aten.unsqueeze_": torch.unsqueeze, "aten.swapaxes_": torch.swapaxes, "aten.swapdims_": torch.swapdims,
}


@rule(*IDENTITY)
def _identity(flow: Dataflow, op: Op) -> None:
    src = op.args[0]
    v = flow.value(src)
    if isinstance(v, Units):
        v = Units(v.ids, v.fresh and flow.uses[id(src)] == 1)
    for t in tensors_of(op.out):
        flow.set(t, v)


@rule(*MOVERS, *IN_PLACE_MOVERS)
def _mover(flow: Dataflow, op: Op) -> None:
    tensors = tensors_of((op.args, op.kwargs))
    vals = [flow.value(t) for t in tensors]
    if all(isinstance(v, Data) for v in vals):
        origin = data_origin(flow, tensors)
        origin.uniform = all(v.uniform for v in vals)
        set_all(flow, op.out, [origin] * len(tensors_of(op.out)))
        return
    kinds = {type(v) for v in vals}
    if len(kinds) > 1:
        flow.opaque(op, "moves neurons together with other values")
        return
    func = IN_PLACE_MOVERS.get(op.name) or op.func
    if op.name in ("aten.view", "aten._unsafe_view"):
        func = torch.reshape  # ids need not be contiguous
    src = tensors[0]
    if isinstance(vals[0], Units):
        sub = {id(t): v.ids for t, v in zip(tensors, vals)}
        outs = tensors_of(func(*_substitute(op, sub)[0], **_substitute(op, sub)[1]))
        fresh = vals[0].fresh and flow.uses[id(src)] == 1
        set_all(flow, op.out, [Units(o, fresh) for o in outs])
        return
    # a parameter's layout changes: on the meta views where that stays a view (no memory), else on offsets
    roots = {id(v.idx.root) for v in vals if v.idx.symbolic}
    if len(roots) == 1 and all(v.idx.symbolic for v in vals):
        root = vals[0].idx.root
        args, kwargs = _substitute(op, {id(t): v.idx.view for t, v in zip(tensors, vals)})
        outs = tensors_of(func(*args, **kwargs))
        if all(o._base is root or o is root for o in outs):
            set_all(flow, op.out, [Params(Elems(spec=vals[0].idx.spec, view=o, root=root)) for o in outs])
            return
    args, kwargs = _substitute(op, {id(t): v.idx.tensor() for t, v in zip(tensors, vals)})
    set_all(flow, op.out, [Params(Elems(o)) for o in tensors_of(func(*args, **kwargs))])


def _substitute(op: Op, sub: dict[int, torch.Tensor]) -> tuple[tuple, dict]:
    """The op's arguments with each traced tensor replaced by what the rule tracks for it."""
    return tree_map(lambda x: sub.get(id(x), x) if isinstance(x, torch.Tensor) else x, (op.args, op.kwargs))


@rule("aten.cat", "aten.stack", "aten.concat", "aten.concatenate", "aten.hstack", "aten.vstack")
def _cat(flow: Dataflow, op: Op) -> None:
    parts = list(op.args[0])
    dim = op.args[1] if len(op.args) > 1 else op.kwargs.get("dim", 0)
    if op.name in ("aten.cat", "aten.concat", "aten.concatenate") and len(parts) > 1:
        # empty parts (an empty cache before the first step) add nothing
        parts = [t for t in parts if t.numel() > 0] or parts[:1]
    vals = [flow.value(t) for t in parts]
    if all(isinstance(v, Data) for v in vals):
        flow.set(op.out, data_origin(flow, parts))
        return
    if all(isinstance(v, Params) for v in vals):
        flow.set(op.out, Params(Elems(op.func([v.idx.tensor() for v in vals], dim))))
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
            pin_by_data(flow, first, t)
        ids.append(first)
    flow.set(op.out, Units(op.func(ids, dim), False))
