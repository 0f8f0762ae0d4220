"""Llama-family decoders (Hugging Face ``LlamaModel`` / ``LlamaForCausalLM``; also Mistral and
Qwen2, which share the layout) as neural graphs.

Per block (pre-RMSNorm): ``input_layernorm`` attaches to the block's input stream and
``post_attention_layernorm`` to the mid stream. The SwiGLU MLP's gate and up projections read the
same stream and are multiplied unit by unit, so each (stream unit, hidden unit) pair is one edge
whose two feature slots hold ``[W_gate, W_up]``; the hidden units (permuted together for both)
feed ``down_proj``.

Attention, with ``H`` query heads and ``G`` key/value heads:

* ``G == H`` (multi-head): as GPT-2 — query-key units shared by W_q (stream -> unit) and W_k
  (unit -> stream), value units, one node per head.
* ``G < H`` (grouped-query): key and value units per key/value head; query units and
  attention-output units per query head; head nodes for both kinds of heads. Auxiliary head edges
  tie each key/value head node to its query head nodes, each key unit ``j`` to query unit ``j`` of
  every query head it serves, and each value unit ``j`` to output unit ``j`` of those heads — so
  moving a unit or a head across groups is visible in the graph, as it is to the function.

RoPE rotates fixed pairs of query/key dimensions with fixed frequencies: no permutation of
query/key dimensions inside a head keeps the function, and none is declared. Declared symmetries:
whole heads (and, under GQA, whole key/value groups and query heads within their group), value
dimensions within a head (multi-head case), MLP hidden units, and — for causal-LM heads, whose
outputs are logits — the residual stream. Key biases (Qwen2) are *not* without effect here: RoPE
rotates them with the key's position, so they change the scores.

Known limitation: the graph does not tell query/key dimensions of one head apart (they have the
same neighbours), although RoPE does; no edge type in the published vocabulary encodes a rotary
frequency.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .. import edge_types as et
from ..builder import GraphBuilder
from ..errors import UnsupportedModelError
from ..groups import NodeGroup
from ..params import ParamView
from ..registry import register
from ..source import ModelSource
from ._hf import config_value, require_transformers
from ._stream import Streams

MODEL_TYPES = ("llama", "mistral", "qwen2")


@dataclass(frozen=True)
class _Heads:
    """Query heads, key/value heads (``kv < q``: grouped-query attention) and the head size."""

    q: int
    kv: int
    dim: int


_QKV = tuple[ParamView, ParamView, ParamView]  # W_q, W_k, W_v, stored (out, in)


def _num_heads(cfg) -> tuple[int, int]:
    heads = int(config_value(cfg, "num_attention_heads", "n_head", what="number of attention heads"))
    kv_heads = heads
    for name in ("num_key_value_heads",):
        try:
            kv_heads = int(config_value(cfg, name, what="number of key/value heads"))
        except UnsupportedModelError:
            pass
    if heads % kv_heads:
        raise UnsupportedModelError(f"llama: {heads} query heads do not split into {kv_heads} key/value groups")
    return heads, kv_heads


def _norm(b: GraphBuilder, name: str, units: NodeGroup) -> None:
    """An RMSNorm (scale only) attached to the units it normalizes."""
    b.star(b.param(name + ".weight"), b.bias_node(name + ".weight"), units, et.NORM)


def _bias(b: GraphBuilder, known: set[str], name: str, units: NodeGroup) -> None:
    """The bias ``name`` on ``units``, where the model has one."""
    if name in known:
        b.star(b.param(name), b.bias_node(name), units, et.BIAS)


def _attention_block(
    b: GraphBuilder, known: set[str], a: str, x: NodeGroup, streams: Streams, heads: _Heads, naive: bool
) -> NodeGroup:
    """Self-attention reading ``x``; ``o_proj`` and the residual write a new stream, returned."""
    wq, wk, wv = (b.param(a + f"{n}_proj.weight") for n in "qkv")
    mid = streams.new()
    if naive:
        out_units = _naive_attention(b, known, a, x, (wq, wk, wv), heads)
    elif heads.kv == heads.q:
        out_units = _multi_head_attention(b, known, a, x, (wq, wk, wv), heads)
    else:
        out_units = _grouped_query_attention(b, known, a, x, (wq, wk, wv), heads)
    b.dense(b.param(a + "o_proj.weight"), out_units, mid, et.LINEAR)
    _bias(b, known, a + "o_proj.bias", mid)
    b.residual(x, mid)
    return mid


def _naive_attention(
    b: GraphBuilder, known: set[str], a: str, x: NodeGroup, w: _QKV, heads: _Heads
) -> NodeGroup:
    """W_q, W_k, W_v stacked on one edge per (stream unit, unit); no head nodes."""
    if heads.kv != heads.q:
        raise UnsupportedModelError("llama: the naive graph needs as many key/value heads as query heads")
    units = b.group(a + "qkv", heads.q * heads.dim, role="value")
    b.dense(list(w), x, units, et.LINEAR, name=a + "qkv")
    if a + "q_proj.bias" in known:
        b.star([b.param(a + f"{n}_proj.bias") for n in "qkv"], b.bias_node(a + "qkv.bias"), units, et.BIAS)
    return units  # no head nodes, and RoPE leaves no symmetry inside a head


def _multi_head_attention(
    b: GraphBuilder, known: set[str], a: str, x: NodeGroup, w: _QKV, heads: _Heads
) -> NodeGroup:
    """As GPT-2: query-key units shared by W_q and W_k, value units, one node per head."""
    wq, wk, wv = w
    head_nodes = b.group(a + "heads", heads.q, role="head")
    qk = b.group(a + "qk", heads.q * heads.dim, role="query_key")
    values = b.group(a + "v", heads.q * heads.dim, role="value")
    b.dense(wq, x, qk, et.ATTN_QUERY)
    b.dense(wk.t(), qk, x, et.ATTN_KEY)
    b.dense(wv, x, values, et.ATTN_VALUE)
    b.head_membership(head_nodes, a, qk=qk, v=values)
    _bias(b, known, a + "q_proj.bias", qk)
    _bias(b, known, a + "k_proj.bias", qk)
    _bias(b, known, a + "v_proj.bias", values)
    b.permutable_heads(head_nodes, qk, values)
    b.permutable(values, segments=heads.q)
    return values


def _grouped_query_attention(
    b: GraphBuilder, known: set[str], a: str, x: NodeGroup, w: _QKV, heads: _Heads
) -> NodeGroup:
    """Key/value units per key/value head, query and output units per query head, head nodes for
    both, and head edges pairing the units of each query head with those of its key/value head."""
    wq, wk, wv = w
    dim, group = heads.dim, heads.q // heads.kv
    kv_nodes = b.group(a + "kv_heads", heads.kv, role="head")
    q_nodes = b.group(a + "q_heads", heads.q, role="head")
    keys = b.group(a + "k", heads.kv * dim, role="query_key")
    values = b.group(a + "v", heads.kv * dim, role="value")
    queries = b.group(a + "q", heads.q * dim, role="query_key")
    out_units = b.group(a + "o", heads.q * dim, role="value")
    b.dense(wq, x, queries, et.ATTN_QUERY)
    b.dense(wk.t(), keys, x, et.ATTN_KEY)
    b.dense(wv, x, values, et.ATTN_VALUE)
    b.head_membership(kv_nodes, a, unit="kv", k=keys, v=values, q_heads=q_nodes)
    b.head_membership(q_nodes, a, q=queries, o=out_units)
    for h in range(heads.q):  # unit j of a key/value head meets unit j of each query head it serves
        kv_sl = slice(h // group * dim, (h // group + 1) * dim)
        q_sl = slice(h * dim, (h + 1) * dim)
        b.diagonal(keys[kv_sl], queries[q_sl], et.HEAD, name=f"{a}head{h}.qk_pairs")
        b.diagonal(values[kv_sl], out_units[q_sl], et.HEAD, name=f"{a}head{h}.vo_pairs")
    _bias(b, known, a + "q_proj.bias", queries)
    _bias(b, known, a + "k_proj.bias", keys)
    _bias(b, known, a + "v_proj.bias", values)
    b.permutable_heads(kv_nodes, keys, values, q_nodes, queries, out_units)
    b.permutable_heads(q_nodes, queries, out_units, within=heads.kv)
    return out_units


def _swiglu_mlp(b: GraphBuilder, known: set[str], m: str, mid: NodeGroup, streams: Streams) -> None:
    """Gate and up projections on one two-slot edge per (stream unit, hidden unit), then ``down_proj``
    and the residual into a new stream."""
    gate, up = b.param(m + "gate_proj.weight"), b.param(m + "up_proj.weight")
    hidden = b.group(m + "hidden", gate.shape[0], role="hidden")
    b.dense([gate, up], mid, hidden, et.LINEAR, name=m + "gate_up")
    if m + "gate_proj.bias" in known:
        b.star([b.param(m + "gate_proj.bias"), b.param(m + "up_proj.bias")], b.bias_node(m + "gate_up.bias"),
               hidden, et.BIAS)
    out = streams.new()
    b.dense(b.param(m + "down_proj.weight"), hidden, out, et.LINEAR)
    _bias(b, known, m + "down_proj.bias", out)
    b.residual(mid, out)
    b.permutable(hidden)


def _check_layout(known: set[str], pre: str) -> None:
    """Refuse parameters outside the Llama layout."""
    placed = (pre + "embed_tokens.weight", pre + "norm.weight", "lm_head.weight")
    for name in known:
        if not (name.startswith(pre + "layers.") or name in placed):
            raise UnsupportedModelError(f"llama: parameter '{name}' is not part of the Llama layout")


def declare_llama(source: ModelSource, *, naive: bool = False) -> GraphBuilder:
    b = GraphBuilder(source.params, arch="llama")
    known = {p.name for p in source.params}
    pre = "model." if "model.embed_tokens.weight" in known else ""
    q_heads, kv_heads = _num_heads(source.config)
    emb = b.param(pre + "embed_tokens.weight")
    vocab, width = emb.shape
    q0_name = f"{pre}layers.0.self_attn.q_proj.weight"
    q0 = b.param(q0_name) if q0_name in known else None
    heads = _Heads(q_heads, kv_heads, q0.shape[0] // q_heads if q0 is not None else width // q_heads)
    layers = sorted({int(n[len(pre) + 7 :].split(".")[0]) for n in known if n.startswith(pre + "layers.")})

    tokens = b.group("tokens", vocab, role="token", tokens=True)
    streams = Streams(b, width)
    b.dense(emb.t(), tokens, streams.last, et.TOKEN_EMBEDDING)
    for i in layers:
        p = f"{pre}layers.{i}."
        x = streams.last
        _norm(b, p + "input_layernorm", x)
        mid = _attention_block(b, known, p + "self_attn.", x, streams, heads, naive)
        _norm(b, p + "post_attention_layernorm", mid)
        _swiglu_mlp(b, known, p + "mlp.", mid, streams)
    _norm(b, pre + "norm", streams.last)
    if "lm_head.weight" in known:
        logits = b.group("logits", vocab, role="output", tokens=True)
        b.dense(b.param("lm_head.weight"), streams.last, logits, et.LINEAR)
    if pre:  # a causal-LM head: outputs are logits, the stream itself is free to permute
        b.permutable(*streams.groups)
    _check_layout(known, pre)
    return b


def sample_llama(rng: random.Random):
    transformers = require_transformers("the Llama example")
    heads = rng.choice([1, 2, 4])
    kv_heads = heads // rng.choice([r for r in (1, 2, 4) if heads % r == 0])
    head_dim = rng.choice([2, 4])
    kind = rng.choice(MODEL_TYPES)
    common = dict(
        # the width must split into heads (transformers checks) and be >= 3 (RMSNorm over 1-2 features
        # hides permutations); head_dim is set on its own and must be even (RoPE rotates pairs)
        vocab_size=rng.randint(3, 11), hidden_size=heads * rng.randint(-(-3 // heads), 3),
        intermediate_size=rng.randint(2, 8), num_hidden_layers=rng.randint(1, 3), num_attention_heads=heads,
        num_key_value_heads=kv_heads, head_dim=head_dim, max_position_embeddings=16,
        tie_word_embeddings=rng.random() < 0.5, attn_implementation="eager",
    )
    if kind == "llama":
        config = transformers.LlamaConfig(**common, attention_bias=rng.random() < 0.3, mlp_bias=rng.random() < 0.3)
        classes = (transformers.LlamaForCausalLM, transformers.LlamaModel)
    elif kind == "mistral":
        config = transformers.MistralConfig(**common)
        classes = (transformers.MistralForCausalLM, transformers.MistralModel)
    else:
        config = transformers.Qwen2Config(**common)
        classes = (transformers.Qwen2ForCausalLM, transformers.Qwen2Model)
    cls = classes[0] if rng.random() < 0.7 else classes[1]
    return cls(config).eval()


def llama_inputs(model, graph, generator: torch.Generator, batch: int) -> dict:
    ids = torch.randint(model.config.vocab_size, (min(batch, 8), 6), generator=generator)
    return {"input_ids": ids, "use_cache": False}


@register(
    "llama",
    model_types=MODEL_TYPES,
    accepts_specs=True,
    example=sample_llama,
    example_inputs=llama_inputs,
    verify_rtol=1e-5,  # Hugging Face RMSNorm computes in float32 even in a float64 model
    description="Hugging Face Llama / Mistral / Qwen2: grouped-query attention, SwiGLU, RMSNorm, RoPE",
)
def convert_llama(source: ModelSource, *, naive: bool = False) -> GraphBuilder:
    """Llama-family decoders; ``naive=True`` stacks W_q, W_k, W_v per unit (multi-head only)."""
    return declare_llama(source, naive=naive)
