"""The edge-type vocabulary of neural graphs.

These integers are the vocabulary the published NiNo checkpoints were trained with
(``docs/design.md``, "Graph semantics"); the NiNo edge-type embedding has ``NUM_EDGE_TYPES`` rows.
Every other module refers to the names below, never to the raw numbers.
"""

from __future__ import annotations

PADDING = 0
"""Padding / dummy edges."""
LINEAR = 1
"""Fully connected weight (``nn.Linear``, GPT-2 ``Conv1D``, MLP projections)."""
BIAS = 2
"""Bias, and any 1-D parameter not covered by a more specific type."""
CONV = 3
"""Convolution weight; the edge carries the flattened kernel."""
NORM = 4
"""Normalization scale (LayerNorm / BatchNorm / RMSNorm weight)."""
TOKEN_EMBEDDING = 5
"""Word (token) embedding."""
POSITION_EMBEDDING = 6
"""Position embedding."""
ATTN_QUERY = 7
"""Attention query weights W_q (input stream -> query-key unit)."""
ATTN_KEY = 8
"""Attention key weights W_k (query-key unit -> input stream, transposed direction)."""
ATTN_VALUE = 9
"""Attention value weights W_v."""
RESIDUAL = 10
"""Residual (identity) connection; auxiliary, fixed value."""
HEAD = 11
"""Attention head membership; auxiliary, fixed value."""
RESERVED = 12
"""Reserved by the published vocabulary; not produced."""
SELF_LOOP = 13
"""Self-loop, one per node; auxiliary, fixed value."""

NUM_EDGE_TYPES = 15
"""Rows of the NiNo edge-type embedding table (ids 0..14)."""

NAMES: dict[int, str] = {
    PADDING: "padding",
    LINEAR: "linear",
    BIAS: "bias",
    CONV: "conv",
    NORM: "norm",
    TOKEN_EMBEDDING: "token_embedding",
    POSITION_EMBEDDING: "position_embedding",
    ATTN_QUERY: "attn_query",
    ATTN_KEY: "attn_key",
    ATTN_VALUE: "attn_value",
    RESIDUAL: "residual",
    HEAD: "head",
    RESERVED: "reserved",
    SELF_LOOP: "self_loop",
}
"""Human-readable name of every edge type."""

AUXILIARY_VALUES: dict[int, float] = {RESIDUAL: 1.0, HEAD: 1.0, SELF_LOOP: 2.0}
"""Fixed feature value (slot 0, every state) of the auxiliary edge types."""

PARAMETER_TYPES = frozenset(
    {LINEAR, BIAS, CONV, NORM, TOKEN_EMBEDDING, POSITION_EMBEDDING, ATTN_QUERY, ATTN_KEY, ATTN_VALUE}
)
"""Edge types whose features are model parameters."""


def name(edge_type: int) -> str:
    """Name of an edge type id (``'type<id>'`` for ids outside the vocabulary)."""
    return NAMES.get(int(edge_type), f"type{int(edge_type)}")
