"""The symmetries a traced graph declares, read from the same facts as its groups and blocks.

Groups tied by residual or gating edges move together; a head group with equal segments of its
member groups gives whole-head permutations and, where no label tells a head's neurons apart,
permutations inside heads; norms and softmaxes over part of a group restrict it to segments;
inputs, outputs, labelled neurons and whatever an opaque op read stay fixed. A tied output head
gets an identity edge that says its input moves like the embedding's neurons.

:class:`SymmetryDeclarations` is the part of the emitter (:mod:`neuralgraph.trace.emit`) that
does this, once groups and blocks exist.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from .. import edge_types as et
from .relations import PairedRelation
from .rows import unique_rows

__all__ = ["SymmetryDeclarations"]


class SymmetryDeclarations:
    """Mixin of the emitter: needs its ``groups``, ``group_of``, ``map``, ``rel``, ``b`` (the
    builder) and ``emit_paired``."""

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
            pairs = unique_rows(torch.stack([self.map(head_in), self.map(emb)], 1))
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
            pairs = unique_rows(torch.stack([ids, coords], 1))
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
            for x, y in unique_rows(torch.stack([self.map(a), self.map(b)], 1)).tolist():
                if x >= 0 and y >= 0:
                    parent[find(int(self.group_of[x]))] = find(int(self.group_of[y]))
        covered: dict[tuple[int, int], int] = defaultdict(int)  # ties unit i to unit i, in parts (per expert)
        for a, b, is_tie in ties:
            if not is_tie:
                continue
            ga, gb = int(self.group_of[a.start]), int(self.group_of[b.start])
            if a.size != groups[ga].size or b.size != groups[gb].size:
                if a.lo == b.lo and a.size == b.size and groups[ga].size == groups[gb].size:
                    covered[ga, gb] += a.size
                else:
                    broken[ga] = broken[gb] = True  # tied over part of a group: keep both still
            parent[find(ga)] = find(gb)
        for (ga, gb), size in covered.items():
            if size != groups[ga].size:
                broken[ga] = broken[gb] = True
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
            for row in unique_rows(self.map(sets)):
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
        # a layer applied twice (its head nodes joined) lists each membership once per application
        return {gi: sorted(set(segs)) for gi, segs in members.items()}

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
        router = self.rel.allocations[int(self.alloc[hg.start])].name == "router"
        # experts only move inside the sets their router picks from (DeepSeek-V3's expert groups)
        within = segments[hi] if router else outer.get(hi, 1)
        labels_heads = True
        for m in member_groups:
            g = groups[m]
            lab = label[g.start : g.stop].reshape(count, -1)
            if not bool((lab == lab[:1]).all()):
                labels_heads = False
        if labels_heads and count // within > 1:
            sym = self.b.permutable_heads(hg, *(groups[m] for m in member_groups), within=within)
            if router:  # expert e is the one router unit e picks by convention: checked at conversion
                self.b.meta.setdefault("routed_experts", []).append(repr(sym))
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
