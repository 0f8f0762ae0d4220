"""What every nowcaster is (:class:`Nowcaster`) and the checks of what it is given."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from neuralgraph.params import check_finite

if TYPE_CHECKING:  # pragma: no cover
    from neuralgraph import NeuralGraph

__all__ = ["Nowcaster", "check_k", "check_states", "work_dtype"]


@runtime_checkable
class Nowcaster(Protocol):
    """What the optimizer wrapper and :func:`predict` need from a predictor.

    Attributes:
        name: a short human-readable name ("NiNo", "WNN+", "Linefit", ...).
        needs_graph: whether :meth:`predict` uses the neural graph (structure, edge types or
            per-tensor layout). Predictors with ``False`` accept ``graph=None``.

    Optional attributes read with ``getattr``: ``ctx`` (the history length the predictor
    requires, None for any), ``seq_len`` (the largest horizon it supports; the horizon
    schedule starts there; 40 when absent), ``context_hops`` (how far upstream in the graph
    its outputs look, for per-block prediction; 0 when absent, see :func:`layer_parts`) and
    ``uses_lr_interval`` (True: :meth:`predict` also takes ``lr_interval=``, the base learning
    rate times the steps between two states; False when absent).
    """

    name: str
    needs_graph: bool

    def predict(self, graph: NeuralGraph | None, states: torch.Tensor, k: int) -> torch.Tensor:
        """Predicted flat parameters ``[P]`` ``k`` state intervals after the last of ``states [P, ctx]``."""
        ...


def check_k(k: Any) -> int:
    if isinstance(k, torch.Tensor) and k.numel() == 1:
        k = k.item()
    if isinstance(k, bool) or not isinstance(k, int):
        try:
            as_int = int(k)
        except (TypeError, ValueError):
            raise ValueError(f"horizon k must be a positive integer, got {k!r}") from None
        if as_int != k:
            raise ValueError(f"horizon k must be a positive integer, got {k!r}")
        k = as_int
    if k < 1:
        raise ValueError(f"horizon k must be a positive integer, got {k}")
    return k


def check_states(states: Any, graph: NeuralGraph | None) -> torch.Tensor:
    if not isinstance(states, torch.Tensor) or states.ndim != 2 or not states.is_floating_point():
        shape = tuple(states.shape) if isinstance(states, torch.Tensor) else type(states).__name__
        raise ValueError(f"states must be a floating-point [P, ctx] history (oldest state first), got {shape}")
    if graph is not None and states.shape[0] != graph.num_params:
        raise ValueError(
            f"states have {states.shape[0]} rows but the {graph.arch} graph has {graph.num_params} parameters"
        )
    # one isfinite pass; a bad value is named by parameter, flat index and state (0 = oldest)
    check_finite(states, graph.params if graph is not None else None, "states", order="0 = oldest")
    return states


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 at least: scaling statistics of half-precision histories lose too much."""
    return torch.promote_types(dtype, torch.float32)
