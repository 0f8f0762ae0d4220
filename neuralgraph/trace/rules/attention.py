"""Contractions of two activations: ``q @ k^T`` makes head nodes and joins query and key neurons;
``probs @ v`` makes the value neurons members of their head; fused attention ops do both."""

from __future__ import annotations

import torch

from ... import edge_types as et
from ..dataflow import Dataflow
from ..record import Op
from ..relations import PairedRelation
from ..rows import unique_pairs, unique_rows
from ..values import Data, Units
from .registry import data_origin, tensors_of, rule


def contract(flow: Dataflow, op: Op, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    va, vb = flow.value(a), flow.value(b)
    if isinstance(va, Data) and isinstance(vb, Data):
        flow.set(out, data_origin(flow, [a, b]))
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
    pairs = unique_pairs(q, k)
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
    served = unique_rows(torch.stack([kv[kinverse], heads[inverse]], 1))
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
            owned = unique_rows(torch.stack([torch.tensor(kv), pairs[:, 1]], 1))
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
    outs = tensors_of(op.out)
    flow.set(outs[0], Units(out.reshape(outs[0].shape), False))
    for t in outs[1:]:
        flow.set(t, Data("const"))
