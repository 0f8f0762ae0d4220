"""The largest deviation between two results, where it lies, and the failure message built from it.

A deviation is located in the terms of what was compared: a parameter and its element for a
flat vector ``[P]`` or a stack ``[P, T]`` (from the graph's parameter specs), a node and its group
for node outputs ``[N, ...]``, else the element of the output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..graph import NeuralGraph
from ..params import locate
from ..permutation import Permutation
from ..permute import param_index

__all__ = ["Deviation", "as_tensor", "measure", "failure_message", "moved_parameters", "default_rtol"]

#: Parameters listed by :func:`moved_parameters` before it summarises.
SHOWN_PARAMS = 6


def default_rtol(*values: torch.Tensor) -> float:
    """1e-9 when every value is float64, else 1e-5 (float32 round-off over sums of a few hundred terms)."""
    return 1e-9 if values and all(v.dtype == torch.float64 for v in values) else 1e-5


def as_tensor(value: Any, what: str) -> torch.Tensor:
    """A function's result as one tensor: a tensor as it is, a number as a 0-d tensor, tuples,
    lists, dicts and Hugging Face output objects as their floating tensors, flattened and joined."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.float64)
    parts = _floats(value)
    if not parts:
        raise TypeError(f"{what} returned {type(value).__name__}, which holds no floating-point tensor to compare")
    return torch.cat([p.detach().reshape(-1) for p in parts])


def _floats(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _floats(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _floats(v)]
    if hasattr(value, "to_tuple"):
        return _floats(value.to_tuple())
    return []


@dataclass(frozen=True)
class Deviation:
    """``max |actual - expected|`` (``value``), its position in the compared tensors (``index``,
    a multi-index) and the scale ``max |expected|`` it is judged against."""

    value: float
    index: tuple[int, ...]
    scale: float
    actual: float
    expected: float
    shape: tuple[int, ...]

    @property
    def relative(self) -> float:
        """``value / scale`` (``value`` itself where the scale is 0)."""
        return self.value / self.scale if self.scale > 0 else self.value

    def within(self, rtol: float, atol: float) -> bool:
        return self.value <= atol + rtol * self.scale


def measure(actual: torch.Tensor, expected: torch.Tensor, what: str) -> Deviation:
    """The largest deviation of ``actual`` from ``expected`` (same shape; NaN or Inf where only
    one side has it counts as an infinite deviation).

    Raises:
        AssertionError: the shapes differ (an equivariant or invariant function keeps its shape).
    """
    if actual.shape != expected.shape:
        raise AssertionError(
            f"{what}: the results have different shapes, {tuple(actual.shape)} after the permutation and "
            f"{tuple(expected.shape)} before it"
        )
    a, e = actual.detach().double().reshape(-1), expected.detach().double().reshape(-1)
    if a.numel() == 0:
        return Deviation(0.0, (), 0.0, math.nan, math.nan, tuple(actual.shape))
    diff = (a - e).abs()
    same = (a == e) | (a.isnan() & e.isnan())  # equal infinities and NaN on both sides agree
    diff = torch.where(same, torch.zeros_like(diff), diff.nan_to_num(nan=math.inf))
    flat = int(diff.argmax())
    finite = e[e.isfinite()]
    scale = float(finite.abs().max()) if finite.numel() else 0.0
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), tuple(actual.shape))) if actual.ndim else ()
    return Deviation(float(diff[flat]), index, scale, float(a[flat]), float(e[flat]), tuple(actual.shape))


def where(deviation: Deviation, graph: NeuralGraph, layout: str) -> str:
    """Where ``deviation`` lies, in words: ``layout`` is ``"params"`` (``[P]`` / ``[P, T]``),
    ``"nodes"`` (``[N, ...]``) or ``"output"``."""
    index = deviation.index
    if layout == "params" and index:
        spec, local = locate(graph.params, index[0])
        element = _element(spec.shape, local)
        state = f", state {index[1]} of {deviation.shape[1]}" if len(index) > 1 else ""
        return (f"parameter '{spec.name}' element {element} of shape {tuple(spec.shape)} (flat position "
                f"{index[0]} of {graph.num_params}{state})")
    if layout == "nodes" and index:
        group = next(g for g in graph.groups if g.start <= index[0] < g.stop)
        rest = f", feature {index[1:]}" if len(index) > 1 else ""
        return f"node {index[0]} (unit {index[0] - group.start} of group '{group.name}'){rest}"
    if not index:
        return "the (scalar) output"
    return f"output element {index if len(index) > 1 else index[0]} of shape {deviation.shape}"


def _element(shape: tuple[int, ...], local: int) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(local), tuple(shape))) if shape else ()


def moved_parameters(graph: NeuralGraph, perm: Permutation) -> str:
    """Which parameters ``perm`` moves, and how many of their entries (``'0.weight' 12 of 18``)."""
    index = param_index(graph, perm)
    moved = index != torch.arange(graph.num_params)
    counts = [(spec, int(moved[spec.offset : spec.offset + spec.numel].sum())) for spec in graph.params]
    touched = [(spec, n) for spec, n in counts if n]
    if not touched:
        return "none (the permutation leaves every parameter in place)"
    shown = ", ".join(f"'{spec.name}' {n} of {spec.numel}" for spec, n in touched[:SHOWN_PARAMS])
    more = f", ... {len(touched) - SHOWN_PARAMS} more" if len(touched) > SHOWN_PARAMS else ""
    return shown + more


def failure_message(
    claim: str, perm: Permutation, deviation: Deviation, place: str, rtol: float, atol: float, names: tuple[str, str],
    extra: str = "",
) -> str:
    """The message of a failed assertion: the claim, the permutation, the largest deviation and
    where it lies, the two values there, and the tolerance it was judged against."""
    actual, expected = names
    allowed = atol + rtol * deviation.scale
    lines = [
        f"{claim} under {perm!r}",
        f"  largest deviation |{actual} - {expected}| = {deviation.value:.3e} at {place}",
        f"    ({actual} = {deviation.actual:.6g}, {expected} = {deviation.expected:.6g} there; relative to the "
        f"scale max|{expected}| = {deviation.scale:.3e}: {deviation.relative:.3e})",
        f"  tolerance: atol + rtol * scale = {atol:.1e} + {rtol:.1e} * {deviation.scale:.3e} = {allowed:.3e}",
    ]
    if extra:
        lines.append(f"  {extra}")
    return "\n".join(lines)
