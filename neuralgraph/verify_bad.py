"""Bad permutations for :func:`neuralgraph.verify.verify` (``docs/verify.md``): the ways to break
each declared symmetry, which of them to try, and the judging of each try — the outputs and the
graph must both change, at the verifier's parameter draw or at a second, zero-mean one, unless the
block the permutation leaves out has no effect on the outputs here (``inert``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from .graph import NeuralGraph
from .permute import permute_params
from .verify_checks import INERT_FACTOR, LOCAL_STEP, Check, draw_good


def part_name(graph: NeuralGraph, side) -> str:
    return graph.block(side[0]).view.parts[side[2]].name


def moves_left_out(graph: NeuralGraph, perms: Mapping[str, torch.Tensor], side) -> bool:
    """Whether ``perms`` moves any unit of the range that the bad permutation leaves out."""
    block = graph.block(side[0])
    ranges = (block.src, block.dst) if side[1] == "slot" else ((block.src,) if side[1] == "src" else (block.dst,))
    for r in ranges:
        perm = perms.get(r.group)
        if perm is not None and not torch.equal(perm[r.lo : r.lo + r.size], torch.arange(r.lo, r.lo + r.size)):
            return True
    return False


def _head_pattern_effect(graph: NeuralGraph, sym, sensitivity) -> float | None:
    """How much the outputs depend on what tells the segments of ``sym`` apart: the largest output
    change when one block forming the heads' attention patterns (parameter blocks into the other
    member groups of its head symmetry) is replaced by noise — or, if smaller, when one block into
    the symmetry's own groups is (a pooling head whose result the task head never reads). None
    where neither kind of block exists."""
    own = set(sym.groups)
    others = {m for h in graph.symmetries if hasattr(h, "members") and own & set(h.members) for m in h.members} - own

    def worst(groups) -> float | None:
        blocks = [b for b in graph.blocks if b.view is not None and b.dst.group in groups]
        return max(sensitivity((b.name, "dst")) for b in blocks) if blocks else None

    effects = [e for e in (worst(others), worst(own)) if e is not None]
    return min(effects) if effects else None


def _round_robin(candidates: list, generator: torch.Generator) -> list:
    """``candidates`` (``(kind, symmetry, side)``) reordered so that every symmetry comes once before
    any comes twice, symmetries and each one's candidates in random order."""
    by_sym: dict[int, list] = {}
    for c in candidates:
        by_sym.setdefault(id(c[1]), []).append(c)
    queues = [[q[i] for i in torch.randperm(len(q), generator=generator).tolist()] for q in by_sym.values()]
    queues = [queues[i] for i in torch.randperm(len(queues), generator=generator).tolist()]
    out = []
    while any(queues):
        out += [q.pop(0) for q in queues if q]
    return out


def bad_checks(run, trials: int, exhaustive: bool, every_candidate: bool | None, change_tol: float, cap: int) -> None:
    """Append the bad-permutation checks of ``run`` (a ``neuralgraph.verify._Run`` whose good
    checks are done) to its report: every way of breaking a symmetry, cycled, or at most ``trials``
    (``cap`` where the graph is otherwise checked exhaustively) drawn round-robin."""
    report = run.report
    # a bad permutation must move the outputs well above what good ones showed (round-off)
    # (only good permutations that passed count: a declared symmetry that fails is a wrong graph,
    # not round-off, and must not make every bad permutation look harmless)
    passed_good = [c.deviation for c in report.checks if c.kind == "good" and c.passed]
    threshold = max(change_tol, 10 * max(passed_good, default=0.0))
    report.change_threshold = threshold
    ways = candidates(run)
    judge = BadJudge(run, threshold)
    for kind, sym, side in tries(run, ways, trials, exhaustive, every_candidate, cap):
        report.checks.append(judge(kind, sym, side))
    if ways and not report.bad_trials:
        report.checks.append(
            Check(
                "bad", "break a declared symmetry", tuple(g for s in run.symmetries for g in s.groups), False,
                detail="(every block a bad permutation broke has no effect on the outputs at this draw: nothing was tested; "
                "try other inputs= or another seed=)",
            )
        )


def candidates(run) -> list[tuple[str, Any, Any]]:
    """Every way to break one of ``run``'s symmetries (:func:`ways_to_break`), with notes in its report."""
    return ways_to_break(run.graph, run.symmetries, run.sizes, run.generator, run.report.notes)


def ways_to_break(
    graph: NeuralGraph, symmetries, sizes: Mapping[str, int], generator: torch.Generator, notes: list[str] | None = None
) -> list[tuple[str, Any, Any]]:
    """Every way to break one of ``symmetries`` (the graph's movable ones), ``(kind, symmetry,
    side)``: leave one block side (or one tensor of a stacked block) incident to its groups
    unpermuted (``"inconsistent"``), or move a unit across segments (``"cross-segment"``). Blocks
    the graph declares without effect are left out, with a note appended to ``notes``.
    ``generator`` is advanced as a draw of each cross-segment move would."""
    notes = [] if notes is None else notes
    found: list[tuple[str, Any, Any]] = []
    inert = graph.meta.get("without_effect", {})
    for name, reason in inert.items():
        notes.append(f"'{name}' does not affect the outputs ({reason}); not used for bad permutations")
    for sym in symmetries:
        sides = [
            (b.name, side)
            for b in graph.blocks
            if b.view is not None
            for side, rng in (("src", b.src), ("dst", b.dst))
            if rng.group in sym.groups and rng.size > 1 and not (b.kind == "diagonal" and side == "src")
            and b.name not in inert
        ]
        # a stacked block (e.g. [W_gate, W_up]) may also be broken by leaving one of its tensors
        sides += [
            (b.name, "slot", k)
            for b in graph.blocks
            if b.view is not None and len(b.view.parts) > 1 and b.name not in inert
            and ({b.src.group, b.dst.group} & set(sym.groups))
            for k in range(len(b.view.parts))
            if f"{b.name}[{k}]" not in inert
        ]
        if len(sides) > 1:
            found += [("inconsistent", sym, side) for side in sides]
        if sym.cross_segment(sizes, generator) is not None:
            found.append(("cross-segment", sym, None))
    if not found:
        notes.append("no way to break the declared symmetries was found: no bad permutation tested")
    return found


def tries(run, candidates: list, trials: int, exhaustive: bool, every_candidate: bool | None, cap: int) -> list:
    """Which ``candidates`` to try, in order: all of them cycled to at least ``trials`` when
    ``exhaustive`` (unless ``every_candidate`` is None and there are more than ``cap``), else at most
    ``trials`` (or ``cap``) drawn round-robin over the symmetries, with a note of how many."""
    if every_candidate is None and exhaustive and len(candidates) > max(trials, cap):
        exhaustive, budget = False, max(trials, cap)
    else:
        budget = trials
    if exhaustive or not candidates:
        return [candidates[t % len(candidates)] for t in range(max(trials, len(candidates)))] if candidates else []
    chosen = _round_robin(candidates, run.generator)[:budget]
    if len(chosen) < len(candidates):
        run.report.notes.append(
            f"{run.graph.num_edges:,} edges, {len(candidates)} ways to break a symmetry: {len(chosen)} of them tried, "
            f"drawn round-robin over the {len(run.symmetries)} symmetries; pass exhaustive=True to try each")
    return chosen


class BadJudge:
    """Judges bad permutations of ``run`` against ``threshold``: draws each, measures it, and where
    the outputs stayed put asks a second parameter draw, then whether the block left out is inert."""

    def __init__(self, run, threshold: float) -> None:
        self.run, self.threshold = run, threshold
        self.noise = torch.Generator().manual_seed(run.seed + 1)  # its own stream: the run's draws stay as they were
        self.second: list = []  # (parameters, reference outputs, scale) of a second draw, made when first needed

    def __call__(self, kind: str, sym, side) -> Check:
        """The check of one way to break ``sym``: ``bad`` (passed when outputs and graph changed) or ``inert``."""
        perms, skip, what, ok, deviation, same, detail = self._attempts(kind, sym, side)
        groups = tuple(sym.groups)
        measured = same is False and not math.isnan(deviation)  # the graph changed; the outputs ran
        if not ok and measured:
            again = self.second_draw_deviation(perms, skip)
            if again > self.threshold:
                ok, deviation = True, again
                detail = "(the outputs changed at a second, zero-mean draw of the weights; not at the first)"
        if not ok and kind == "cross-segment" and measured:
            effect = _head_pattern_effect(self.run.graph, sym, self.sensitivity)
            if effect is not None and effect <= INERT_FACTOR * self.threshold:
                detail = (
                    f"(what tells these segments apart has almost no effect on the outputs for these parameters and "
                    f"inputs — every head attends alike, as when deep random layers make all tokens the same, or the "
                    f"layer's result is not read: replacing its weights by noise moved the outputs by only {effect:.1e}; "
                    "the graph changed as it should)")
                return Check("inert", what, groups, True, deviation, same, detail)
        if not ok and same is None and kind == "cross-segment":
            # the blocks address the segments separately (a grouped convolution): the permutation cannot
            # even be laid onto the parameters, so the graph itself rules it out; nothing to run
            return Check("inert", what, groups, True, detail=f"{detail} (ruled out by the block layout)")
        if not ok and kind == "inconsistent" and measured:
            inert = self._inert_detail(side, deviation)
            if inert is not None:
                return Check("inert", what, groups, True, deviation, same, inert)
        return Check("bad", what, groups, ok, deviation, same, detail)

    def _permutation(self, kind: str, sym, side):
        """A fresh draw of the bad permutation: ``(perms, skip, description)``."""
        graph, generator = self.run.graph, self.run.generator
        if kind == "inconsistent":
            perms = draw_good(graph, [sym], generator)
            for _redraw_try in range(16):  # segments drawn separately may leave the left-out range still
                if moves_left_out(graph, perms, side):
                    break
                perms = draw_good(graph, [sym], generator)
            what = (
                f"permute {sym.name} everywhere except tensor {side[2]} ({part_name(graph, side)}) of block '{side[0]}'"
                if side[1] == "slot"
                else f"permute {sym.name} everywhere except the {side[1]} side of block '{side[0]}'"
            )
            return perms, (side,), what
        return sym.cross_segment(self.run.sizes, generator), (), f"move one unit of {sym.name} into another segment"

    def _attempts(self, kind: str, sym, side):
        """Up to three draws (a permutation of units that happen to be inactive changes nothing),
        stopping at the first that passes: ``(perms, skip, what, ok, deviation, same, detail)`` of
        the last (``same`` None where the permutation cannot be laid onto the blocks)."""
        for _attempt in range(3):
            perms, skip, what = self._permutation(kind, sym, side)
            try:
                deviation, same = self.run.outcome(perms, skip)
            except ValueError as err:
                return perms, skip, what, False, math.nan, None, f"({err})"
            ok = deviation > self.threshold and not same
            if ok:
                break
        return perms, skip, what, ok, deviation, same, ""

    def _inert_detail(self, side, deviation: float) -> str | None:
        """Why the block side ``side`` leaves out cannot be tested at this draw (it has no effect, or
        the outputs are flat in it), or None where it can."""
        effect = self.sensitivity(side)
        limit = INERT_FACTOR * self.threshold
        local = self.sensitivity(side, LOCAL_STEP) / LOCAL_STEP if effect > limit else effect
        part = f"tensor {side[2]} of block '{side[0]}'" if side[1] == "slot" else f"block '{side[0]}'"
        if effect <= limit:
            return (
                f"({part} has almost no effect on the outputs for these parameters and inputs: replacing it by noise "
                f"moved them by only {effect:.1e} (under {limit:.1e}), the permutation by "
                f"{deviation:.1e}; the graph changed as it should)"
            )
        if local <= limit:
            return (
                f"(the outputs are flat in {part} around these parameters — a layer norm over very few features "
                f"keeps only signs, or units saturate: noise {LOCAL_STEP:.0e} times its size moved them by "
                f"{local * LOCAL_STEP:.1e} (a full-size change by {local:.1e} if they were linear, under "
                f"{limit:.1e}); only changes large enough to cross a sign show, and the permutation "
                f"moved them by {deviation:.1e}; the graph changed as it should)"
            )
        return None

    def second_draw_deviation(self, perms, skip) -> float:
        """The output change of a permutation at a second draw of the parameters, with zero-mean
        weights: the first draw's positive means (which keep ReLUs active) can saturate attention so
        that every head attends alike, and then moving a neuron between heads changes nothing. A
        permutation is no symmetry if the outputs change at any draw."""
        run = self.run
        if not self.second:
            vector = run.runner.zero_mean_draw(run.theta, run.seed + 2)
            ref = run.runner.outputs(vector)
            self.second.extend([vector, ref, float(ref.abs().max()) + 1e-12])
        vector, ref, ref_scale = self.second
        moved = run.runner.outputs(permute_params(run.graph, vector, perms, skip=skip), perms)
        return float((moved - ref).abs().max()) / ref_scale

    def sensitivity(self, side, step: float = 1.0) -> float:
        """Relative output change when noise ``step`` times as large as the block (or stacked
        tensor) ``side`` leaves out is added to it: ~0 means the block has no effect here."""
        block = self.run.graph.block(side[0])
        values = block.view.read(self.run.theta)
        scale = (float(values.abs().max()) + 1.0) * step
        perturbed = values + torch.randn(values.shape, generator=self.noise, dtype=values.dtype) * scale
        if side[1] == "slot":  # only the one stacked tensor gets noise
            keep = torch.ones(values.shape[-1], dtype=torch.bool)
            keep[block.view.columns(side[2])] = False
            perturbed[..., keep] = values[..., keep]
        vector = self.run.theta.clone()
        block.view.write(vector, perturbed)
        return self.run.deviation_with(vector)
