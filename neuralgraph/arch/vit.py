"""Vision Transformer as a neural graph: Hugging Face ``ViTModel`` / ``ViTForImageClassification``,
and the same network described by a torchvision-style ``(name, shape)`` list.

Embeddings: the patch embedding is a ``Conv2d`` with kernel = stride = patch size, so it is a
dense block from the input channel nodes to ``stream.0`` whose CONV edges carry the p x p kernel
(``max_feat_size`` becomes p^2). The position embedding ``(1, n + 1, d)`` is a dense block from one
node per position (the [CLS] position first) to ``stream.0``, type POSITION_EMBEDDING.

The [CLS] token ``(1, 1, d)`` is one learned d-vector that the model writes onto ``stream.0`` (at
sequence position 0). It is treated as a 1-D parameter: it gets its own node with a star of
type BIAS to ``stream.0`` (DESIGN §2: type 2 is "bias, and any 1-D param not covered below"),
just as a bias does; it is not a vocabulary token (no ``tokens=True``, ``pos_w`` 0).

Per layer (pre-LayerNorm): ``layernorm_before`` attaches to the layer's input stream; separate
W_q (stream -> query-key units), W_k (query-key units -> stream, transposed direction), W_v
(stream -> value units), one node per head, biases when ``qkv_bias`` (the key bias on the
query-key units, recorded as having no effect — softmax cancels it); the output projection maps
value units to the mid stream with a residual; ``layernorm_after`` attaches to the mid stream;
the MLP (``fc1`` -> hidden units -> ``fc2``) writes the next stream with a residual. The final
``layernorm`` attaches to the last stream. ``ViTModel``'s pooler (dense on [CLS] + tanh) maps the
last stream to pooler units; ``ViTForImageClassification``'s ``classifier`` maps it to logits.

Symmetries declared (each confirmed by :func:`neuralgraph.verify`): units within a head
(query-key and value units separately), whole heads, MLP hidden units, and — only when a
classifier head consumes the stream (``ViTForImageClassification`` with ``num_labels > 0``,
torchvision's ``heads``) — the residual stream of every layer together. ``ViTModel`` returns
``last_hidden_state`` and ``pooler_output``: its stream and its pooler units are fixed. With
``num_labels=0`` the classifier is an identity and the output is the stream itself: fixed too.
torchvision's optional ``heads.pre_logits`` (dense + tanh before the head) gives permutable
hidden units.

Parameter naming schemes read (all give the same graph structure for the same network):

* Hugging Face transformers 5: ``[vit.]embeddings.{cls_token, position_embeddings,
  patch_embeddings.projection}``, ``[vit.]layers.{i}.{layernorm_before, attention.{q,k,v,o}_proj,
  layernorm_after, mlp.fc1, mlp.fc2}``, ``[vit.]layernorm``, ``[vit.]pooler.dense``, ``classifier``;
* Hugging Face transformers 4: ``[vit.]encoder.layer.{i}.{layernorm_before,
  attention.attention.{query,key,value}, attention.output.dense, layernorm_after,
  intermediate.dense, output.dense}``, the rest as above;
* torchvision (shape lists, ``config={"num_heads": H}``): ``conv_proj``, ``class_token``,
  ``encoder.pos_embedding``, ``encoder.layers.encoder_layer_{i}.{ln_1, self_attention.in_proj_weight
  / in_proj_bias`` (fused ``[q; k; v]`` rows), ``self_attention.out_proj, ln_2, mlp.0, mlp.3}``,
  ``encoder.ln``, ``heads.head`` (and ``heads.pre_logits``).

``naive=True`` builds the naive graph (W_q, W_k, W_v stacked as one 3-slot edge, no head nodes).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import torch

from .. import edge_types as et
from ..builder import GraphBuilder
from ..errors import UnsupportedModelError
from ..registry import register
from ..source import ModelSource
from ._hf import require_transformers
from .bert import (
    ParamReader,
    check_leftover,
    check_module_class,
    declare_attention,
    declare_linear,
    declare_norm,
    layer_indices,
    num_heads,
)

log = logging.getLogger(__name__)

SUPPORTED_CLASSES = ("ViTModel", "ViTForImageClassification")
_WHAT = "ViTModel / ViTForImageClassification / torchvision VisionTransformer"


@dataclass(frozen=True)
class _Scheme:
    """Where a naming scheme keeps each part of the network."""

    kind: str  # "hf" | "torchvision"
    pre: str  # model prefix ("vit." or "")
    patch: str
    cls: str
    pos: str
    layers: str  # prefix of numbered layers
    ln1: str
    q: str | None  # separate projections (None: fused in_proj)
    k: str | None
    v: str | None
    fused: str | None
    o: str
    ln2: str
    fc1: str
    fc2: str
    final_ln: str
    pooler: str | None  # HF pooler (an output of ViTModel)
    pre_logits: str | None  # torchvision pre_logits (hidden units before the head)
    head: str


def _scheme(names: list[str]) -> _Scheme:
    if "conv_proj.weight" in names or "class_token" in names:
        return _Scheme(
            "torchvision", "", "conv_proj", "class_token", "encoder.pos_embedding",
            "encoder.layers.encoder_layer_", "ln_1", None, None, None, "self_attention.in_proj",
            "self_attention.out_proj", "ln_2", "mlp.0", "mlp.3", "encoder.ln", None, "heads.pre_logits", "heads.head",
        )
    pre = "vit." if any(n.startswith("vit.") for n in names) else ""
    if any(n.startswith(pre + "encoder.layer.") for n in names):  # transformers 4 names
        layers, attn = pre + "encoder.layer.", ("attention.attention.query", "attention.attention.key",
                                                 "attention.attention.value", "attention.output.dense")
        fc1, fc2 = "intermediate.dense", "output.dense"
    else:
        layers, attn = pre + "layers.", ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj")
        fc1, fc2 = "mlp.fc1", "mlp.fc2"
    e = pre + "embeddings."
    return _Scheme(
        "hf", pre, e + "patch_embeddings.projection", e + "cls_token", e + "position_embeddings", layers,
        "layernorm_before", *attn[:3], None, attn[3], "layernorm_after", fc1, fc2, pre + "layernorm",
        pre + "pooler.dense", None, "classifier",
    )


def declare_vit(source: ModelSource, *, naive: bool = False) -> GraphBuilder:
    check_module_class(source, "vit", SUPPORTED_CLASSES, "ViTPreTrainedModel")
    r = ParamReader(source, "vit")
    names = list(r.order)
    s = _scheme(names)
    if s.kind == "torchvision":
        heads = num_heads(source, "num_heads", "num_attention_heads")
    else:
        heads = num_heads(source, "num_attention_heads", "num_heads")
    b = GraphBuilder(source.params, arch="vit")

    conv = r.get(s.patch + ".weight", (None, None, None, None), what="patch embedding Conv2d")
    width, channels = conv.shape[:2]
    cls = r.get(s.cls, (1, 1, width), what="[CLS] token")
    pos = r.get(s.pos, (1, None, width), what="position embedding")
    channel_nodes = b.group("channels", channels, role="input")
    positions = b.group("positions", pos.shape[1], role="position")
    stream = b.group("stream.0", width, role="stream")
    declare_linear(b, conv, r.opt(s.patch + ".bias", (width,)), channel_nodes, stream, et.CONV)
    b.star(cls[0, 0], b.bias_node(cls.name), stream, et.BIAS)
    b.dense(pos[0].t(), positions, stream, et.POSITION_EMBEDDING)
    streams = [stream]

    def norm(name: str, units) -> None:
        declare_norm(b, r.get(name + ".weight", (units.size,)), r.opt(name + ".bias", (units.size,)), units)

    def linear(name: str, src, dst) -> None:
        declare_linear(b, r.get(name + ".weight", (dst.size, src.size)), r.opt(name + ".bias", (dst.size,)), src, dst)

    for i in layer_indices(names, s.layers, "vit"):
        p = f"{s.layers}{i}."
        x = streams[-1]
        norm(p + s.ln1, x)
        if s.fused is not None:
            w = r.get(p + s.fused + "_weight", (3 * width, width), what="fused [q; k; v] projection")
            bias = r.opt(p + s.fused + "_bias", (3 * width,))
            parts = [slice(j * width, (j + 1) * width) for j in range(3)]
            weights = tuple(w[sl] for sl in parts)
            biases = tuple(bias[sl] for sl in parts) if bias is not None else (None, None, None)
            block_names = tuple(f"{w.name}.{c}" for c in "qkv")
            bias_names = tuple(f"{p}{s.fused}_bias.{c}" for c in "qkv")
        else:
            q = r.get(p + s.q + ".weight", (None, width))
            k = r.get(p + s.k + ".weight", (q.shape[0], width))
            v = r.get(p + s.v + ".weight", (None, width))
            weights = (q, k, v)
            biases = tuple(r.opt(p + n + ".bias", (m.shape[0],)) for n, m in zip((s.q, s.k, s.v), weights))
            block_names = bias_names = None
        values = declare_attention(
            b, p + "attention", x, heads, weights, biases,
            block_names=block_names, bias_names=bias_names, naive=naive, arch="vit",
        )
        mid = b.group(f"stream.{len(streams)}", width, role="stream")
        linear(p + s.o, values, mid)
        b.residual(x, mid)
        streams.append(mid)
        norm(p + s.ln2, mid)
        w1 = r.get(p + s.fc1 + ".weight", (None, width))
        hidden = b.group(p + "mlp", w1.shape[0], role="hidden")
        declare_linear(b, w1, r.opt(p + s.fc1 + ".bias", (hidden.size,)), mid, hidden)
        out = b.group(f"stream.{len(streams)}", width, role="stream")
        linear(p + s.fc2, hidden, out)
        b.residual(mid, out)
        streams.append(out)
        b.permutable(hidden)
    final = streams[-1]
    norm(s.final_ln, final)

    if s.pooler is not None and r.has(s.pooler + ".weight"):
        if s.pre:
            raise UnsupportedModelError(
                f"vit: a pooler ('{s.pooler}.weight') together with a classifier head is not a supported class"
            )
        pw = r.get(s.pooler + ".weight", (None, width))
        pooler = b.group(s.pre + "pooler", pw.shape[0], role="output")  # ViTModel returns pooler_output
        declare_linear(b, pw, r.opt(s.pooler + ".bias", (pooler.size,)), final, pooler)
    head_input = final
    if s.pre_logits is not None and r.has(s.pre_logits + ".weight"):
        pw = r.get(s.pre_logits + ".weight", (None, width))
        pre_logits = b.group(s.pre_logits, pw.shape[0], role="hidden")
        declare_linear(b, pw, r.opt(s.pre_logits + ".bias", (pre_logits.size,)), final, pre_logits)
        if not r.has(s.head + ".weight"):
            raise UnsupportedModelError(f"vit: '{s.pre_logits}.weight' without '{s.head}.weight'")
        b.permutable(pre_logits)
        head_input = pre_logits
    has_head = r.has(s.head + ".weight")
    if has_head:
        if s.kind == "hf" and not s.pre:
            raise UnsupportedModelError(
                f"vit: '{s.head}.weight' needs the encoder under 'vit.' (ViTForImageClassification)"
            )
        hw = r.get(s.head + ".weight", (None, head_input.size))
        logits = b.group("logits", hw.shape[0], role="output")
        declare_linear(b, hw, r.opt(s.head + ".bias", (logits.size,)), head_input, logits)
    check_leftover(r, _WHAT)
    if has_head:  # the outputs are logits, not the stream
        b.permutable(*streams)
    b.meta["vit_scheme"] = s.kind
    log.debug("vit (%s names): %d layers, %d heads, classifier: %s", s.kind, (len(streams) - 1) // 2, heads, has_head)
    return b


def sample_vit(rng: random.Random):
    transformers = require_transformers("the ViT example")
    heads = rng.randint(1, 4)
    # LayerNorm over one feature is constant and over two a sign function: keep the width >= 3
    head_size = rng.randint(max(1, -(-3 // heads)), 3)
    patch = rng.randint(1, 3)
    extra = {}
    if rng.random() < 0.2:  # query-key/value width other than the stream width
        extra["head_dim"] = rng.randint(1, 3)
    if rng.random() < 0.3:
        extra["pooler_output_size"] = rng.randint(2, 6)
    config = transformers.ViTConfig(
        hidden_size=heads * head_size, num_hidden_layers=rng.randint(1, 3), num_attention_heads=heads,
        intermediate_size=rng.randint(2, 9), image_size=patch * rng.randint(1, 2), patch_size=patch,
        num_channels=rng.randint(1, 3), qkv_bias=rng.random() < 0.7, num_labels=rng.choice([0, 1, 2, 3, 4, 4]),
        attn_implementation="eager", **extra,
    )
    if rng.random() < 0.6:
        model = transformers.ViTForImageClassification(config)
    else:
        model = transformers.ViTModel(config, add_pooling_layer=rng.random() < 0.7)
    return model.eval()


def vit_inputs(model, graph, generator: torch.Generator, batch: int) -> dict:
    config = model.config
    size = config.image_size
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    pixels = torch.randn(min(batch, 8), config.num_channels, *size, generator=generator, dtype=torch.float64)
    return {"pixel_values": pixels, "return_dict": False}


@register(
    "vit",
    model_types=("vit",),
    accepts_specs=True,
    example=sample_vit,
    example_inputs=vit_inputs,
    description="Vision Transformer (HF ViTModel, ViTForImageClassification; torchvision names): "
    "pre-LayerNorm, head nodes",
)
def convert_vit(source: ModelSource, *, naive: bool = False) -> GraphBuilder:
    """Vision Transformer; ``naive=True`` stacks W_q, W_k, W_v into one 3-d edge, no head nodes."""
    return declare_vit(source, naive=naive)
