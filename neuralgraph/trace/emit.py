"""From collected relations to a graph: node groups, edge blocks and declared symmetries.

1. **Merge** neurons that are one neuron (connected components over the merge pairs).
2. **Groups**: the neurons left, in creation order, cut into node groups wherever the op that
   created them, their role, or the runs in which edges and ties reach them change — so every
   block below connects contiguous ranges; the experts of a mixture-of-experts layer are laid side
   by side, one equal segment each per group (:mod:`neuralgraph.trace.experts`).
3. **Blocks**: each relation becomes dense, star or diagonal blocks over those ranges; a parameter's
   elements on a block must form one strided window of the flat vector (a
   :class:`~neuralgraph.params.ParamView`), which is what makes ``edge_features`` / ``to_params``
   exact inverses. Two parameters on the same edges (SwiGLU's gate and up projections) share one
   stacked block.
4. **Symmetries**, from the same facts (:mod:`neuralgraph.trace.symmetries`).
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import torch

from .. import edge_types as et
from ..builder import GraphBuilder
from ..groups import NodeGroup
from ..params import ParamSpec, ParamView
from .dataflow import TraceError
from .elems import Elems
from .experts import expert_order, find_experts
from .relations import DenseRelation, PairedRelation, Relations
from .rows import unique_rows
from .symmetries import SymmetryDeclarations
from .usage import join_reused

__all__ = ["emit"]

log = logging.getLogger(__name__)


def _canonical(rel: Relations) -> torch.Tensor:
    """Per neuron, the neuron it is merged into: the first of its component, a head node first
    (a per-head table merged into the heads it biases leaves head nodes)."""
    n = rel.num_units
    canon = torch.arange(n)
    if not rel.merges:
        return canon
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    a = torch.cat([m[0] for m in rel.merges]).numpy()
    b = torch.cat([m[1] for m in rel.merges]).numpy()
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    comp = torch.from_numpy(comp).long()
    rank = canon + n * ~_head_units(rel)
    first = torch.full((int(comp.max()) + 1,), 2 * n, dtype=torch.long).scatter_reduce(0, comp, rank, "amin")
    return first[comp] % n


def _head_units(rel: Relations) -> torch.Tensor:
    """Per neuron: whether an attention rule created it as a head node."""
    head = torch.zeros(rel.num_units, dtype=torch.bool)
    for a in rel.allocations:
        if a.role == "head":
            head[a.start : a.start + a.size] = True
    return head


def _join_repeated_heads(rel: Relations) -> None:
    """An attention layer applied more than once (ALBERT shares one layer across its depth) has one
    set of neurons, so one node per head: head nodes whose members are the same neurons once
    reused parameters are joined become one node, and the head permutation moves them together."""
    head = _head_units(rel)
    pairs = [torch.stack([r.src, r.dst], 1) for r in rel.paired if r.edge_type == et.HEAD and r.elems is None]
    if not pairs:
        return
    pairs = torch.cat(pairs)
    pairs = pairs[head[pairs[:, 0]] & ~head[pairs[:, 1]]]
    if pairs.shape[0] == 0:
        return
    canon = _canonical(rel)
    members: dict[int, list[int]] = defaultdict(list)
    for h, m in unique_rows(torch.stack([pairs[:, 0], canon[pairs[:, 1]]], 1)).tolist():
        members[h].append(m)
    first: dict[tuple, int] = {}
    a, b = [], []
    for h, ms in members.items():  # one entry per head node (a few per layer)
        key = tuple(ms)
        if key in first:
            a.append(first[key])
            b.append(h)
        else:
            first[key] = h
    if a:
        rel.merge(torch.tensor(a), torch.tensor(b))


def attention_kinds(rel: Relations) -> torch.Tensor:
    """Per neuron: 1 query, 2 key, 3 value (what the attention rules saw it as), else 0."""
    kinds = torch.zeros(rel.num_units, dtype=torch.long)
    for units, role in rel.roles:
        if role in ("query", "key", "value"):
            code = ("query", "key", "value").index(role) + 1
            kinds[units] = torch.where(kinds[units] == 0, code, kinds[units])
    return kinds


def _split_attention_biases(rel: Relations) -> None:
    """A fused projection's bias (GPT-2's ``c_attn.bias``) gets one node per part it shifts —
    query, key and value neurons — as the projection's weight gets one block per part."""
    kinds = attention_kinds(rel)
    bias_units = {a.start for a in rel.allocations if a.role == "bias" and a.size == 1}
    out = []
    for r in rel.dense:
        if r.elems is None or r.src.numel() != 1 or int(r.src[0]) not in bias_units:
            out.append(r)
            continue
        k = kinds[r.dst]
        change = torch.nonzero(k[1:] != k[:-1]).reshape(-1) + 1
        if change.numel() == 0:
            out.append(r)
            continue
        bounds = [0, *change.tolist(), k.numel()]
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            label = ("", "q", "k", "v")[int(k[lo])]
            src = r.src if i == 0 else rel.allocate(1, "bias", f"{r.name}[{label}]")
            out.append(DenseRelation(src, r.dst[lo:hi], r.elems[:, lo:hi], r.edge_type, r.name))
    rel.dense[:] = out


class _Placed:
    """Which parameter elements have edges already: whole parameters as flags, parts element-wise."""

    def __init__(self, specs: list[ParamSpec]) -> None:
        self.specs = specs
        self.starts = torch.tensor([s.offset for s in specs] or [0], dtype=torch.long)
        self.pos = {s.name: i for i, s in enumerate(specs)}
        self.whole: set[str] = set()
        self.parts: dict[int, torch.Tensor] = {}

    def mark(self, elems: Elems) -> str:
        """Mark ``elems`` placed; say whether they were placed before: ``"none"``, ``"some"`` or ``"all"``."""
        if elems.covers_spec() and elems.spec.name not in self.whole and self.pos[elems.spec.name] not in self.parts:
            self.whole.add(elems.spec.name)
            return "none"
        flat = elems.tensor().reshape(-1)
        if elems.spec is not None:
            owner, ks = None, [self.pos[elems.spec.name]]
        else:
            owner = torch.searchsorted(self.starts, flat, right=True) - 1
            ks = owner.unique().tolist()
        before, total = 0, 0
        for k in ks:
            spec = self.specs[k]
            mine = (flat if owner is None else flat[owner == k]) - spec.offset
            if spec.name in self.whole:
                before += mine.numel()
            else:
                seen = self.parts.setdefault(k, torch.zeros(spec.numel, dtype=torch.bool))
                before += int(seen[mine].sum())
                seen[mine] = True
            total += mine.numel()
        return "none" if before == 0 else "all" if before == total else "some"


def _runs(ids: torch.Tensor, cuts: torch.Tensor) -> list[tuple[int, int, int]]:
    """``(position, first id, length)`` of each maximal run ``ids[i+1] == ids[i] + 1`` that
    crosses no cut (a cut at c separates c - 1 from c)."""
    if ids.numel() == 0:
        return []
    step = ids[1:] - ids[:-1]
    brk = (step != 1) | cuts[ids[1:]]
    starts = torch.cat([torch.tensor([0]), torch.nonzero(brk).reshape(-1) + 1])
    ends = torch.cat([starts[1:], torch.tensor([ids.numel()])])
    return [(int(s), int(ids[s]), int(e - s)) for s, e in zip(starts.tolist(), ends.tolist())]


class _Emitter(SymmetryDeclarations):
    def __init__(self, rel: Relations, specs: list[ParamSpec], arch: str) -> None:
        self.rel = rel
        self.specs = specs
        self.b = GraphBuilder(specs, arch=arch)
        join_reused(rel, specs)
        _split_attention_biases(rel)
        _join_repeated_heads(rel)
        self.canon = _canonical(rel)
        self.experts = find_experts(rel, self.canon)
        self.placed = _Placed(specs)

    # ------------------------------------------------------------------ neurons -> groups
    def map(self, ids: torch.Tensor) -> torch.Tensor:
        return self.new_id[self.canon[ids]]

    def build_groups(self) -> None:
        self._number_nodes()
        cuts = self._cuts()
        layout = expert_order(self.experts, self.new_id, cuts)
        if layout is not None:
            cuts = self._lay_out_experts(layout)
        m = self.old_of_new.numel()
        starts = torch.nonzero(cuts[:m]).reshape(-1).tolist()
        self.groups: list[NodeGroup] = []
        self.group_of = torch.empty(m, dtype=torch.long)
        names = self._group_names(starts, m)
        for gi, (s, e) in enumerate(zip(starts, starts[1:] + [m])):
            role = self.roles[s]
            group_role = {"query_key": "query_key", "value": "value", "head": "head", "bias": "bias", "token": "token",
                          "position": "position", "input": "input", "stream": "stream", "output": "output"}.get(role, "hidden")
            self.groups.append(self.b.group(names[gi], e - s, role=group_role, tokens=role == "token"))
            self.group_of[s:e] = gi
        self.cuts = cuts

    def _number_nodes(self) -> None:
        """Node ids: the neurons some relation reaches, in creation order, with their allocation and role."""
        rel, n = self.rel, self.rel.num_units
        used = torch.zeros(n, dtype=torch.bool)
        for r in (*rel.dense, *rel.paired):
            used[self.canon[r.src]] = True
            used[self.canon[r.dst]] = True
        self.new_id = torch.full((n,), -1, dtype=torch.long)
        order = torch.nonzero(used).reshape(-1)
        self.new_id[order] = torch.arange(order.numel())
        self.old_of_new = order
        alloc_of = torch.empty(n, dtype=torch.long)
        for i, a in enumerate(rel.allocations):
            alloc_of[a.start : a.start + a.size] = i
        self.alloc = alloc_of[order]
        roles = [rel.allocations[int(i)].role for i in self.alloc.tolist()]
        self.attn = attention_kinds(rel)  # per original neuron: 1 query, 2 key, 3 value
        group_roles = {"query": "query_key", "key": "query_key", "value": "value", "output": "output"}
        for units, role in rel.roles:
            for u in self.map(units).unique().tolist():
                if u >= 0 and roles[u] in ("hidden", "value") and group_roles[role] != roles[u]:
                    roles[u] = group_roles[role] if roles[u] == "hidden" or role != "output" else roles[u]
        self.roles = roles

    def _cuts(self) -> torch.Tensor:
        """``cuts[c]``: a group starts at node ``c`` (a new allocation or role, or a run of ties)."""
        m = self.old_of_new.numel()
        role_code: dict[str, int] = {}
        codes = torch.tensor([role_code.setdefault(r, len(role_code)) for r in self.roles] or [0], dtype=torch.long)[:m]
        cuts = torch.zeros(m + 1, dtype=torch.bool)
        cuts[0] = True
        if m:
            cuts[1:m] = (self.alloc[1:] != self.alloc[:-1]) | (codes[1:] != codes[:-1])
        for r in self.rel.paired:
            if r.ties:
                src, dst = self._pairs(r)
                self._cut_runs(src, cuts, dst)
        return cuts

    def _lay_out_experts(self, layout) -> torch.Tensor:
        """Renumber the nodes by ``layout`` (:func:`~neuralgraph.trace.experts.expert_order`): every
        expert's copy of a neuron counts as the first expert's allocation, and each group of all
        experts' neurons is cut off on both sides. The new cuts."""
        self.alloc[layout.copy] = self.alloc[layout.original]
        position = torch.empty_like(layout.order)
        position[layout.order] = torch.arange(layout.order.numel())
        self.new_id = torch.where(self.new_id >= 0, position[self.new_id.clamp(min=0)], self.new_id)
        self.old_of_new = self.old_of_new[layout.order]
        self.alloc = self.alloc[layout.order]
        self.roles = [self.roles[i] for i in layout.order.tolist()]
        cuts = self._cuts()
        lo, hi = position[layout.first], position[layout.last] + 1
        inside = torch.zeros(cuts.numel() + 1, dtype=torch.long)  # one group per run of all experts
        inside.index_add_(0, lo + 1, torch.ones_like(lo))
        inside.index_add_(0, hi, -torch.ones_like(hi))
        cuts &= torch.cumsum(inside, 0)[:-1] == 0
        cuts[lo] = True
        cuts[hi] = True
        return cuts

    def _group_names(self, starts: list[int], m: int) -> list[str]:
        rel = self.rel
        relations = [r for r in (*rel.dense, *rel.paired) if r.elems is not None]
        relations.sort(key=lambda r: r.edge_type in (et.BIAS, et.NORM))  # weights name groups first
        first_relation = torch.full((m,), -1, dtype=torch.long)  # per neuron: the first relation that lands on it
        for i, r in enumerate(relations):
            ids = self.map(r.dst).reshape(-1)
            ids = ids[ids >= 0]
            free = ids[first_relation[ids] < 0]
            first_relation[free] = i
        labels = [r.name.removesuffix(".weight").removesuffix("_weight") for r in relations]
        names, seen = [], defaultdict(int)
        for s, e in zip(starts, starts[1:] + [m]):
            role = self.roles[s]
            alloc = rel.allocations[int(self.alloc[s])]
            if role == "bias":
                base = alloc.name
            elif role in ("token", "position"):
                base = f"{alloc.name}.{'tokens' if role == 'token' else 'positions'}"
            elif role == "head" and alloc.name != "router":  # a router's units are named by its weight
                base = "heads"
            elif role == "input":
                base = "input"
            else:
                hit = torch.nonzero(first_relation[s:e] >= 0)
                base = labels[int(first_relation[s + int(hit[0])])] if hit.numel() else role
                if role in ("query_key", "value"):
                    base = f"{base}.{'qk' if role == 'query_key' else 'v'}"
            seen[base] += 1
            names.append(base if seen[base] == 1 else f"{base}#{seen[base] - 1}")
        return names

    @staticmethod
    def _cut_runs(ids: torch.Tensor, cuts: torch.Tensor, other: torch.Tensor | None = None) -> None:
        if ids.numel() == 0:
            return
        brk = ids[1:] - ids[:-1] != 1
        if other is not None:
            brk |= other[1:] - other[:-1] != 1
        starts = torch.cat([ids[:1], ids[1:][brk]])
        ends = torch.cat([ids[:-1][brk], ids[-1:]]) + 1
        cuts[starts] = True
        cuts[ends] = True
        if other is not None:
            o_starts = torch.cat([other[:1], other[1:][brk]])
            o_ends = torch.cat([other[:-1][brk], other[-1:]]) + 1
            cuts[o_starts] = True
            cuts[o_ends] = True

    def _pairs(self, r: PairedRelation) -> tuple[torch.Tensor, torch.Tensor]:
        src, dst = self.map(r.src), self.map(r.dst)
        pairs = torch.stack([src, dst], 1)
        if r.ties or r.elems is None:
            pairs = pairs[pairs[:, 0] != pairs[:, 1]] if r.ties else pairs
            pairs = unique_rows(pairs)
            order = torch.argsort(pairs[:, 0] * (self.new_id.max() + 2) + pairs[:, 1])
            pairs = pairs[order]
        return pairs[:, 0], pairs[:, 1]

    def _run_breaks(self, src: torch.Tensor, dst: torch.Tensor) -> int:
        step_s, step_d = src[1:] - src[:-1], dst[1:] - dst[:-1]
        diag = (step_s == 1) & (step_d == 1) & ~self.cuts[src[1:]] & ~self.cuts[dst[1:]]
        star = (step_s == 0) & (step_d == 1) & ~self.cuts[dst[1:]]
        return int((~(diag | star)).sum())

    def _fewest_runs(self, src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Auxiliary pairs in the order that gives the fewest blocks: by source (stars, and
        diagonals of one-to-one pairs) or by diagonal (a key neuron paired with the query neurons
        of several heads: one diagonal block per head rather than one block per edge)."""
        if src.numel() < 2:
            return src, dst
        offset = dst - src
        order = torch.argsort((offset - offset.min()) * (int(src.max()) + 1) + src)
        by_diag = src[order], dst[order]
        return by_diag if self._run_breaks(*by_diag) < self._run_breaks(src, dst) else (src, dst)

    def rng(self, first: int, length: int):
        g = self.groups[int(self.group_of[first])]
        return g[first - g.start : first - g.start + length]

    # ------------------------------------------------------------------ blocks
    def view(self, elems: Elems, what: str) -> ParamView:
        """The strided window of the flat vector holding ``elems`` ([ns, nd, K])."""
        s = elems.strided()
        if s is not None and all(st > 0 or n == 1 for n, st in zip(s[1], s[2])):
            flat0, strides, spec = s[0], [st if n > 1 else 1 for n, st in zip(s[1], s[2])], elems.spec
        else:
            flat0, strides, spec = self._strides_of(elems.tensor(), what)
        ns, nd, k = elems.shape
        return ParamView(spec.name, flat0, (nd, ns, k), (strides[1], strides[0], strides[2]))

    def _strides_of(self, elems: torch.Tensor, what: str):
        flat0 = int(elems.reshape(-1)[0])
        spec = next((s for s in self.specs if s.offset <= flat0 < s.offset + s.numel), None)
        if spec is None:
            raise TraceError(f"{what}: edge values outside the parameters")
        strides = []
        for d in range(elems.ndim):
            if elems.shape[d] > 1:
                strides.append(int(elems.select(d, 1).reshape(-1)[0]) - flat0 if elems.ndim > 1 else 0)
            else:
                strides.append(1)
        expect = torch.full(elems.shape, flat0, dtype=torch.long)
        for d, st in enumerate(strides):
            shape = [1] * elems.ndim
            shape[d] = -1
            expect = expect + torch.arange(elems.shape[d]).reshape(shape) * st
        if min(strides) < 0 or not torch.equal(expect, elems) or int(elems.max()) >= spec.offset + spec.numel:
            raise TraceError(
                f"{what}: parameter '{spec.name}' reaches these edges in an order that is not one strided window "
                "(flipped or gathered weights); the graph cannot hold it"
            )
        return flat0, strides, spec

    def _already_placed(self, r) -> bool:
        """A relation whose parameter elements an earlier use placed (after merging, on the same edges)."""
        if r.elems is None:
            return False
        done = self.placed.mark(r.elems)
        if done == "all":
            return True
        if done == "some":
            raise TraceError(f"'{r.name}': part of this parameter was already placed by another use of it; the two uses "
                             "cannot share one set of edges")
        return False

    def emit_dense(self, r: DenseRelation, stacks: dict) -> None:
        if self._already_placed(r):
            return
        src, dst = self.map(r.src), self.map(r.dst)
        if src.unique().numel() != src.numel() or (dst.unique().numel() != dst.numel() and not bool((self.attn[r.dst] == 2).any())):
            raise TraceError(
                f"'{r.name}': after merging neurons that the forward shows to be the same, one edge of this block would "
                "carry two values; the model uses it in a way a neural graph cannot hold"
            )
        kinds = self.attn[r.dst] if r.edge_type == et.LINEAR else torch.zeros(r.dst.numel(), dtype=torch.long)
        change = torch.nonzero(kinds[1:] != kinds[:-1]).reshape(-1) + 1
        bounds = [0, *change.tolist(), kinds.numel()]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            kind = int(kinds[lo])
            etype = (r.edge_type, et.ATTN_QUERY, et.ATTN_KEY, et.ATTN_VALUE)[kind]
            for ps, s0, ls in _runs(src, self.cuts):
                for pd, d0, ld in _runs(dst[lo:hi], self.cuts):
                    a, b = self.rng(s0, ls), self.rng(d0, ld)
                    if r.elems is None:
                        self.b.connect(a, b, etype, name=f"{r.name}:{a}->{b}")
                        continue
                    sub = r.elems[ps : ps + ls, lo + pd : lo + pd + ld]
                    if kind == 2:  # key weights run from the query-key neuron back to the stream
                        a, b, sub = b, a, sub.transpose(0, 1)
                    view = self.view(sub, r.name)
                    stacks.setdefault((a, b, etype), []).append(view)

    def flush_dense(self, stacks: dict) -> None:
        for (a, b, etype), views in stacks.items():
            is_star = a.size == 1 and self.groups[int(self.group_of[a.start])].role == "bias"
            if len(views) == 1 or any(v.shape[2] != 1 for v in views):
                for v in views:
                    if is_star:
                        self.b.star(v[:, 0, :], self.groups[int(self.group_of[a.start])], b, etype,
                                    name=self._block_name(v.name, b))
                    else:
                        self.b.dense(v, a, b, etype, name=self._block_name(v.name, b))
            else:  # two parameters on the same edges (gate and up projections): one stacked block
                self.b.dense([v[:, :, 0] for v in views], a, b, etype, name=self._block_name("+".join(v.name for v in views), b))

    def _block_name(self, name: str, dst) -> str:
        self._names[name] += 1
        return name if self._names[name] == 1 else f"{name}#{self._names[name] - 1}"

    def emit_paired(self, r: PairedRelation) -> list[tuple]:
        if self._already_placed(r):
            return []
        src, dst = self.map(r.src), self.map(r.dst)
        elems = r.elems
        if elems is None:
            src, dst = self._fewest_runs(*self._pairs(r))
        diag_blocks = []
        if src.numel() == 0:
            return diag_blocks
        const = torch.cat([torch.tensor([False]), src[1:] == src[:-1]])
        # runs: star runs (same source) or diagonal runs (both step by one)
        step_s, step_d = src[1:] - src[:-1], dst[1:] - dst[:-1]
        diag = (step_s == 1) & (step_d == 1) & ~self.cuts[src[1:]] & ~self.cuts[dst[1:]]
        star = (step_s == 0) & (step_d == 1) & ~self.cuts[dst[1:]]
        del const
        i, n = 0, src.numel()
        diag_l, star_l = diag.tolist(), star.tolist()
        while i < n:
            j = i
            if i < n - 1 and diag_l[i]:
                while j < n - 1 and diag_l[j]:
                    j += 1
                kind = "diagonal"
            elif i < n - 1 and star_l[i]:
                while j < n - 1 and star_l[j]:
                    j += 1
                kind = "star"
            else:
                kind = "diagonal"
            length = j - i + 1
            s0, d0 = int(src[i]), int(dst[i])
            b = self.rng(d0, length)
            a = self.rng(s0, length if kind == "diagonal" else 1)
            label = r.name if elems is None else r.name
            if elems is None:
                if kind == "diagonal":
                    self.b.diagonal(a, b, r.edge_type, name=self._block_name(f"{label}:{a}->{b}", b))
                    diag_blocks.append((a, b, r.ties))
                else:
                    self.b.connect(a, b, r.edge_type, name=self._block_name(f"{label}:{a}->{b}", b))
            else:
                sub = elems[i : i + length]  # [length, K]
                view = self.view(sub.unsqueeze(1), r.name)  # (1, length, K) -> diagonal (length, K)
                v = ParamView(view.name, view.offset, (length, sub.shape[1]), (view.strides[1], view.strides[2]))
                if kind != "diagonal":
                    raise TraceError(f"'{r.name}': a parameter shared along neurons that are not paired one to one")
                self.b.diagonal(a, b, r.edge_type, view=v, name=self._block_name(r.name, b))
                diag_blocks.append((a, b, True))
            i = j + 1
        return diag_blocks

    # ------------------------------------------------------------------ all
    def run(self) -> GraphBuilder:
        self.build_groups()
        self._names: dict[str, int] = defaultdict(int)
        stacks: dict = {}
        for r in self.rel.dense:
            self.emit_dense(r, stacks)
        self.flush_dense(stacks)
        ties = []
        for r in self.rel.paired:
            ties += self.emit_paired(r)
        ties += self._tied_heads(ties)
        for name, units in self.rel.buffers:
            ids = self.map(units)
            g = self.groups[int(self.group_of[ids[0]])]
            if ids.numel() != g.size or not torch.equal(ids, torch.arange(g.start, g.stop)):
                raise TraceError(f"buffer '{name}' does not follow one node group; the graph cannot move it with its neurons")
            self.b.unit_buffer(name, g)
        self.symmetries(ties)
        return self.b


def emit(rel: Relations, specs: list[ParamSpec], arch: str = "traced") -> GraphBuilder:
    """Turn the relations of a traced forward into a :class:`GraphBuilder` ready to ``build()``."""
    return _Emitter(rel, specs, arch).run()
