"""Model families the library refuses by name, each with the reason.

The traced converter reads most families off their forward. A few compute something it can
follow only by unrolling it over positions, which gives a graph whose nodes depend on the
sequence length — not a graph of the network. They are refused up front, before any tracing,
with what is in the way; ``arch="traced"`` still tries, for anyone who wants to look.
"""

from __future__ import annotations

__all__ = ["REFUSED_MODEL_TYPES", "refusal_for"]

_SELECTIVE_SCAN = (
    "{model_type}: the selective scan of its mixer layers (a recurrence over positions, "
    "state_t = exp(A * dt_t) * state_(t-1) + dt_t * B_t * x_t, read out through C_t) is a loop over the "
    "sequence in the forward; traced, it unrolls into nodes per position, so the graph would depend on "
    "the input length. Its neuron symmetries (the inner channels, shared by in_proj, conv1d, x_proj, "
    "dt_proj, A_log, D and out_proj; the state dimensions of A_log with x_proj's B and C rows) need a "
    "hand-written converter, which neuralgraph does not have yet"
)

REFUSED_MODEL_TYPES: dict[str, str] = {
    "mamba": _SELECTIVE_SCAN,
    "mamba2": _SELECTIVE_SCAN,
    "falcon_mamba": _SELECTIVE_SCAN,
}
"""``model_type`` -> why it is refused (formatted with the model type)."""


def refusal_for(model_type: str | None) -> str | None:
    """The reason ``model_type`` is refused, or None."""
    reason = REFUSED_MODEL_TYPES.get(model_type or "")
    return reason.format(model_type=model_type) if reason else None
