"""From collected relations to a graph: node groups, edge blocks and declared symmetries.

1. **Merge** neurons that are one neuron (connected components over the merge pairs).
2. **Groups**: the neurons left, in creation order, cut into node groups wherever the op that
   created them, their role, or the runs in which edges and ties reach them change — so every
   block below connects contiguous ranges.
3. **Blocks**: each relation becomes dense, star or diagonal blocks over those ranges; a parameter's
   elements on a block must form one strided window of the flat vector (a
   :class:`~neuralgraph.params.ParamView`), which is what makes ``edge_features`` / ``to_params``
   exact inverses. Two parameters on the same edges (SwiGLU's gate and up projections) share one
   stacked block.
4. **Symmetries**, from the same facts: groups tied by residual or gating edges move together;
   a head group with equal segments of its member groups gives whole-head permutations and, where
   no label tells a head's neurons apart, permutations inside heads; norms and softmaxes over part
   of a group restrict it to segments; inputs, outputs, labelled neurons and whatever an opaque op
   read stay fixed.
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
from .relations import DenseRelation, PairedRelation, Relations

__all__ = ["emit"]

log = logging.getLogger(__name__)


def _canonical(rel: Relations) -> torch.Tensor:
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
    first = torch.full((int(comp.max()) + 1,), n, dtype=torch.long).scatter_reduce(0, comp, canon, "amin")
    return first[comp]


def _reused_parameters(rel: Relations) -> None:
    """A parameter element on several edges (a module applied twice, tied weights) joins the
    neurons those edges touch, axis to axis: the first use's neurons are the later uses' ones.

    One case is drawn as hand-written graphs draw it: an output head tied to the input embedding
    (GPT-2's ``lm_head``). Its logits would join the token nodes and the last stream the first;
    instead the head's edges are left out (the parameter is on the embedding's edges already) and
    the stream it reads is only tied to the embedding's for the symmetries."""
    outputs = torch.zeros(rel.num_units, dtype=torch.bool)
    for units, role in rel.roles:
        if role == "output":
            outputs[units] = True
    elems, src, dst, owner = [], [], [], []
    for i, r in enumerate(rel.dense):
        if r.elems is not None:
            e = r.elems[:, :, 0]
            a = r.src.reshape(-1, 1).expand(e.shape).reshape(-1)
            b = r.dst.reshape(1, -1).expand(e.shape).reshape(-1)
            if _reads_rows(e):  # used as a table (rows -> targets): orient like a weight (inputs -> rows)
                a, b = b, a
            elems.append(e.reshape(-1))
            src.append(a)
            dst.append(b)
            owner.append(torch.full((e.numel(),), i))
    for r in rel.paired:
        if r.elems is not None:
            elems.append(r.elems[:, 0])
            src.append(r.src)
            dst.append(r.dst)
            owner.append(torch.full((r.src.numel(),), -1))
    if not elems:
        return
    elems, src, dst, owner = torch.cat(elems), torch.cat(src), torch.cat(dst), torch.cat(owner)
    order = torch.argsort(elems, stable=True)
    elems, src, dst, owner = elems[order], src[order], dst[order], owner[order]
    first = torch.ones_like(elems, dtype=torch.bool)
    first[1:] = elems[1:] != elems[:-1]
    if bool(first.all()):
        return
    lead = torch.cumsum(first.long(), 0) - 1
    pos = torch.nonzero(first).reshape(-1)[lead]  # the first use of each element
    dropped = set()
    for i in owner[~first].unique().tolist():
        r = rel.dense[i] if i >= 0 else None
        if r is not None and bool(outputs[r.dst].all()) and not bool(first[owner == i].any()):
            dropped.add(i)
    keep = torch.ones_like(first)
    for i in dropped:
        mine = owner == i
        a, b = src[pos[mine]], src[mine]
        out_side_first = outputs[b].all()
        if bool(out_side_first):  # oriented the other way: the head's input side is dst
            a, b = dst[pos[mine]], dst[mine]
        rel.symmetry_ties.append((a, b))
        keep &= ~mine
    rel.merge(src[pos][keep], src[keep])
    rel.merge(dst[pos][keep], dst[keep])
    if dropped:
        rel.dense[:] = [r for i, r in enumerate(rel.dense) if i not in dropped]


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


def _reads_rows(e: torch.Tensor) -> bool:
    """Whether the sources of a dense use walk the parameter's outer (larger-stride) axis, as
    an embedding does; a weight applied to inputs walks it with its targets. Two uses of one
    element are joined axis to axis, so a tied embedding and output head join tokens to logits."""
    if e.shape[0] < 2 or e.shape[1] < 2:
        return False
    return int(e[1, 0] - e[0, 0]) > int(e[0, 1] - e[0, 0])


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


class _Emitter:
    def __init__(self, rel: Relations, specs: list[ParamSpec], arch: str) -> None:
        self.rel = rel
        self.specs = specs
        self.b = GraphBuilder(specs, arch=arch)
        _reused_parameters(rel)
        _split_attention_biases(rel)
        self.canon = _canonical(rel)
        self.placed = torch.zeros(sum(s.numel for s in specs), dtype=torch.bool)

    # ------------------------------------------------------------------ neurons -> groups
    def map(self, ids: torch.Tensor) -> torch.Tensor:
        return self.new_id[self.canon[ids]]

    def build_groups(self) -> None:
        rel, n = self.rel, self.rel.num_units
        used = torch.zeros(n, dtype=torch.bool)
        for r in rel.dense:
            used[self.canon[r.src]] = True
            used[self.canon[r.dst]] = True
        for r in rel.paired:
            used[self.canon[r.src]] = True
            used[self.canon[r.dst]] = True
        self.new_id = torch.full((n,), -1, dtype=torch.long)
        order = torch.nonzero(used).reshape(-1)
        self.new_id[order] = torch.arange(order.numel())
        self.old_of_new = order
        m = order.numel()
        alloc_of = torch.empty(n, dtype=torch.long)
        for i, a in enumerate(rel.allocations):
            alloc_of[a.start : a.start + a.size] = i
        self.alloc = alloc_of[order]
        role_code = {}
        roles = [rel.allocations[int(i)].role for i in self.alloc.tolist()]
        self.attn = attention_kinds(rel)  # per original neuron: 1 query, 2 key, 3 value
        group_roles = {"query": "query_key", "key": "query_key", "value": "value", "output": "output"}
        for units, role in rel.roles:
            for u in self.map(units).unique().tolist():
                if u >= 0 and roles[u] in ("hidden", "value") and group_roles[role] != roles[u]:
                    roles[u] = group_roles[role] if roles[u] == "hidden" or role != "output" else roles[u]
        self.roles = roles
        codes = torch.tensor([role_code.setdefault(r, len(role_code)) for r in roles] or [0], dtype=torch.long)[:m]
        cuts = torch.zeros(m + 1, dtype=torch.bool)  # cuts[c]: a group starts at new id c
        cuts[0] = True
        if m:
            cuts[1:m] = (self.alloc[1:] != self.alloc[:-1]) | (codes[1:] != codes[:-1])
        for r in rel.paired:
            if r.ties:
                src, dst = self._pairs(r)
                self._cut_runs(src, cuts, dst)
        starts = torch.nonzero(cuts[:m]).reshape(-1).tolist()
        self.groups: list[NodeGroup] = []
        self.group_of = torch.empty(m, dtype=torch.long)
        names = self._group_names(starts, m)
        for gi, (s, e) in enumerate(zip(starts, starts[1:] + [m])):
            role = roles[s]
            alloc = rel.allocations[int(self.alloc[s])]
            group_role = {"query_key": "query_key", "value": "value", "head": "head", "bias": "bias", "token": "token",
                          "position": "position", "input": "input", "stream": "stream", "output": "output"}.get(role, "hidden")
            self.groups.append(self.b.group(names[gi], e - s, role=group_role, tokens=role == "token"))
            self.group_of[s:e] = gi
            del alloc
        self.cuts = cuts

    def _group_names(self, starts: list[int], m: int) -> list[str]:
        rel = self.rel
        landing: dict[int, str] = {}
        relations = [r for r in (*rel.dense, *rel.paired) if r.elems is not None]
        for r in sorted(relations, key=lambda r: r.edge_type in (et.BIAS, et.NORM)):  # weights name groups first
            for u in self.map(r.dst).tolist():
                landing.setdefault(u, r.name.removesuffix(".weight").removesuffix("_weight"))
        names, seen = [], defaultdict(int)
        for s, e in zip(starts, starts[1:] + [m]):
            role = self.roles[s]
            alloc = rel.allocations[int(self.alloc[s])]
            if role == "bias":
                base = alloc.name
            elif role in ("token", "position"):
                base = f"{alloc.name}.{'tokens' if role == 'token' else 'positions'}"
            elif role == "head":
                base = "heads"
            elif role == "input":
                base = "input"
            else:
                base = next((landing[u] for u in range(s, e) if u in landing), role)
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
            pairs = pairs.unique(dim=0)
            order = torch.argsort(pairs[:, 0] * (self.new_id.max() + 2) + pairs[:, 1])
            pairs = pairs[order]
        return pairs[:, 0], pairs[:, 1]

    def rng(self, first: int, length: int):
        g = self.groups[int(self.group_of[first])]
        return g[first - g.start : first - g.start + length]

    # ------------------------------------------------------------------ blocks
    def view(self, elems: torch.Tensor, what: str) -> ParamView:
        """The strided window of the flat vector holding ``elems`` ([ns, nd, K])."""
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
        ns, nd, k = elems.shape
        return ParamView(spec.name, flat0, (nd, ns, k), (strides[1], strides[0], strides[2]))

    def _already_placed(self, r) -> bool:
        """A relation whose parameter elements an earlier use placed (after merging, on the same edges)."""
        if r.elems is None:
            return False
        flat = r.elems.reshape(-1)
        done = self.placed[flat]
        if bool(done.all()):
            return True
        if bool(done.any()):
            raise TraceError(f"'{r.name}': part of this parameter was already placed by another use of it; the two uses "
                             "cannot share one set of edges")
        self.placed[flat] = True
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
            src, dst = self._pairs(r)
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

    # ------------------------------------------------------------------ symmetries
    def _tied_heads(self, ties: list[tuple]) -> list[tuple]:
        """A tied output head reads neurons that must move like the embedding's; where no residual
        path ties them already, an identity edge (type RESIDUAL) from them to the embedding's
        neurons says so, as hand-written graphs of BERT's tied decoder do."""
        parent = list(range(len(self.groups)))

        def find(x):
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for a, b, is_tie in ties:
            if is_tie:
                parent[find(int(self.group_of[a.start]))] = find(int(self.group_of[b.start]))
        added = []
        for emb, head_in in self.rel.symmetry_ties:
            pairs = torch.stack([self.map(head_in), self.map(emb)], 1).unique(dim=0)
            pairs = pairs[(pairs >= 0).all(1)]
            if pairs.numel() == 0:
                continue
            ga, gb = int(self.group_of[pairs[0, 0]]), int(self.group_of[pairs[0, 1]])
            if find(ga) == find(gb):
                continue
            r = PairedRelation(head_in.reshape(-1), emb.reshape(-1), None, et.RESIDUAL, "tied output head")
            added += self.emit_paired(r)
            parent[find(ga)] = find(gb)
        return added

    def unit_flags(self) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.old_of_new.numel()
        fixed = torch.zeros(m, dtype=torch.bool)
        for units, _ in self.rel.fixed:
            ids = self.map(units)
            fixed[ids[ids >= 0]] = True
        label = torch.zeros(m, dtype=torch.long)
        for units, coords in self.rel.labels:
            ids = self.map(units)
            keep = ids >= 0
            ids, coords = ids[keep], coords[keep]
            pairs = torch.stack([ids, coords], 1).unique(dim=0)
            once = torch.bincount(pairs[:, 0], minlength=m)
            fixed[once > 1] = True  # one neuron at several coordinates: no swap keeps them all
            coord = torch.zeros(m, dtype=torch.long)
            coord[pairs[:, 0]] = pairs[:, 1]
            label = torch.unique(label * (int(coord.max()) + 1) + coord, return_inverse=True)[1]
        return fixed, label

    def symmetries(self, ties: list[tuple]) -> None:
        groups = self.groups
        ng = len(groups)
        fixed, label = self.unit_flags()
        parent = list(range(ng))

        def find(x):
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        broken = [False] * ng  # the group may not move at all
        for a, b in self.rel.symmetry_ties:  # a tied output head: the stream it reads moves like the embedding
            for x, y in torch.stack([self.map(a), self.map(b)], 1).unique(dim=0).tolist():
                if x >= 0 and y >= 0:
                    parent[find(int(self.group_of[x]))] = find(int(self.group_of[y]))
        for a, b, is_tie in ties:
            if not is_tie:
                continue
            ga, gb = int(self.group_of[a.start]), int(self.group_of[b.start])
            if a.size != groups[ga].size or b.size != groups[gb].size:
                broken[ga] = broken[gb] = True  # tied over part of a group: keep both still
            parent[find(ga)] = find(gb)
        for gi, g in enumerate(groups):
            if g.role in ("input", "token", "position", "bias") or bool(fixed[g.start : g.stop].any()):
                broken[gi] = True
        segments = [1] * ng

        def restrict(gi: int, lo: int, size: int) -> None:
            """Only permutations inside aligned equal segments of this size keep a range whole."""
            g = groups[gi]
            if size == g.size:
                return
            if g.size % size == 0 and lo % size == 0:
                segments[gi] = max(segments[gi], g.size // size)
            else:
                broken[gi] = True

        for blk in self.b._blocks:  # a parameter block over part of a group (a grouped convolution)
            if blk.view is None or blk.edge_type == et.SELF_LOOP:
                continue
            for r in (blk.src, blk.dst):
                gi = int(self.group_of[r.start])
                if groups[gi].role not in ("bias", "head"):
                    restrict(gi, r.lo, r.size)
        for sets in self.rel.reductions:
            for row in self.map(sets).unique(dim=0):
                row = row[row >= 0].unique()
                if row.numel() == 0:
                    continue
                gs = self.group_of[row]
                for gi in gs.unique().tolist():
                    part = row[gs == gi]
                    g = groups[gi]
                    if part.numel() == g.size:
                        continue
                    if int(part.max()) - int(part.min()) + 1 != part.numel():
                        broken[gi] = True
                    else:
                        restrict(gi, int(part.min()) - g.start, part.numel())
        classes: dict[int, list[int]] = defaultdict(list)
        for gi in range(ng):
            classes[find(gi)].append(gi)
        paired: set[int] = set()  # neurons paired across heads (grouped-query attention)
        outer: dict[int, int] = {}  # head group -> the number of heads of the head group it belongs to
        for blk in self.b._blocks:
            if blk.edge_type != et.HEAD or blk.view is not None:
                continue
            gs, gd = int(self.group_of[blk.src.start]), int(self.group_of[blk.dst.start])
            if groups[gs].role != "head" and groups[gd].role != "head":
                paired |= {gs, gd}
            elif groups[gs].role == "head" and groups[gd].role == "head":
                outer[gd] = groups[gs].size
        in_heads: set[int] = set()
        for hi, hg in enumerate(groups):
            if hg.role == "head":
                in_heads |= self._heads(hi, classes, find, broken, segments, label, paired, outer)
        for members in classes.values():
            if any(m in in_heads for m in members) or any(broken[m] for m in members):
                continue
            if any(groups[m].role == "head" for m in members):
                continue
            sizes = {groups[m].size for m in members}
            if len(sizes) != 1 or sizes.pop() < 2:
                continue
            segs = max(segments[m] for m in members)
            if any(bool((label[groups[m].start : groups[m].stop] != label[groups[m].start]).any()) for m in members):
                continue
            self.b.permutable(*(groups[m] for m in members), segments=segs)

    def _head_members(self, hg) -> dict[int, list]:
        """Per member group of head group ``hg``: the (head, first, size) of each membership block."""
        members: dict[int, list] = defaultdict(list)
        for blk in self.b._blocks:
            if blk.edge_type == et.HEAD and blk.src.group == hg.name and blk.view is None:
                gi = int(self.group_of[blk.dst.start])
                if blk.kind == "diagonal":  # one-neuron heads: head i to neuron i
                    members[gi] += [(blk.src.lo + i, blk.dst.lo + i, 1) for i in range(blk.dst.size)]
                else:
                    members[gi].append((blk.src.lo, blk.dst.lo, blk.dst.size))
        return members

    def _heads(self, hi, classes, find, broken, segments, label, paired, outer) -> set[int]:
        """Declare whole-head and within-head permutations of head group ``hi`` where its
        member groups split into one equal segment per head."""
        groups, hg = self.groups, self.groups[hi]
        count = hg.size
        members = self._head_members(hg)
        clean = True
        for gi, segs in members.items():
            g = groups[gi]
            width = g.size // count if g.size % count == 0 else 0
            if not width or sorted(segs) != [(h, h * width, width) for h in range(count)]:
                clean = False
        # what moves with a head: its members, the members of member heads, and everything tied to them
        extended = set(members)
        for gi in list(members):
            if groups[gi].role == "head":
                extended |= set(self._head_members(groups[gi]))
        member_groups = sorted({m for gi in extended for m in classes[find(gi)]})
        touched = set(member_groups)
        if not clean or any(groups[m].size % count for m in member_groups) or any(
            broken[m] and groups[m].role != "head" for m in member_groups
        ):
            return touched
        within = outer.get(hi, 1)
        labels_heads = True
        for m in member_groups:
            g = groups[m]
            lab = label[g.start : g.stop].reshape(count, -1)
            if not bool((lab == lab[:1]).all()):
                labels_heads = False
        if labels_heads and count // within > 1:
            self.b.permutable_heads(hg, *(groups[m] for m in member_groups), within=within)
        # within heads: each directly attached class of neurons on its own, unless labels tell the
        # neurons of a head apart (RoPE) or key/value neurons are shared across heads (GQA pairs)
        seen = set()
        for m in sorted(members):
            root = find(m)
            if root in seen or groups[m].role == "head":
                continue
            seen.add(root)
            cls = classes[root]
            width = groups[cls[0]].size // count
            if width < 2 or any(x in paired for x in cls) or any(segments[x] not in (1, count) for x in cls):
                continue
            if not all(bool((label[groups[x].start : groups[x].stop].reshape(count, -1)
                             == label[groups[x].start : groups[x].stop].reshape(count, -1)[:, :1]).all()) for x in cls):
                continue
            self.b.permutable(*(groups[x] for x in cls), segments=count)
        return touched

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
