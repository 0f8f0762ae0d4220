"""Mixture-of-experts layers: experts permute among themselves together with their router's units.

Hugging Face routes tokens to experts through ``topk`` indices, which the trace reads as data, so
no dataflow ties expert ``e`` to router unit ``e``. The structure is read off what the trace does
see instead: a ``topk`` over a set of ``E`` neurons (a router, :func:`~neuralgraph.trace.rules.
reductions._route`), then uses of the slices ``P[0] .. P[E-1]`` of stacked expert parameters
(one matrix per expert) creating copies of the same neurons. Then

* each expert's neurons get one head edge from its router unit (the router's units become the
  head nodes of an :class:`~neuralgraph.symmetry.PermutableHeads`);
* the emitter lays each expert's neurons out so that every node group holds the same neurons of
  all experts, one equal segment per expert (:func:`expert_order`);
* a per-expert vector added to neurons that no expert owns (GPT-OSS's down-projection bias, which
  the routing weight scales) leaves from the expert's router unit instead of a bias node;
* a buffer added along the router's units (DeepSeek-V3's ``e_score_correction_bias``) moves with them.

That expert ``e`` is the one router unit ``e`` picks is a convention of the code, not something
the dataflow shows: the symmetry is recorded in ``meta["routed_experts"]`` and kept only where the
functional check at conversion confirms it (:mod:`neuralgraph.trace.function_check`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .. import edge_types as et
from .relations import DenseRelation, PairedRelation, Relations

__all__ = ["ExpertLayer", "ExpertLayout", "find_experts", "expert_order"]

log = logging.getLogger(__name__)


@dataclass
class ExpertLayer:
    """A router's ``E`` units and its experts' neurons, ``members[e, w]`` the ``w``-th neuron of
    expert ``e`` (the same place in every expert's computation)."""

    router: torch.Tensor
    members: torch.Tensor


def find_experts(rel: Relations, canon: torch.Tensor) -> list[ExpertLayer]:
    """The expert layers of a trace (after merging neurons: ``canon``), declared into ``rel``:
    head edges from each router unit to its expert's neurons, routers marked as head nodes,
    per-expert vectors and buffers moved onto the router."""
    candidates = []
    for index, router in enumerate(rel.routers, start=1):
        slices = [s for s in rel.expert_slices if s[3] == index]
        spans = _spans(rel, router, slices) if slices else None
        if spans is not None:
            candidates.append((router, slices, spans))
    if not candidates:
        return []
    own, signature = _own_neurons(rel, canon, [c[2] for c in candidates]), _signature(rel)
    layers = []
    for router, slices, spans in candidates:
        members = [lo + torch.nonzero(own[lo:hi]).reshape(-1) for lo, hi in spans.tolist()]
        if len({m.numel() for m in members}) != 1 or not members[0].numel() or not all(
                torch.equal(signature[:, m], signature[:, members[0]]) for m in members[1:]):
            log.debug("traced: the experts of the router at neuron %d are not copies of one another", int(router[0]))
            continue
        layers.append(ExpertLayer(router.clone(), torch.stack(members)))
        _declare(rel, layers[-1], canon, slices)
    return layers


def _spans(rel: Relations, router: torch.Tensor, slices: list) -> torch.Tensor | None:
    """``[E, 2]``: the neurons created from the first use of expert ``e``'s weights to the first of
    expert ``e + 1``'s (the last expert's as long as the shortest other), where the slices used
    after ``router`` are one per router unit, in order; else None."""
    count = router.numel()
    if any(s[1] != count for s in slices) or {s[2] for s in slices} != set(range(count)) or (
            _allocation_of(rel, router) is None):
        log.debug("traced: %d experts do not match a router of %d units", len({s[2] for s in slices}), count)
        return None
    first = torch.tensor([min(int(s[4].min()) for s in slices if s[2] == e) for e in range(count)])
    if not bool((first[1:] > first[:-1]).all()):
        return None
    width = int((first[1:] - first[:-1]).min()) if count > 1 else rel.num_units - int(first[0])
    ends = torch.cat([first[1:], first[-1:] + width]).clamp(max=rel.num_units)
    return torch.stack([first, ends], 1)


def _own_neurons(rel: Relations, canon: torch.Tensor, spans: list[torch.Tensor]) -> torch.Tensor:
    """Per neuron: whether it is one expert's own, computed in its span, with every neuron merged
    into it in that span too (the experts' common output neurons are no expert's)."""
    owner = torch.full((rel.num_units,), -1, dtype=torch.long)
    base = 0
    for layer_spans in spans:
        for lo, hi in layer_spans.tolist():
            owner[lo:hi] = base
            base += 1
    lo = torch.full_like(owner, base).scatter_reduce(0, canon, owner, "amin")
    hi = torch.full_like(owner, -1).scatter_reduce(0, canon, owner, "amax")
    ids = torch.arange(rel.num_units)
    return (canon == ids) & (owner >= 0) & (lo == owner) & (hi == owner) & _computed(rel)


def _signature(rel: Relations) -> torch.Tensor:
    """Per neuron ``[2, n]``: the size of the allocation that created it and its place in it (the
    same for the same neuron of two experts' copies of one computation)."""
    out = torch.empty(2, rel.num_units, dtype=torch.long)
    for a in rel.allocations:
        out[0, a.start : a.start + a.size] = a.size
        out[1, a.start : a.start + a.size] = torch.arange(a.size)
    return out


def _computed(rel: Relations) -> torch.Tensor:
    """Per neuron: whether an op computed it (not a parameter's node, created where first used)."""
    computed = torch.ones(rel.num_units, dtype=torch.bool)
    for a in rel.allocations:
        if a.role in ("bias", "coordinate", "position", "token"):
            computed[a.start : a.start + a.size] = False
    return computed


def _allocation_of(rel: Relations, units: torch.Tensor):
    """The allocation that created exactly ``units`` (a router's linear), or None."""
    start, size = int(units[0]), units.numel()
    if not torch.equal(units, torch.arange(start, start + size)):
        return None
    return next((a for a in rel.allocations if a.start == start and a.size == size and a.role == "hidden"), None)


def _declare(rel: Relations, layer: ExpertLayer, canon: torch.Tensor, slices: list) -> None:
    count, width = layer.members.shape
    alloc = _allocation_of(rel, layer.router)
    alloc.role, alloc.name = "head", "router"
    heads = layer.router.repeat_interleave(width)
    rel.paired.append(PairedRelation(heads, layer.members.reshape(-1), None, et.HEAD, "experts", ties=False))
    rel.buffers += [(name, layer.router) for name, units in rel.buffers_along if torch.equal(units, layer.router)]
    shared = torch.zeros(rel.num_units, dtype=torch.bool)  # what the experts' weights all write into
    shared[canon[torch.cat([s[4] for s in slices])]] = True
    shared[layer.members.reshape(-1)] = False
    rel.dense[:] = [_from_router(r, layer.router, shared[canon]) for r in rel.dense]


def _from_router(r: DenseRelation, router: torch.Tensor, shared: torch.Tensor) -> DenseRelation:
    """A bias relation holding slice ``e`` of a stacked ``[E, n]`` parameter, added to the neurons
    every expert writes into (``shared``), leaves from router unit ``e`` (the expert's node)
    instead of the bias node: the vector moves with its expert."""
    if r.elems is None or r.src.numel() != 1 or r.edge_type != et.BIAS or r.elems.spec is None:
        return r
    shape = r.elems.spec.shape
    if len(shape) != 2 or shape[0] != router.numel() or r.elems.numel() != shape[1]:
        return r
    at = r.elems.first() - r.elems.spec.offset
    if at % shape[1] or not bool(shared[r.dst].all()):
        return r
    return DenseRelation(router[at // shape[1]].reshape(1), r.dst, r.elems, r.edge_type, r.name)


@dataclass
class ExpertLayout:
    """How the emitter lays experts out: ``order[k]`` is the node id placed at position ``k``;
    ``first`` / ``last`` the ids that begin and end each node group of all experts' neurons;
    ``copy[i]`` is the same neuron of another expert as ``original[i]`` (of the first expert)."""

    order: torch.Tensor
    first: torch.Tensor
    last: torch.Tensor
    copy: torch.Tensor
    original: torch.Tensor


def expert_order(layers: list[ExpertLayer], new_id: torch.Tensor, cuts: torch.Tensor) -> ExpertLayout | None:
    """A layout of the emitter's node ids (``new_id`` per neuron, ``cuts`` where groups would
    start) that places the same neurons of every expert side by side: each run of an expert's
    neurons that one node group would hold (consecutive ids, no cut between them, in every expert)
    becomes ``E`` equal segments, expert by expert, where the first expert's run was. None with
    no expert."""
    m = cuts.numel() - 1
    key = torch.arange(m) * (m + 1)
    first, last, copy, original = [], [], [], []
    for layer in layers:
        ids = new_id[layer.members]
        ids = ids[:, (ids >= 0).all(0)]  # neurons no relation reaches are no nodes
        if ids.shape[1] == 0:
            continue
        count, width = ids.shape
        step = torch.ones(width, dtype=torch.bool)  # whether column w starts a run
        step[1:] = ((ids[:, 1:] != ids[:, :-1] + 1) | cuts[ids[:, 1:]]).any(0)
        run = torch.cumsum(step.long(), 0) - 1
        start = torch.nonzero(step).reshape(-1)
        anchor = ids[0, start[run]]  # where the first expert's run sits
        inside = torch.arange(width) - start[run]
        key[ids] = anchor.unsqueeze(0) * (m + 1) + torch.arange(count).unsqueeze(1) * width + inside.unsqueeze(0)
        ends = torch.cat([start[1:], torch.tensor([width])]) - 1
        first.append(ids[0, start])
        last.append(ids[-1, ends])
        copy.append(ids[1:].reshape(-1))
        original.append(ids[:1].expand(count - 1, width).reshape(-1))
    if not first:
        return None
    return ExpertLayout(torch.argsort(key), *(torch.cat(x) for x in (first, last, copy, original)))
