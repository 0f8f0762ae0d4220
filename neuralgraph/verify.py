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
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import ParameterMismatchError
from .graph import NeuralGraph
from .isomorphism import graph_fingerprint
from .params import param_specs
from .permute import is_automorphism, permute_params
from .registry import convert, get_converter
from .verify_bad import bad_checks
from .verify_checks import INERT_FACTOR, LOCAL_STEP, Check, draw_good  # INERT_FACTOR, LOCAL_STEP: re-exported
from .verify_model import FLOAT32_RTOL, model_outputs, working_copy  # model_outputs: re-exported

__all__ = ["verify", "VerificationReport", "Check", "model_outputs", "INERT_FACTOR", "LOCAL_STEP"]

log = logging.getLogger(__name__)


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
    ViT's wide patch kernel times every edge, GPT-2's 124M edges) check the block-wise layout
    (``packed=True``) for one state instead: memory is one more copy of the parameters."""
    if graph.num_edges * graph.max_feat_size * 3 <= _WHOLE_FEATURES:
        stack = torch.stack([theta, -theta, theta * 2], dim=1)
        exact = torch.equal(graph.to_params(graph.edge_features(theta)), theta)
        feats3 = graph.edge_features(stack)
        return exact and all(torch.equal(graph.to_params(feats3, state=t), stack[:, t]) for t in range(3))
    return torch.equal(graph.to_params(graph.edge_features(theta, packed=True, check=False), check=False), theta)


def _checked_graph(model: nn.Module, graph: NeuralGraph | None, trials: int, arch: str | None) -> NeuralGraph:
    """The graph to verify (converted when not given), after checking the arguments: ``trials``,
    real weights, and a graph built for the model's parameters."""
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive integer (permutations of each kind to try), got {trials!r}")
    if any(p.is_meta for p in model.parameters()):
        raise ValueError("verify needs real weights: the model's parameters are on the meta device")
    if graph is None:
        graph = convert(model, arch=arch, lpe=0)
    specs = [(p.name, p.shape) for p in param_specs(model)]
    if specs != [(p.name, p.shape) for p in graph.params]:
        raise ParameterMismatchError(
            f"the graph ({graph.arch}) was built for other parameters than {type(model).__name__} has"
        )
    return graph


def _working_copy(model: nn.Module, graph: NeuralGraph, inputs: Any, seed: int, rtol: float | None):
    """The empty report (its ``rtol``: the given one, the converter's ``verify_rtol`` or 1e-6, at
    least ``FLOAT32_RTOL`` where the model runs only in float32) and the model's working copy:
    ``(report, generator, runner, theta, reference)``."""
    if rtol is None:
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
    return report, generator, runner, theta, reference


@dataclass
class _Run:
    """What one :func:`verify` call checks against: the graph, the working copy of the model
    (``runner``, its drawn parameters ``theta`` and their outputs ``reference``), the seeded
    ``generator`` every permutation is drawn from, and the report the checks go into."""

    graph: NeuralGraph
    runner: Any
    theta: torch.Tensor
    reference: torch.Tensor
    generator: torch.Generator
    seed: int
    report: VerificationReport
    rounds: int  # Weisfeiler-Lehman rounds of the graph fingerprints
    fingerprint: Any = field(init=False)
    scale: float = field(init=False)  # largest reference output: deviations are relative to it
    sizes: dict[str, int] = field(init=False)
    symmetries: list = field(init=False)  # the declared symmetries that move at least one unit

    def __post_init__(self) -> None:
        self.fingerprint = graph_fingerprint(self.graph, self.theta, iterations=self.rounds)
        self.scale = float(self.reference.abs().max()) + 1e-12
        self.sizes = {g.name: g.size for g in self.graph.groups}
        self.symmetries = [s for s in self.graph.symmetries if s.movable(self.sizes)]

    def deviation_with(self, vector: torch.Tensor, perms=None) -> float:
        """Relative output change of the model with parameters ``vector`` (unit buffers moved by ``perms``)."""
        return float((self.runner.outputs(vector, perms) - self.reference).abs().max()) / self.scale

    def outcome(self, perms, skip=()) -> tuple[float, bool]:
        """The relative output change under ``perms`` (leaving out ``skip``) and whether the graph's
        fingerprint stayed the same."""
        vector = permute_params(self.graph, self.theta, perms, skip=skip)
        deviation = self.deviation_with(vector, perms)
        same = graph_fingerprint(self.graph, vector, iterations=self.rounds) == self.fingerprint
        return deviation, same

    def good_checks(self, trials: int, exhaustive: bool) -> None:
        """Good permutations: each symmetry alone once, then all together (sampled: all together
        first, then ``trials - 1`` symmetries alone, drawn at random)."""
        symmetries, report = self.symmetries, self.report
        if exhaustive:
            plans = [[s] for s in symmetries] + [symmetries] * max(0, trials - len(symmetries))
        else:
            order = torch.randperm(len(symmetries), generator=self.generator).tolist()
            plans = ([symmetries] + [[symmetries[i]] for i in order])[: trials]
            untried = len(symmetries) - (len(plans) - 1)
            if untried > 0 and len(symmetries) > 1:
                report.notes.append(
                    f"large graph ({self.graph.num_edges:,} edges): {len(plans) - 1} of {len(symmetries)} symmetries "
                    f"tried alone (all of them together once); pass exhaustive=True or more trials= to try each")
        for chosen in plans:
            report.checks.append(self._good(chosen))

    def _good(self, chosen: list) -> Check:
        """The check of one good permutation: the symmetries ``chosen`` drawn together."""
        perms = draw_good(self.graph, chosen, self.generator)
        groups = tuple(perms)
        what = "permute " + (chosen[0].name if len(chosen) == 1 else "all permutable groups")
        try:
            deviation, same = self.outcome(perms)
        except ValueError as err:  # the declared symmetry cannot even be applied to the blocks
            return Check("good", what, groups, False, detail=f"({err})")
        auto = is_automorphism(self.graph, perms)
        ok = deviation <= self.report.rtol and same and auto
        detail = "" if auto else "(the permutation is not an automorphism of the graph structure)"
        return Check("good", what, groups, ok, deviation, same and auto, detail)


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
    graph = _checked_graph(model, graph, trials, arch)
    report, generator, runner, theta, reference = _working_copy(model, graph, inputs, seed, rtol)
    report.checks.append(Check("round-trip", "params -> edge features -> params", (), _round_trip(graph, theta)))
    every_candidate = exhaustive  # None: every one unless there are more than EXHAUSTIVE_CANDIDATES
    if exhaustive is None:
        exhaustive = graph.num_edges <= EXHAUSTIVE_EDGES
    # on graphs too large to try everything, two WL rounds (each costs a pass over every edge)
    run = _Run(graph, runner, theta, reference, generator, seed, report, rounds=4 if exhaustive else 2)
    if not run.symmetries:
        report.notes.append("the graph declares no permutable group with more than one unit: no permutation to test")
        return report
    run.good_checks(trials, exhaustive)
    bad_checks(run, trials, exhaustive, every_candidate, change_tol, EXHAUSTIVE_CANDIDATES)
    if not report:
        log.warning("verification of %s failed:\n%s", graph.arch, report)
    return report
