"""The traced converter's functional check: every symmetry it declares must keep the model's outputs.

The trace sees parameters and the operations on them; a constant that is not a parameter but
treats units differently — ALiBi's per-head slopes added to attention scores, a fixed table
indexed along a hidden axis — is invisible to its rules, and a symmetry it declares may then not
be one. Such a graph would be silently wrong (its heads look interchangeable, the model's are
not), so the converter refuses the model instead, naming the symmetry and how far a permutation
of it moved the outputs.

The check permutes each declared symmetry once (a permutation that moves some unit) on a float64
working copy with the verifier's random parameters and compares outputs: one forward per
symmetry, on the converter's example inputs (two rows). Models on the ``meta`` device and models
above :data:`MAX_PARAMS` parameters are not checked here (``neuralgraph.verify`` does the full check).

Experts permuted with their router's units (:mod:`neuralgraph.trace.experts`) are the exception:
the trace reads that symmetry off a convention of the routing code, not off its dataflow, so it is
kept only where this check runs and confirms it — dropped, not refused, where it fails or cannot run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from ..errors import UnsupportedModelError
from ..graph import NeuralGraph
from ..permute import permute_params
from ..verify_model import working_copy

__all__ = ["MAX_PARAMS", "ROUTED_DRAWS", "RTOL", "refuse_broken_symmetries"]

log = logging.getLogger(__name__)

MAX_PARAMS = 20_000_000
"""Largest model (parameters) whose declared symmetries are checked at conversion."""

RTOL = 1e-6
"""Largest relative output change a declared symmetry may cause (float64 round-off is ~1e-15)."""

ROUTED_DRAWS = 3
"""Permutations tried of a symmetry that rests on the routing convention (experts with their router)."""


def _moving_draw(sym, sizes: dict[str, int], generator: torch.Generator, tries: int = 8) -> dict:
    """A permutation of ``sym`` that moves at least one unit (a random draw may be the identity)."""
    perms = sym.draw(sizes, generator)
    for _ in range(tries):
        if any(bool((p != torch.arange(len(p))).any()) for p in perms.values()):
            break
        perms = sym.draw(sizes, generator)
    return perms


def refuse_broken_symmetries(model: nn.Module, inputs) -> Callable[[NeuralGraph], NeuralGraph]:
    """A graph finisher that raises :class:`UnsupportedModelError` when permuting one of the
    graph's declared symmetries changes ``model``'s outputs on ``inputs``. A symmetry that rests
    on a convention the trace cannot see (experts permuted with their router's units,
    ``graph.meta["routed_experts"]``) is dropped instead where it fails, and where it cannot be
    checked (listed in ``graph.meta["dropped_symmetries"]``)."""

    def finish(graph: NeuralGraph) -> NeuralGraph:
        sizes = {g.name: g.size for g in graph.groups}
        symmetries = [s for s in graph.symmetries if s.movable(sizes)]
        routed = set(graph.meta.get("routed_experts", ())) & {repr(s) for s in graph.symmetries}
        if "routed_experts" in graph.meta:  # those the structural check kept
            graph.meta["routed_experts"] = [r for r in graph.meta["routed_experts"] if r in routed]
        if not symmetries:
            return graph
        if graph.num_params > MAX_PARAMS or any(p.is_meta for p in model.parameters()):
            return _drop(graph, routed, "could not be checked at conversion (meta device or too large)")
        try:
            _, runner, theta, reference = working_copy(model, graph, inputs, 0, torch.float64)
        except RuntimeError as err:  # cannot run in float64: verify checks it in float32
            log.info("traced %s: symmetries not checked at conversion (%s)", type(model).__name__, err)
            return _drop(graph, routed, f"could not be checked at conversion ({err})")
        check = _Check(model, graph, runner, theta, reference)
        generator = torch.Generator().manual_seed(1)
        failed = {repr(sym) for sym in symmetries if not check.holds(sym, sizes, generator, repr(sym) in routed)}
        return _drop(graph, failed, "does not hold for the function at conversion (the routing is not "
                     "equivariant under reordering these experts)")

    return finish


class _Check:
    """Permutations of a graph's symmetries tried on a float64 working copy of its model."""

    def __init__(self, model: nn.Module, graph: NeuralGraph, runner, theta: torch.Tensor, reference: torch.Tensor):
        self.model, self.graph, self.runner, self.theta, self.reference = model, graph, runner, theta, reference
        self.scale = float(reference.abs().max()) + 1e-12

    def holds(self, sym, sizes: dict[str, int], generator: torch.Generator, routed: bool) -> bool:
        """Whether permuting ``sym`` keeps the outputs (:data:`ROUTED_DRAWS` draws of a routed one);
        raises :class:`UnsupportedModelError` where a symmetry read off the dataflow fails."""
        for _ in range(ROUTED_DRAWS if routed else 1):
            why = self.moved(_moving_draw(sym, sizes, generator))
            if why is not None and routed:
                return False
            if why is not None:
                raise UnsupportedModelError(
                    f"the symmetry {sym.name} read off {type(self.model).__name__}'s computation does not "
                    f"hold for its function: {why}. Something that is not a parameter treats these units differently "
                    "(for example ALiBi's per-head slopes added to attention scores, or a fixed table indexed along "
                    "this axis), which the graph cannot show; the model is refused rather than given a wrong graph")
        return True

    def moved(self, perms: dict) -> str | None:
        """Why permuting by ``perms`` is no symmetry of the model (None where the outputs stay)."""
        try:
            vector = permute_params(self.graph, self.theta, perms)
            moved = float((self.runner.outputs(vector, perms) - self.reference).abs().max()) / self.scale
        except ValueError as err:
            return f"it cannot be laid onto the parameter blocks ({err})"
        if moved <= RTOL:
            return None
        return f"permuting it moved the outputs by {moved:.1e} (relative; round-off is ~1e-15)"


def _drop(graph: NeuralGraph, names: set[str], why: str) -> NeuralGraph:
    """``graph`` without the symmetries whose repr is in ``names`` (recorded, logged)."""
    dropped = [s for s in graph.symmetries if repr(s) in names]
    if dropped:
        graph.symmetries = tuple(s for s in graph.symmetries if repr(s) not in names)
        graph.meta.setdefault("dropped_symmetries", []).extend(repr(s) for s in dropped)
        graph.meta["routed_experts"] = [r for r in graph.meta.get("routed_experts", ()) if r not in names]
        log.info("traced %s: %s %s; dropped", graph.arch, "; ".join(s.name for s in dropped), why)
    return graph
