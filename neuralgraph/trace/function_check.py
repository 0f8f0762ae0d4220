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

__all__ = ["MAX_PARAMS", "RTOL", "refuse_broken_symmetries"]

log = logging.getLogger(__name__)

MAX_PARAMS = 20_000_000
"""Largest model (parameters) whose declared symmetries are checked at conversion."""

RTOL = 1e-6
"""Largest relative output change a declared symmetry may cause (float64 round-off is ~1e-15)."""


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
    graph's declared symmetries changes ``model``'s outputs on ``inputs``."""

    def finish(graph: NeuralGraph) -> NeuralGraph:
        sizes = {g.name: g.size for g in graph.groups}
        symmetries = [s for s in graph.symmetries if s.movable(sizes)]
        if not symmetries or graph.num_params > MAX_PARAMS or any(p.is_meta for p in model.parameters()):
            return graph
        try:
            _, runner, theta, reference = working_copy(model, graph, inputs, 0, torch.float64)
        except RuntimeError as err:  # cannot run in float64: verify checks it in float32
            log.info("traced %s: symmetries not checked at conversion (%s)", type(model).__name__, err)
            return graph
        scale = float(reference.abs().max()) + 1e-12
        generator = torch.Generator().manual_seed(1)
        for sym in symmetries:
            perms = _moving_draw(sym, sizes, generator)
            try:
                moved = float((runner.outputs(permute_params(graph, theta, perms), perms) - reference).abs().max()) / scale
            except ValueError as err:
                moved, why = float("nan"), f"it cannot be laid onto the parameter blocks ({err})"
            else:
                why = f"permuting it moved the outputs by {moved:.1e} (relative; round-off is ~1e-15)"
            if not moved <= RTOL:
                raise UnsupportedModelError(
                    f"the symmetry {sym.name} read off {type(model).__name__}'s computation does not "
                    f"hold for its function: {why}. Something that is not a parameter treats these units differently "
                    "(for example ALiBi's per-head slopes added to attention scores, or a fixed table indexed along "
                    "this axis), which the graph cannot show; the model is refused rather than given a wrong graph")
        return graph

    return finish
