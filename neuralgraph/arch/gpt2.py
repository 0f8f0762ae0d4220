"""GPT-2 (Hugging Face ``GPT2Model`` / ``GPT2LMHeadModel``) as a neural graph.

Per block (pre-LayerNorm): ``ln_1`` attaches to the block's input stream; the fused ``c_attn``
(a ``Conv1D``, stored (in, out)) splits into W_q (stream -> query-key units), W_k (query-key
units -> stream, the transposed direction) and W_v (stream -> value units); one node per head
joins that head's query-key and value units; ``c_proj`` maps value units to the next stream,
with a residual from the input stream. The MLP reads the mid stream after ``ln_2``.

Deliberate difference from the NiNo authors' graph: their K bias edges land on the input stream;
here they land on the query-key units, whose values they shift — otherwise permuting units within
a head would move the query bias but not the key bias, and the graph would claim an asymmetry the
function does not have. Everything else matches ``graph_gpt2_e6.pt`` edge for edge.

Symmetries declared: units within a head (query-key and value units separately), whole heads,
MLP hidden units, and — for language-model heads, whose output is logits, not the stream — the
residual stream of every block together.
"""

from __future__ import annotations

import random

import torch

from .. import edge_types as et
from ..builder import GraphBuilder
from ..errors import UnsupportedModelError
from ..inputs import batch_within
from ..params import ParamView
from ..registry import register
from ..source import ModelSource
from ._hf import config_value, require_transformers


def _prefix(source: ModelSource) -> str:
    return "transformer." if any(p.name.startswith("transformer.") for p in source.params) else ""


def declare_gpt2(source: ModelSource, *, naive: bool = False) -> GraphBuilder:
    b = GraphBuilder(source.params, arch="gpt2")
    pre = _prefix(source)
    heads = int(config_value(source.config, "n_head", "num_attention_heads", what="number of attention heads"))
    known = {p.name for p in source.params}
    layers = sorted({int(n[len(pre) + 2 :].split(".")[0]) for n in known if n.startswith(pre + "h.")})
    wte = b.param(pre + "wte.weight")
    vocab, width = wte.shape
    if width % heads:
        raise UnsupportedModelError(f"gpt2: width {width} does not split into {heads} heads")
    tokens = b.group("tokens", vocab, role="token", tokens=True)
    wpe = b.param(pre + "wpe.weight")
    positions = b.group("positions", wpe.shape[0], role="position")
    stream = b.group("stream.0", width, role="stream")
    b.dense(wte.t(), tokens, stream, et.TOKEN_EMBEDDING)
    b.dense(wpe.t(), positions, stream, et.POSITION_EMBEDDING)
    streams = [stream]

    def norm(name: str, units) -> None:
        b.star(b.param(name + ".weight"), b.bias_node(name + ".weight"), units, et.NORM)
        if pre + name.removeprefix(pre) + ".bias" in known:
            b.star(b.param(name + ".bias"), b.bias_node(name + ".bias"), units, et.BIAS)

    def linear(name: str, src, dst, edge_type=et.LINEAR) -> None:  # Conv1D: stored (in, out)
        b.dense(b.param(name + ".weight").t(), src, dst, edge_type)
        if name + ".bias" in known:
            b.star(b.param(name + ".bias"), b.bias_node(name + ".bias"), dst, et.BIAS)

    for i in layers:
        p = f"{pre}h.{i}."
        x = streams[-1]
        norm(p + "ln_1", x)
        w = b.param(p + "attn.c_attn.weight")  # (width, 3 * width), (in, out)
        bias = b.param(p + "attn.c_attn.bias") if p + "attn.c_attn.bias" in known else None
        if naive:
            units = b.group(p + "attn.qkv", width, role="value")
            # element (stream i, unit j, slot s) of the (in, out=[q|k|v]) weight is w[i, s * width + j]
            qkv = ParamView(w.name, w.offset, (width, width, 3), (w.strides[1], w.strides[0], width * w.strides[1]))
            b.dense(qkv, x, units, et.LINEAR, name=p + "attn.c_attn.qkv")
            if bias is not None:
                stacked = ParamView(bias.name, bias.offset, (width, 3), (1, width))
                b.star(stacked, b.bias_node(p + "attn.c_attn.bias"), units, et.BIAS, name=p + "attn.c_attn.qkv.bias")
            b.permutable(units, segments=heads)
            values = units
        else:
            head_nodes = b.group(p + "attn.heads", heads, role="head")
            qk = b.group(p + "attn.qk", width, role="query_key")
            values = b.group(p + "attn.v", width, role="value")
            b.dense(w[:, :width].t(), x, qk, et.ATTN_QUERY, name=p + "attn.c_attn.q")
            b.dense(w[:, width : 2 * width], qk, x, et.ATTN_KEY, name=p + "attn.c_attn.k")
            b.dense(w[:, 2 * width :].t(), x, values, et.ATTN_VALUE, name=p + "attn.c_attn.v")
            b.head_membership(head_nodes, p + "attn.", qk=qk, v=values)
            if bias is not None:
                for part, units, lo in (("q", qk, 0), ("k", qk, width), ("v", values, 2 * width)):
                    node = b.bias_node(f"{p}attn.c_attn.bias.{part}")
                    blk = b.star(bias[lo : lo + width], node, units, et.BIAS, name=f"{p}attn.c_attn.{part}.bias")
                    if part == "k":
                        b.without_effect(blk, "a key bias adds q.b_k to every score of a query: softmax cancels it")
            b.permutable_heads(head_nodes, qk, values)
            b.permutable(qk, segments=heads)
            b.permutable(values, segments=heads)
        mid = b.group(f"stream.{len(streams)}", width, role="stream")
        linear(p + "attn.c_proj", values, mid)
        b.residual(x, mid)
        streams.append(mid)
        norm(p + "ln_2", mid)
        hidden = b.group(p + "mlp", b.param(p + "mlp.c_fc.weight").shape[1], role="hidden")
        linear(p + "mlp.c_fc", mid, hidden)
        out = b.group(f"stream.{len(streams)}", width, role="stream")
        linear(p + "mlp.c_proj", hidden, out)
        b.residual(mid, out)
        streams.append(out)
        b.permutable(hidden)
    norm(pre + "ln_f", streams[-1])
    has_head = bool(pre)
    if "lm_head.weight" in known:  # untied head
        logits = b.group("logits", vocab, role="output", tokens=True)
        b.dense(b.param("lm_head.weight"), streams[-1], logits, et.LINEAR)
    if has_head:
        b.permutable(*streams)
    placed = {pre + n for n in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias")} | {"lm_head.weight"}
    for name in known:
        if not (name in placed or name.startswith(pre + "h.")):
            raise UnsupportedModelError(f"gpt2: parameter '{name}' is not part of GPT2Model / GPT2LMHeadModel")
    return b


def sample_gpt2(rng: random.Random):
    transformers = require_transformers("the GPT-2 example")
    heads = rng.randint(1, 4)
    # LayerNorm over one feature is constant and over two a sign function: keep the width >= 3
    head_size = rng.randint(max(1, -(-3 // heads)), 3)
    config = transformers.GPT2Config(
        n_embd=heads * head_size, n_layer=rng.randint(1, 3), n_head=heads,
        vocab_size=rng.randint(3, 11), n_positions=rng.randint(2, 6), n_inner=rng.choice([None, rng.randint(2, 9)]),
        tie_word_embeddings=rng.random() < 0.7, attn_implementation="eager",
    )
    cls = transformers.GPT2LMHeadModel if rng.random() < 0.7 else transformers.GPT2Model
    return cls(config).eval()


def gpt2_inputs(model, graph, generator: torch.Generator, batch: int) -> dict:
    config = model.config
    rows = batch_within(batch, config.n_positions * config.vocab_size)
    ids = torch.randint(config.vocab_size, (rows, config.n_positions), generator=generator)
    return {"input_ids": ids, "use_cache": False}


@register(
    "gpt2",
    model_types=("gpt2",),
    accepts_specs=True,
    example=sample_gpt2,
    example_inputs=gpt2_inputs,
    description="Hugging Face GPT-2 (GPT2Model, GPT2LMHeadModel): per-head query-key/value units, head nodes",
)
def convert_gpt2(source: ModelSource, *, naive: bool = False) -> GraphBuilder:
    """Hugging Face GPT-2; ``naive=True`` stacks W_q, W_k, W_v into one 3-d edge, no head nodes."""
    return declare_gpt2(source, naive=naive)
