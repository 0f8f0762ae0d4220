"""Neuron permutations pushed through a graph onto parameter vectors.

A permutation is given per node group as a tensor ``perm`` of local indices: unit ``i`` of the
group moves to position ``perm[i]``. A parameter on the edge ``(s, d)`` then moves to the edge
``(perm(s), perm(d))`` of the same block (``docs/design.md``, "The symmetry principle").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping

import torch

from .blocks import DENSE, DIAGONAL, STAR, EdgeBlock
from .errors import ParameterMismatchError
from .graph import NeuralGraph
from .permutation import Permutation, PermutationLike, as_permutation

__all__ = ["permute_params", "param_index", "node_permutation", "is_automorphism", "permute_buffers"]

Side = tuple[str, str]  # (block name, "src" | "dst")


class _Across(Exception):
    """A permutation moves units of a block's range onto another block's (experts, say)."""


def _local(block: EdgeBlock, side: str, perms: Mapping[str, torch.Tensor], skip: Collection[Side]) -> torch.Tensor | None:
    rng = block.src if side == "src" else block.dst
    perm = perms.get(rng.group)
    if perm is None or (block.name, side) in skip:
        return None
    local = perm[rng.lo : rng.lo + rng.size] - rng.lo
    if rng.size and (int(local.min()) < 0 or int(local.max()) >= rng.size):
        raise _Across
    return local


def permute_params(
    graph: NeuralGraph,
    theta: torch.Tensor,
    perm: PermutationLike,
    *,
    skip: Collection[Side] = (),
) -> torch.Tensor:
    """The parameters ``theta`` after permuting the graph's neurons by ``perm`` (a new tensor).

    Args:
        graph: the network's neural graph.
        theta: a flat parameter vector ``[P]`` or a stack of states ``[P, T]`` (every column is
            permuted alike), in the graph's flat-vector order (:func:`neuralgraph.flatten_params`).
        perm: a :class:`~neuralgraph.testing.Permutation` (what the strategies of
            ``neuralgraph.testing`` draw) or a mapping ``{group name: local permutation}``: unit
            ``i`` of the group moves to position ``perm[group][i]``.
        skip: ``(block name, "src" | "dst")`` pairs left unpermuted, or ``(block name, "slot", k)``
            for the ``k``-th tensor of a stacked block (e.g. SwiGLU's gate without its up
            projection), added to the permutation's own: this breaks the permutation on purpose
            (the verifier's "bad" permutations).

    Raises:
        ParameterMismatchError: ``theta`` is not ``[P]`` or ``[P, T]`` for this graph.
        ValueError: a group's permutation moves an edge where the graph has no edge of its type
            between the same groups (a block's values may move onto another block's: one block
            per expert, experts reordered), or a diagonal block's two sides are permuted differently.
    """
    perm = as_permutation(perm, tuple(skip))
    if not isinstance(theta, torch.Tensor) or theta.ndim not in (1, 2) or theta.shape[0] != graph.num_params:
        shape = tuple(theta.shape) if isinstance(theta, torch.Tensor) else type(theta).__name__
        raise ParameterMismatchError(
            f"permute_params: expected parameters of shape [{graph.num_params}] or [{graph.num_params}, T] for this "
            f"{graph.arch} graph, got {shape} (flatten a model with neuralgraph.flatten_params)"
        )
    if theta.ndim == 1:
        return _permute_vector(graph, theta, perm.perms, perm.skip)
    return theta[param_index(graph, perm)]


def param_index(graph: NeuralGraph, perm: PermutationLike) -> torch.Tensor:
    """``[P]`` int64: position ``j`` of the permuted parameter vector holds ``theta[index[j]]``
    (so ``theta[index]`` is :func:`permute_params` of ``theta``, for ``[P]`` and ``[P, T]`` alike)."""
    perm = as_permutation(perm)
    return _permute_vector(graph, torch.arange(graph.num_params), perm.perms, perm.skip)


def _permute_vector(
    graph: NeuralGraph, vector: torch.Tensor, perms: Mapping[str, torch.Tensor], skip: Collection[Side]
) -> torch.Tensor:
    """:func:`permute_params` of a flat vector ``[P]`` (any dtype: an ``arange`` gives the index map)."""
    vector = vector.contiguous()
    out = vector.clone()
    across = []
    for b in graph.blocks:
        if b.view is None:
            continue
        if b.kind == DIAGONAL and ((b.name, "src") in skip or (b.name, "dst") in skip):
            continue  # a diagonal block is left out whole: its two sides cannot differ
        try:
            ps, pd = _local(b, "src", perms, skip), _local(b, "dst", perms, skip)
        except _Across:
            across.append(b)
            continue
        if ps is None and pd is None:
            continue
        values = b.view.read(vector)
        target = values.clone()
        if b.kind == DENSE:
            ps = torch.arange(b.src.size) if ps is None else ps
            pd = torch.arange(b.dst.size) if pd is None else pd
            target[ps.unsqueeze(1), pd.unsqueeze(0)] = values
        elif b.kind == STAR:
            if pd is not None:
                target[pd] = values
        elif b.kind == DIAGONAL:
            ps = torch.arange(b.src.size) if ps is None else ps
            pd = torch.arange(b.dst.size) if pd is None else pd
            if not torch.equal(ps, pd):
                raise ValueError(f"diagonal block '{b.name}': source and target must be permuted alike")
            target[pd] = values
        for name, what, *slot in skip:
            if name == b.name and what == "slot":  # one stacked tensor left unpermuted
                cols = b.view.columns(slot[0])
                target[..., cols] = values[..., cols]
        b.view.write(out, target)
    if across:
        _move_across_blocks(graph, vector, out, across, perms, skip)
    return out


def _block_edges(b: EdgeBlock, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(src, dst, positions)`` of every edge of parameter block ``b``: global node ids ``[n]``
    and the flat-vector positions of its feature slots ``[n, K]`` (``index`` is ``arange(P)``)."""
    pos = b.view.read(index)
    if b.kind == DENSE:
        ns, nd = b.src.size, b.dst.size
        src = torch.arange(b.src.start, b.src.stop).unsqueeze(1).expand(ns, nd).reshape(-1)
        dst = torch.arange(b.dst.start, b.dst.stop).unsqueeze(0).expand(ns, nd).reshape(-1)
        return src, dst, pos.reshape(ns * nd, -1)
    dst = torch.arange(b.dst.start, b.dst.stop)
    src = torch.full_like(dst, b.src.start) if b.kind == STAR else torch.arange(b.src.start, b.src.stop)
    return src, dst, pos.reshape(b.dst.size, -1)


def _move_across_blocks(graph: NeuralGraph, vector: torch.Tensor, out: torch.Tensor, across: list[EdgeBlock],
                        perms: Mapping[str, torch.Tensor], skip: Collection[Side]) -> None:
    """The values of blocks whose ranges a permutation moves onto other blocks' (one block per
    expert, experts reordered): the value on edge ``(s, d)`` goes to the edge ``(pi(s), pi(d))`` of
    the block of the same edge type between the same groups that holds it. A side in ``skip``
    stays where it is. Raises ``ValueError`` where the graph has no such edge."""
    pi, n = node_permutation(graph, perms), graph.num_nodes
    index = torch.arange(graph.num_params)
    families: dict[tuple, list[EdgeBlock]] = {}
    for c in graph.blocks:
        if c.view is not None:
            families.setdefault(_family(c), []).append(c)
    tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
    for b in across:
        if _family(b) not in tables:
            edges = [_block_edges(c, index) for c in families[_family(b)]]
            keys = torch.cat([s * n + d for s, d, _ in edges])
            order = keys.argsort()
            tables[_family(b)] = keys[order], torch.cat([p for _, _, p in edges])[order]
        keys, targets = tables[_family(b)]
        src, dst, pos = _block_edges(b, index)
        wanted = (src if (b.name, "src") in skip else pi[src]) * n + (dst if (b.name, "dst") in skip else pi[dst])
        hit = torch.searchsorted(keys, wanted).clamp(max=keys.numel() - 1)
        if not bool((keys[hit] == wanted).all()) or targets.shape[1] != pos.shape[1]:
            raise ValueError(f"the permutation moves edges of block '{b.name}' where the graph has no edge of its type")
        out[targets[hit].reshape(-1)] = vector[pos.reshape(-1)]
        for name, what, *slot in skip:
            if name == b.name and what == "slot":  # that tensor of a stacked block stays in place
                cols = pos[:, b.view.columns(slot[0])]
                out[cols.reshape(-1)] = vector[cols.reshape(-1)]


def _family(b: EdgeBlock) -> tuple:
    """Blocks whose edges one permutation may exchange: same edge type and kernel part, same groups."""
    return b.edge_type, b.slot_offset, b.src.group, b.dst.group


def node_permutation(graph: NeuralGraph, perms: PermutationLike) -> torch.Tensor:
    """The global node permutation ``[N]``: node ``i`` moves to ``pi[i]`` (identity outside the
    permuted groups). ``perms`` is a :class:`~neuralgraph.testing.Permutation` or a mapping."""
    pi = torch.arange(graph.num_nodes)
    for name, perm in as_permutation(perms).perms.items():
        g = graph.group(name)
        pi[g.start : g.stop] = perm + g.start
    return pi


def is_automorphism(graph: NeuralGraph, perms: PermutationLike) -> bool:
    """Whether relabelling nodes by ``perms`` maps the graph's edge structure (endpoints and edge
    types, hence auxiliary edges with their fixed values) onto itself. (A permutation's ``skip``
    does not enter: it concerns the parameters, not the structure.)"""
    perms = _groups(perms)
    if _keeps_every_block(graph, perms):
        return True
    pi = node_permutation(graph, perms)
    n, types = graph.num_nodes, 16
    src, dst = graph.edge_index
    key = (src * n + dst) * types + graph.edge_type
    mapped = (pi[src] * n + pi[dst]) * types + graph.edge_type
    return torch.equal(key.sort().values, mapped.sort().values)


def _groups(perms: PermutationLike) -> Mapping[str, torch.Tensor]:
    """The per-group permutations of ``perms`` (a mapping is used as it is)."""
    return perms.perms if isinstance(perms, Permutation) else perms


def _keeps_every_block(graph: NeuralGraph, perms: Mapping[str, torch.Tensor]) -> bool:
    """A sufficient condition for :func:`is_automorphism`, decided from the block layout alone
    (no edge list): each block's source and target ranges are mapped onto whole ranges, a
    diagonal block's two sides move alike, and the images are the blocks the graph has (same kind
    and edge type, counted with multiplicity): then every block's edges land on a block's edges."""
    def image(rng) -> tuple[int, torch.Tensor] | None:
        perm = perms.get(rng.group)
        if perm is None or rng.size == 0:
            return rng.start, torch.arange(rng.size)
        part = perm[rng.lo : rng.lo + rng.size]
        lo = int(part.min())
        if int(part.max()) - lo + 1 != rng.size:  # not a whole range
            return None
        return rng.start - rng.lo + lo, part - lo

    keys, images = Counter(), Counter()
    for b in graph.blocks:
        keys[(b.kind, b.edge_type, b.src.start, b.src.size, b.dst.start, b.dst.size)] += 1
        src, dst = image(b.src), image(b.dst)
        if src is None or dst is None:
            return False
        if b.kind == DIAGONAL and not torch.equal(src[1], dst[1]):
            return False
        images[(b.kind, b.edge_type, src[0], b.src.size, dst[0], b.dst.size)] += 1
    return keys == images


def permute_buffers(graph: NeuralGraph, model: torch.nn.Module, perms: PermutationLike) -> None:
    """Apply ``perms`` to the model's per-unit buffers (BatchNorm statistics), in place."""
    perms = _groups(perms)
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for ub in graph.buffers:
            perm = perms.get(ub.group)
            if perm is None or ub.name not in buffers:
                continue
            buf = buffers[ub.name]
            moved = torch.empty_like(buf)
            moved.index_copy_(ub.dim, perm, buf)
            buf.copy_(moved)
