"""Which parameter elements the collected relations use: none (an error), once, or several times.

Both questions are answered per parameter and, wherever a relation holds a whole parameter as
one strided view (every weight matrix, embedding and kernel of an ordinary model), without
looking at single elements — tracing an 8B-parameter model must not cost memory per parameter.
Only parameters used partially or more than once are looked at element by element, and a weight
used twice as a whole (tied embedding and output head, a module applied twice) not even then:
the two views are matched axis to axis by their strides.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from ..params import ParamSpec
from .dataflow import TraceError
from .elems import Elems
from .relations import DenseRelation, Relations

__all__ = ["check_coverage", "join_reused", "reads_rows"]


class _Index:
    def __init__(self, specs: list[ParamSpec]) -> None:
        self.specs = specs
        self.pos = {s.name: i for i, s in enumerate(specs)}
        self.starts = torch.tensor([s.offset for s in specs] or [0], dtype=torch.long)

    def of(self, offsets: torch.Tensor) -> torch.Tensor:
        """The index of the parameter holding each offset."""
        return torch.searchsorted(self.starts, offsets.contiguous(), right=True) - 1

    def specs_of(self, e: Elems) -> list[int]:
        if e.spec is not None:
            return [self.pos[e.spec.name]]
        return self.of(e.tensor().reshape(-1)).unique().tolist()


def _relations(rel: Relations):
    """``(owner, relation)`` of every relation holding parameter values: dense ones by index,
    paired ones as -1, in the order their first use is decided."""
    yield from ((i, r) for i, r in enumerate(rel.dense) if r.elems is not None)
    yield from ((-1, r) for r in rel.paired if r.elems is not None)


def check_coverage(rel: Relations, specs: list[ParamSpec]) -> None:
    """Every element of every parameter is on some relation, else a :class:`TraceError` naming
    the parameters (and how much of each) the forward never used."""
    index = _Index(specs)
    covered: set[int] = set()
    parts: dict[int, list[torch.Tensor]] = defaultdict(list)
    for _, r in _relations(rel):
        if r.elems.covers_spec():
            covered.add(index.pos[r.elems.spec.name])
            continue
        flat = r.elems.tensor().reshape(-1)
        if r.elems.spec is not None:
            parts[index.pos[r.elems.spec.name]].append(flat)
            continue
        owner = index.of(flat)
        for k in owner.unique().tolist():
            parts[k].append(flat[owner == k])
    missing = []
    for k, s in enumerate(specs):
        if k in covered:
            continue
        seen = torch.zeros(s.numel, dtype=torch.bool)
        for flat in parts.get(k, []):
            seen[flat - s.offset] = True
        used = int(seen.sum())
        if used < s.numel:
            missing.append(f"'{s.name}' {tuple(s.shape)}" + (f" ({s.numel - used} of {s.numel} values)" if used else ""))
    if missing:
        raise TraceError(
            f"the forward never uses parameter{'s' if len(missing) > 1 else ''} {', '.join(missing)} on these inputs. "
            "A graph cannot place values the model does not compute with: remove the unused module, or pass "
            "example_inputs that reach it (e.g. longer sequences for a position table)"
        )


def reads_rows(e: Elems) -> bool:
    """Whether the sources of a dense use (``e`` is [src, dst]) walk the parameter's outer
    (larger-stride) axis, as an embedding does; a weight applied to inputs walks it with its
    targets. Two uses of one element are joined axis to axis, so a tied embedding and output
    head join tokens to logits."""
    if e.shape[0] < 2 or e.shape[1] < 2:
        return False
    return e.step(0) > e.step(1)


def _oriented(r: DenseRelation) -> tuple[torch.Tensor, torch.Tensor, Elems]:
    """A dense use as (inputs, rows, elements[inputs, rows]): tables are turned around."""
    e = r.elems[:, :, 0]
    if reads_rows(e):
        return r.dst, r.src, e.transpose(0, 1)
    return r.src, r.dst, e


def join_reused(rel: Relations, specs: list[ParamSpec]) -> None:
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
    index = _Index(specs)
    users: dict[int, list[tuple[int, object]]] = defaultdict(list)
    for owner, r in _relations(rel):
        for k in index.specs_of(r.elems):
            users[k].append((owner, r))
    hot: set[int] = set()
    dropped: set[int] = set()
    for k, us in users.items():
        if len(us) == 1 and us[0][1].elems.covers_spec():
            continue  # used once, as a whole: nothing to join
        if not _join_whole_uses(rel, us, outputs, dropped):
            hot.add(k)
    if hot:
        _join_elementwise(rel, index, hot, users, outputs, dropped)
    if dropped:
        rel.dense[:] = [r for i, r in enumerate(rel.dense) if i not in dropped]


def _join_whole_uses(rel: Relations, us, outputs, dropped: set[int]) -> bool:
    """Uses that each hold the whole parameter with one edge feature: matched by strides."""
    if len(us) < 2 or any(o < 0 or not r.elems.covers_spec() or r.elems.shape[2] != 1 for o, r in us):
        return False
    a_src, a_dst, a_e = _oriented(us[0][1])
    plan = []
    for owner, r in us[1:]:
        b_src, b_dst, b_e = _oriented(r)
        if b_e.shape != a_e.shape or b_e.strided()[2] != a_e.strided()[2]:
            return False  # crossed axes: leave it to the element-level join
        plan.append((owner, r, b_src, b_dst))
    for owner, r, b_src, b_dst in plan:
        if bool(outputs[r.dst].all()):  # a tied output head: its edges go, its input is tied
            a, b = (a_dst, b_dst) if bool(outputs[b_src].all()) else (a_src, b_src)
            rel.symmetry_ties.append((a, b))
            dropped.add(owner)
            continue
        rel.merge(a_src, b_src)
        rel.merge(a_dst, b_dst)
    return True


def _join_elementwise(rel: Relations, index: _Index, hot: set[int], users, outputs, dropped: set[int]) -> None:
    hot_t = torch.tensor(sorted(hot), dtype=torch.long)
    seen_rel: set[int] = set()
    elems, src, dst, owner, whole = [], [], [], [], set()
    for k in sorted(hot):
        for o, r in users[k]:
            if id(r) in seen_rel:
                continue
            seen_rel.add(id(r))
            if o >= 0:
                a, b, e = _oriented(r)
                e = e.tensor()
                a, b = a.reshape(-1, 1).expand(e.shape), b.reshape(1, -1).expand(e.shape)
            else:
                e = r.elems.tensor()[:, 0]
                a, b = r.src, r.dst
            mine = torch.isin(index.of(e), hot_t)
            elems.append(e[mine])
            src.append(a[mine])
            dst.append(b[mine])
            owner.append(torch.full((int(mine.sum()),), o))
    elems, src, dst, owner = torch.cat(elems), torch.cat(src), torch.cat(dst), torch.cat(owner)
    order = torch.argsort(elems, stable=True)
    elems, src, dst, owner = elems[order], src[order], dst[order], owner[order]
    first = torch.ones_like(elems, dtype=torch.bool)
    first[1:] = elems[1:] != elems[:-1]
    if bool(first.all()):
        return
    counts = torch.bincount(torch.cumsum(first.long(), 0) - 1)
    reused = counts[torch.cumsum(first.long(), 0) - 1] > 1
    for i in owner[~first].unique().tolist():
        if i >= 0 and bool(reused[owner == i].all()):
            whole.add(i)
    lead = torch.cumsum(first.long(), 0) - 1
    pos = torch.nonzero(first).reshape(-1)[lead]  # the first use of each element
    keep = torch.ones_like(first)
    for i in owner[~first].unique().tolist():
        r = rel.dense[i] if i >= 0 else None
        if r is None or i not in whole or not bool(outputs[r.dst].all()) or bool(first[owner == i].any()):
            continue
        mine = owner == i
        a, b = src[pos[mine]], src[mine]
        if bool(outputs[b].all()):  # oriented the other way: the head's input side is dst
            a, b = dst[pos[mine]], dst[mine]
        rel.symmetry_ties.append((a, b))
        dropped.add(i)
        keep &= ~mine
    rel.merge(src[pos][keep], src[keep])
    rel.merge(dst[pos][keep], dst[keep])
