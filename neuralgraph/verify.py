"""The verifier: a converter checked against the model's real function (``docs/design.md``, "The symmetry principle").

``verify(model)`` works on a float64 copy of the model whose parameters are re-drawn at random
(seeded; so that no two units are accidentally alike and ReLU units are alive), and checks:

* **round trip** — parameters -> edge features -> parameters is bit-exact, for one state and
  for a stack of states;
* **good permutations** — drawn from the graph's declared symmetries: the permuted model's
  outputs equal the original's (relative deviation ``max|y' - y| / max|y|`` at most ``rtol``,
  default 1e-6: the copy runs in float64 throughout — also where the model's code asks for
  float32, as Hugging Face RMSNorm and softmax do (``float64_mode``) — so reordered sums differ
  by ~1e-15), the permutation is an
  automorphism of the graph structure, and the
  graph of the permuted parameters has the same Weisfeiler-Lehman fingerprint;
* **bad permutations** — a declared symmetry broken on purpose (one parameter block incident to
  the group left unpermuted: e.g. queries permuted but not keys, or a unit's incoming weights but
  not its outgoing ones; one tensor of a stacked edge such as SwiGLU's gate without its up
  projection; or a unit moved across segments/heads): the outputs must change — by more than
  ``change_tol`` (1e-11 relative) and more than 10 times the largest change a good permutation
  caused (the model's own round-off) — *and* the graph's fingerprint must change (so the graphs
  are not isomorphic).
* **inert blocks** — when a bad permutation leaves the outputs where they were but changes the
  graph, the verifier asks whether the block it left out matters at all for these parameters and
  inputs (a saturated activation, collapsed token representations, a zero input): it replaces
  that block's values by noise as large as the values themselves. If the outputs move by less
  than ``INERT_FACTOR`` (1000) times the threshold — or the outputs are flat in the block (noise
  ``LOCAL_STEP`` times its size moves them by ~0) — the permutation cannot be tested at this draw;
  it is reported as ``inert`` instead of failing (when *every* bad permutation is inert, the
  report fails: nothing was tested).

The report is truthy exactly when every check passed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import ParameterMismatchError
from .graph import NeuralGraph
from .isomorphism import graph_fingerprint
from .params import param_specs
from .permute import is_automorphism, permute_params
from .symmetry import compose
from .verify_model import FLOAT32_RTOL, model_outputs, working_copy  # model_outputs: re-exported

__all__ = ["verify", "VerificationReport", "Check", "model_outputs"]

log = logging.getLogger(__name__)

INERT_FACTOR = 1000.0

LOCAL_STEP = 1e-5
"""Size (relative to a block's largest value) of the small change with which the verifier asks
whether the outputs are flat in a block around the drawn parameters: a bad permutation of a
block the outputs are flat in (while large noise still flips them) cannot be told from round-off."""
"""A block counts as inert when replacing its values by noise as large as themselves moves the
outputs by at most this many times the bad-permutation threshold: a permutation of it, which
changes it no more than that noise, cannot be expected to clear the threshold."""


@dataclass
class Check:
    """One verifier check."""

    kind: str  # "round-trip" | "good" | "bad" | "inert" (a bad permutation of a block without effect)
    description: str
    groups: tuple[str, ...]
    passed: bool
    deviation: float = math.nan  # relative output change
    isomorphic: bool | None = None  # graph of permuted parameters vs original
    detail: str = ""


@dataclass
class VerificationReport:
    """Outcome of :func:`verify`; truthy exactly when every check passed."""

    arch: str
    num_params: int
    rtol: float
    change_threshold: float = math.nan
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def _of(self, kind: str) -> list[Check]:
        return [c for c in self.checks if c.kind == kind]

    @property
    def good_trials(self) -> int:
        return len(self._of("good"))

    @property
    def bad_trials(self) -> int:
        return len(self._of("bad"))

    @property
    def inert_trials(self) -> int:
        """Bad permutations that could not be tested: the block they break has no effect here."""
        return len(self._of("inert"))

    @property
    def good_passed(self) -> int:
        return sum(c.passed for c in self._of("good"))

    @property
    def bad_detected(self) -> int:
        return sum(c.passed for c in self._of("bad"))

    @property
    def worst_good_deviation(self) -> float:
        """Largest relative output change under a good permutation (should be ~1e-16)."""
        return max((c.deviation for c in self._of("good")), default=0.0)

    @property
    def smallest_bad_deviation(self) -> float:
        """Smallest relative output change under a bad permutation (should be large)."""
        return min((c.deviation for c in self._of("bad")), default=math.inf)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def __bool__(self) -> bool:
        return not self.failures

    def headline(self) -> str:
        """What failed first, in one sentence (empty when everything passed)."""
        goods = [c for c in self.failures if c.kind == "good"]
        if goods:
            c = max(goods, key=lambda c: c.deviation if not math.isnan(c.deviation) else math.inf)
            return (f"the declared symmetry '{c.description.removeprefix('permute ')}' is not a symmetry of the model: "
                    f"it moved the outputs by {c.deviation:.2e} (tolerance {self.rtol:.0e}) {c.detail}").rstrip()
        trips = [c for c in self.failures if c.kind == "round-trip"]
        if trips:
            return "parameters -> edge features -> parameters is not exact"
        bads = [c for c in self.failures if c.kind == "bad"]
        if bads:
            c = bads[0]
            return (f"a permutation that breaks '{', '.join(c.groups)}' left the outputs or the graph unchanged "
                    f"(output change {c.deviation:.2e}): the graph may claim less structure than the model has")
        return ""

    def __str__(self) -> str:
        lines = [f"verify {self.arch}: FAILED — {self.headline()}"] if not self else []
        lines += [
            f"verify {self.arch}: {'PASSED' if self else 'details'} — "
            f"{self.good_passed}/{self.good_trials} good permutations kept outputs and graph "
            f"(worst deviation {self.worst_good_deviation:.2e}, tolerance {self.rtol:.0e}); "
            f"{self.bad_detected}/{self.bad_trials} bad permutations changed both "
            f"(smallest output change {self.smallest_bad_deviation:.2e}); "
            f"round trip {'exact' if all(c.passed for c in self._of('round-trip')) else 'NOT exact'}"
        ]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  inert: {c.description} {c.detail}".rstrip() for c in self._of("inert")]
        for c in self.failures:
            iso = "" if c.isomorphic is None else f", graph {'isomorphic' if c.isomorphic else 'changed'}"
            lines.append(
                f"  FAIL [{c.kind}] {c.description} (groups {', '.join(c.groups)}; output change "
                f"{c.deviation:.2e}{iso}) {c.detail}".rstrip()
            )
        return "\n".join(lines)


def _part_name(graph: NeuralGraph, side) -> str:
    return graph.block(side[0]).view.parts[side[2]].name


def _moves(graph: NeuralGraph, perms: Mapping[str, torch.Tensor], side) -> bool:
    """Whether ``perms`` moves any unit of the range that the bad permutation leaves out."""
    block = graph.block(side[0])
    ranges = (block.src, block.dst) if side[1] == "slot" else ((block.src,) if side[1] == "src" else (block.dst,))
    for r in ranges:
        perm = perms.get(r.group)
        if perm is not None and not torch.equal(perm[r.lo : r.lo + r.size], torch.arange(r.lo, r.lo + r.size)):
            return True
    return False


def _draw(graph: NeuralGraph, symmetries, generator: torch.Generator) -> dict[str, torch.Tensor]:
    sizes = {g.name: g.size for g in graph.groups}
    perms: dict[str, torch.Tensor] = {}
    for sym in symmetries:
        for name, perm in sym.draw(sizes, generator).items():
            perms[name] = compose(perms[name], perm) if name in perms else perm
    return perms


#: Largest graph (edges) on which :func:`verify` tries every declared symmetry alone and every way
#: of breaking one by default; beyond it each check costs seconds, so it samples ``trials`` of each.
EXHAUSTIVE_EDGES = 5_000_000

#: Most ways to break a symmetry :func:`verify` tries by default on a graph it otherwise checks
#: exhaustively (each costs a forward and a fingerprint); beyond it they are drawn round-robin over
#: the symmetries, so that every symmetry is broken at least once where there are fewer symmetries.
EXHAUSTIVE_CANDIDATES = 256

#: Largest edge feature matrix (elements) the round-trip check builds whole; beyond it, block by block.
_WHOLE_FEATURES = 20_000_000


def _round_trip(graph: NeuralGraph, theta: torch.Tensor) -> bool:
    """``to_params(edge_features(x)) == x`` for one state and a stack of three. Large graphs (a
    ViT's wide patch kernel times every edge, GPT-2's 124M edges) are checked one block and one
    state at a time, with the same per-block reads and writes ``edge_features`` and ``to_params``
    make: memory is one more copy of the parameters."""
    if graph.num_edges * graph.max_feat_size * 3 <= _WHOLE_FEATURES:
        stack = torch.stack([theta, -theta, theta * 2], dim=1)
        exact = torch.equal(graph.to_params(graph.edge_features(theta)), theta)
        feats3 = graph.edge_features(stack)
        return exact and all(torch.equal(graph.to_params(feats3, state=t), stack[:, t]) for t in range(3))
    out = torch.full_like(theta, float("nan"))
    for b in graph.blocks:
        if b.view is not None:
            b.view.write(out, b.view.read(theta).reshape(b.num_edges, b.feat_size).reshape(b.view.shape))
    return torch.equal(out, theta)


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


def verify(
    model: nn.Module,
    graph: NeuralGraph | None = None,
    *,
    trials: int = 8,
    seed: int = 0,
    inputs: Any = None,
    arch: str | None = None,
    rtol: float | None = None,
    change_tol: float = 1e-11,
    exhaustive: bool | None = None,
) -> VerificationReport:
    """Check a model's neural graph against the model's real function.

    ``graph`` defaults to ``neuralgraph.convert(model, arch=arch, lpe=0)``. ``inputs`` (a tensor,
    a tuple of positional arguments or a dict of keyword arguments) defaults to random inputs from the converter's
    ``example_inputs``. At least ``trials`` good and ``trials`` bad permutations are tried (more
    when there are more symmetries or ways to break them, so each is tried once). Good
    permutations must keep outputs within ``rtol`` (default 1e-6, or the converter's
    ``verify_rtol``); bad ones must move them by more than
    ``change_tol`` and 10x the worst good deviation (relative to the largest output) — at the
    verifier's parameter draw or, where that draw leaves them still (attention saturated so that
    every head attends alike), at a second draw with zero-mean weights.

    ``exhaustive`` (default: for graphs of at most :data:`EXHAUSTIVE_EDGES` edges) tries every
    declared symmetry alone and every way of breaking one (by default at most
    :data:`EXHAUSTIVE_CANDIDATES` of the latter, drawn round-robin over the symmetries: a conv
    stack with attention, such as MobileViT, has a thousand). Otherwise, where one check of a large
    model takes seconds, ``trials`` good permutations are tried (all symmetries together, then single
    symmetries drawn at random) and ``trials`` bad ones (drawn round-robin over the symmetries); the
    report notes how many were left untried, and the graph fingerprints use two Weisfeiler-Lehman
    rounds instead of four (each round is a pass over every edge). Raises ``ValueError`` for models without real weights
    (``meta`` device) or ``trials`` below 1.
    """
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive integer (permutations of each kind to try), got {trials!r}")
    if any(p.is_meta for p in model.parameters()):
        raise ValueError("verify needs real weights: the model's parameters are on the meta device")
    if graph is None:
        from .registry import convert

        graph = convert(model, arch=arch, lpe=0)
    specs = [(p.name, p.shape) for p in param_specs(model)]
    if specs != [(p.name, p.shape) for p in graph.params]:
        raise ParameterMismatchError(
            f"the graph ({graph.arch}) was built for other parameters than {type(model).__name__} has"
        )
    if rtol is None:
        from .registry import get_converter

        try:
            rtol = get_converter(graph.arch).verify_rtol or 1e-6
        except Exception:
            rtol = 1e-6
    dtype, note = torch.float64, None
    try:
        generator, runner, theta, reference = working_copy(model, graph, inputs, seed, dtype)
    except RuntimeError as err:  # a forward with float32 constants in its code (XGLM's attention mask floor)
        dtype, rtol = torch.float32, max(rtol, FLOAT32_RTOL)
        note = (f"the model does not run in float64 ({type(err).__name__}: {str(err)[:120]}); checked in float32 "
                f"with tolerance {rtol:.0e}")
        generator, runner, theta, reference = working_copy(model, graph, inputs, seed, dtype)
    report = VerificationReport(graph.arch, graph.num_params, rtol)
    if note:
        report.notes.append(note)

    report.checks.append(Check("round-trip", "params -> edge features -> params", (), _round_trip(graph, theta)))
    every_candidate = exhaustive  # None: every one unless there are more than EXHAUSTIVE_CANDIDATES
    if exhaustive is None:
        exhaustive = graph.num_edges <= EXHAUSTIVE_EDGES
    # on graphs too large to try everything, two WL rounds (each costs a pass over every edge)
    rounds = 4 if exhaustive else 2
    fingerprint = graph_fingerprint(graph, theta, iterations=rounds)
    scale = float(reference.abs().max()) + 1e-12

    def deviation_with(vector: torch.Tensor, perms=None) -> float:
        """Relative output change of the model with parameters ``vector`` (unit buffers moved by ``perms``)."""
        return float((runner.outputs(vector, perms) - reference).abs().max()) / scale

    def outcome(perms, skip=()) -> tuple[float, bool]:
        vector = permute_params(graph, theta, perms, skip=skip)
        deviation = deviation_with(vector, perms)
        same = graph_fingerprint(graph, vector, iterations=rounds) == fingerprint
        return deviation, same

    noise = torch.Generator().manual_seed(seed + 1)  # its own stream: the draws above stay as they were
    second: list = []  # (parameters, reference outputs, scale) of a second draw, made when first needed

    def second_draw_deviation(perms, skip) -> float:
        """The output change of a permutation at a second draw of the parameters, with zero-mean
        weights: the first draw's positive means (which keep ReLUs active) can saturate attention so
        that every head attends alike, and then moving a neuron between heads changes nothing. A
        permutation is no symmetry if the outputs change at any draw."""
        if not second:
            vector = runner.zero_mean_draw(theta, seed + 2)
            ref = runner.outputs(vector)
            second.extend([vector, ref, float(ref.abs().max()) + 1e-12])
        vector, ref, ref_scale = second
        return float((runner.outputs(permute_params(graph, vector, perms, skip=skip), perms) - ref).abs().max()) / ref_scale

    def sensitivity(side, step: float = 1.0) -> float:
        """Relative output change when noise ``step`` times as large as the block (or stacked
        tensor) ``side`` leaves out is added to it: ~0 means the block has no effect here."""
        block = graph.block(side[0])
        values = block.view.read(theta)
        scale = (float(values.abs().max()) + 1.0) * step
        perturbed = values + torch.randn(values.shape, generator=noise, dtype=values.dtype) * scale
        if side[1] == "slot":  # only the one stacked tensor gets noise
            keep = torch.ones(values.shape[-1], dtype=torch.bool)
            keep[block.view.columns(side[2])] = False
            perturbed[..., keep] = values[..., keep]
        vector = theta.clone()
        block.view.write(vector, perturbed)
        return deviation_with(vector)

    sizes = {g.name: g.size for g in graph.groups}
    symmetries = [s for s in graph.symmetries if s.movable(sizes)]
    if not symmetries:
        report.notes.append("the graph declares no permutable group with more than one unit: no permutation to test")
        return report

    # good permutations: each symmetry alone once, then all together (sampled: all together first)
    if exhaustive:
        plans = [[s] for s in symmetries] + [symmetries] * max(0, trials - len(symmetries))
    else:
        order = torch.randperm(len(symmetries), generator=generator).tolist()
        plans = ([symmetries] + [[symmetries[i]] for i in order])[: trials]
        untried = len(symmetries) - (len(plans) - 1)
        if untried > 0 and len(symmetries) > 1:
            report.notes.append(
                f"large graph ({graph.num_edges:,} edges): {len(plans) - 1} of {len(symmetries)} symmetries tried alone "
                f"(all of them together once); pass exhaustive=True or more trials= to try each")
    for chosen in plans:
        perms = _draw(graph, chosen, generator)
        groups = tuple(perms)
        what = "permute " + (chosen[0].name if len(chosen) == 1 else "all permutable groups")
        try:
            deviation, same = outcome(perms)
        except ValueError as err:  # the declared symmetry cannot even be applied to the blocks
            report.checks.append(Check("good", what, groups, False, detail=f"({err})"))
            continue
        auto = is_automorphism(graph, perms)
        ok = deviation <= rtol and same and auto
        detail = "" if auto else "(the permutation is not an automorphism of the graph structure)"
        report.checks.append(Check("good", what, groups, ok, deviation, same and auto, detail))

    # bad permutations: every way of breaking a symmetry, cycled
    # a bad permutation must move the outputs well above what good ones showed (round-off)
    # (only good permutations that passed count: a declared symmetry that fails is a wrong graph,
    # not round-off, and must not make every bad permutation look harmless)
    passed_good = [c.deviation for c in report.checks if c.kind == "good" and c.passed]
    threshold = max(change_tol, 10 * max(passed_good, default=0.0))
    report.change_threshold = threshold
    candidates: list[tuple[str, Any, Any]] = []
    inert = graph.meta.get("without_effect", {})
    for name, reason in inert.items():
        report.notes.append(f"'{name}' does not affect the outputs ({reason}); not used for bad permutations")
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
            candidates += [("inconsistent", sym, side) for side in sides]
        if sym.cross_segment(sizes, generator) is not None:
            candidates.append(("cross-segment", sym, None))
    if not candidates:
        report.notes.append("no way to break the declared symmetries was found: no bad permutation tested")
    if every_candidate is None and exhaustive and len(candidates) > max(trials, EXHAUSTIVE_CANDIDATES):
        exhaustive, budget = False, max(trials, EXHAUSTIVE_CANDIDATES)
    else:
        budget = trials
    if exhaustive or not candidates:
        tries = [candidates[t % len(candidates)] for t in range(max(trials, len(candidates)))] if candidates else []
    else:
        tries = _round_robin(candidates, generator)[:budget]
        if len(tries) < len(candidates):
            report.notes.append(
                f"{graph.num_edges:,} edges, {len(candidates)} ways to break a symmetry: {len(tries)} of them tried, "
                f"drawn round-robin over the {len(symmetries)} symmetries; pass exhaustive=True to try each")
    for kind, sym, side in tries:
        for _attempt in range(3):  # a permutation of units that happen to be inactive changes nothing
            if kind == "inconsistent":
                perms = _draw(graph, [sym], generator)
                for _redraw_try in range(16):  # segments drawn separately may leave the left-out range still
                    if _moves(graph, perms, side):
                        break
                    perms = _draw(graph, [sym], generator)
                skip = (side,)
                what = (
                    f"permute {sym.name} everywhere except tensor {side[2]} ({_part_name(graph, side)}) of block '{side[0]}'"
                    if side[1] == "slot"
                    else f"permute {sym.name} everywhere except the {side[1]} side of block '{side[0]}'"
                )
            else:
                perms = sym.cross_segment(sizes, generator)
                skip = ()
                what = f"move one unit of {sym.name} into another segment"
            try:
                deviation, same = outcome(perms, skip)
            except ValueError as err:
                deviation, same, detail = math.nan, None, f"({err})"
                ok = False
                break
            detail = ""
            ok = deviation > threshold and not same
            if ok:
                break
        if not ok and same is False and not math.isnan(deviation):
            again = second_draw_deviation(perms, skip)
            if again > threshold:
                ok, deviation = True, again
                detail = "(the outputs changed at a second, zero-mean draw of the weights; not at the first)"
        if not ok and kind == "cross-segment" and same is False and not math.isnan(deviation):
            effect = _head_pattern_effect(graph, sym, sensitivity)
            if effect is not None and effect <= INERT_FACTOR * threshold:
                detail = (
                    f"(what tells these segments apart has almost no effect on the outputs for these parameters and "
                    f"inputs — every head attends alike, as when deep random layers make all tokens the same, or the "
                    f"layer's result is not read: replacing its weights by noise moved the outputs by only {effect:.1e}; "
                    "the graph changed as it should)")
                report.checks.append(Check("inert", what, tuple(sym.groups), True, deviation, same, detail))
                continue
        if not ok and same is None and kind == "cross-segment":
            # the blocks address the segments separately (a grouped convolution): the permutation cannot
            # even be laid onto the parameters, so the graph itself rules it out; nothing to run
            report.checks.append(Check("inert", what, tuple(sym.groups), True, detail=f"{detail} (ruled out by the block layout)"))
            continue
        if not ok and kind == "inconsistent" and same is False and not math.isnan(deviation):
            effect = sensitivity(side)
            local = sensitivity(side, LOCAL_STEP) / LOCAL_STEP if effect > INERT_FACTOR * threshold else effect
            part = f"tensor {side[2]} of block '{side[0]}'" if side[1] == "slot" else f"block '{side[0]}'"
            if effect <= INERT_FACTOR * threshold:
                detail = (
                    f"({part} has almost no effect on the outputs for these parameters and inputs: replacing it by noise "
                    f"moved them by only {effect:.1e} (under {INERT_FACTOR * threshold:.1e}), the permutation by "
                    f"{deviation:.1e}; the graph changed as it should)"
                )
            elif local <= INERT_FACTOR * threshold:
                detail = (
                    f"(the outputs are flat in {part} around these parameters — a layer norm over very few features "
                    f"keeps only signs, or units saturate: noise {LOCAL_STEP:.0e} times its size moved them by "
                    f"{local * LOCAL_STEP:.1e} (a full-size change by {local:.1e} if they were linear, under "
                    f"{INERT_FACTOR * threshold:.1e}); only changes large enough to cross a sign show, and the permutation "
                    f"moved them by {deviation:.1e}; the graph changed as it should)"
                )
            if effect <= INERT_FACTOR * threshold or local <= INERT_FACTOR * threshold:
                report.checks.append(Check("inert", what, tuple(sym.groups), True, deviation, same, detail))
                continue
        report.checks.append(Check("bad", what, tuple(sym.groups), ok, deviation, same, detail))
    if candidates and not report.bad_trials:
        report.checks.append(
            Check(
                "bad", "break a declared symmetry", tuple(g for s in symmetries for g in s.groups), False,
                detail="(every block a bad permutation broke has no effect on the outputs at this draw: nothing was tested; "
                "try other inputs= or another seed=)",
            )
        )
    if not report:
        log.warning("verification of %s failed:\n%s", graph.arch, report)
    return report
