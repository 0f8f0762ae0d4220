"""BERT (Hugging Face ``BertModel``, ``BertForMaskedLM``, ``BertForSequenceClassification``) as a
neural graph.

Embeddings: the word embedding (vocabulary token nodes, ``tokens=True``), the position embedding
(position nodes) and the token-type embedding (one node per segment type, type TOKEN_EMBEDDING)
all write into ``stream.0``; the embeddings LayerNorm attaches to ``stream.0``.

Per layer (post-LayerNorm): separate ``query`` / ``key`` / ``value`` ``nn.Linear`` (stored (out, in))
give W_q (stream -> query-key units), W_k (query-key units -> stream, the transposed direction) and
W_v (stream -> value units); one node per head joins that head's query-key and value units; the
query and key biases act on the query-key units (the key bias is recorded as having no effect:
it adds ``q . b_k`` to every score of a query, which the softmax cancels), the value bias on the
value units. ``attention.output.dense`` maps the value units to the next stream, with a residual
from the layer's input stream; the LayerNorm that follows the add attaches to that stream (the
stream *after* the add, i.e. the units it normalizes). The feed-forward block (``intermediate``
-> ``output.dense``) reads that stream and writes the next one, again with a residual and a
LayerNorm on the stream after the add.

Heads: the pooler (dense on the [CLS] position + tanh) maps the final stream to pooler units;
``BertForSequenceClassification``'s ``classifier`` maps those to logits. ``BertForMaskedLM``'s
prediction head: ``transform.dense`` (final stream -> transform units), its LayerNorm on the
transform units, and the decoder to output token nodes (``logits``, ``tokens=True``).

* Tied decoder (the default): the decoder weight *is* the word embedding, which already sits on
  the token -> ``stream.0`` edges and is not repeated (every parameter value lies on exactly one
  edge). Transform unit ``i`` is read through column ``i`` of that embedding, i.e. it stands where
  ``stream.0`` unit ``i`` stands. A fixed identity edge (type RESIDUAL, the vocabulary's identity
  connection) from transform unit ``i`` to ``stream.0`` unit ``i`` says so; without it the graph
  would claim that the transform units can be permuted on their own, which changes the logits.
  The output bias ``cls.predictions.bias`` acts on the output token nodes.
* Untied decoder: ``cls.predictions.decoder.weight`` goes transform units -> output token nodes
  and ``cls.predictions.decoder.bias`` acts on them. ``cls.predictions.bias`` is then a separate
  parameter that the forward pass never reads; it is placed on the output token nodes too and
  recorded as having no effect.

Symmetries declared (each confirmed by :func:`neuralgraph.verify`): units within a head
(query-key and value units separately), whole heads, feed-forward hidden units, and:

* the residual stream of every layer together — only when the model's output is not the stream:
  ``BertForSequenceClassification`` (output: logits) and ``BertForMaskedLM`` (output: logits; with a
  tied decoder the transform units move with the stream). ``BertModel`` returns
  ``last_hidden_state``, so its stream is fixed;
* the pooler units — only in ``BertForSequenceClassification``, where the classifier reads them;
  ``BertModel`` returns ``pooler_output``, so there they are fixed output units;
* the transform units of an untied ``BertForMaskedLM``.

``naive=True`` builds the naive graph: W_q, W_k, W_v of a unit stacked as one 3-slot edge (the
three biases likewise), no head nodes. Shape lists are accepted with
``arch="bert", config={"num_attention_heads": H}``.

The attention helpers here are shared with the ViT converter.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import torch

from .. import edge_types as et
from ..builder import GraphBuilder
from ..errors import ParameterMismatchError, UnsupportedModelError
from ..groups import NodeGroup
from ..inputs import batch_within
from ..params import ParamView
from ..registry import register
from ..source import ModelSource
from ._hf import config_value, require_transformers
from ._stream import Streams

log = logging.getLogger(__name__)

SUPPORTED_CLASSES = ("BertModel", "BertForMaskedLM", "BertForSequenceClassification")


# ---------------------------------------------------------------------------- shared helpers
class ParamReader:
    """Looks parameters up by name for a converter, checks their shapes, and remembers which
    were used so that anything left over can be reported by name."""

    def __init__(self, source: ModelSource, arch: str) -> None:
        self.arch = arch
        self.specs = {p.name: p for p in source.params}
        self.order = [p.name for p in source.params]
        self.used: set[str] = set()

    def has(self, name: str) -> bool:
        return name in self.specs

    def get(self, name: str, shape: Sequence[int | None] | None = None, *, what: str = "") -> ParamView:
        """The parameter ``name`` as a view; ``shape`` (``None`` entries are free) is checked."""
        spec = self.specs.get(name)
        if spec is None:
            role = f" ({what})" if what else ""
            raise ParameterMismatchError(f"{self.arch}: the model has no parameter '{name}'{role}")
        if shape is not None and (
            len(spec.shape) != len(shape) or any(w is not None and w != s for w, s in zip(shape, spec.shape))
        ):
            want = "(" + ", ".join("*" if w is None else str(w) for w in shape) + ")"
            raise ParameterMismatchError(
                f"{self.arch}: parameter '{name}' has shape {spec.shape}, expected {want}"
            )
        self.used.add(name)
        return spec.view()

    def opt(self, name: str, shape: Sequence[int | None] | None = None) -> ParamView | None:
        return self.get(name, shape) if name in self.specs else None

    def leftover(self) -> list[str]:
        return [n for n in self.order if n not in self.used]


def layer_indices(names: Sequence[str], prefix: str, arch: str) -> list[int]:
    """Sorted layer numbers ``i`` of names ``prefix + f"{i}." + ...``; they must run 0..L-1."""
    found = set()
    for n in names:
        if n.startswith(prefix):
            head = n[len(prefix) :].split(".", 1)[0]
            if not head.isdigit():
                raise UnsupportedModelError(f"{arch}: parameter '{n}' does not belong to a numbered layer")
            found.add(int(head))
    layers = sorted(found)
    if layers != list(range(len(layers))):
        missing = min(set(range(max(layers) + 1)) - found)
        raise ParameterMismatchError(f"{arch}: layer {missing} ('{prefix}{missing}.*') is missing")
    return layers


def declare_norm(b: GraphBuilder, weight: ParamView, bias: ParamView | None, units: NodeGroup) -> None:
    """A LayerNorm attached to the units it normalizes: scale and shift from their own nodes."""
    b.star(weight, b.bias_node(weight.name), units, et.NORM)
    if bias is not None:
        b.star(bias, b.bias_node(bias.name), units, et.BIAS)


def declare_linear(
    b: GraphBuilder, weight: ParamView, bias: ParamView | None, src, dst, edge_type: int = et.LINEAR
) -> None:
    """An ``nn.Linear`` (weight stored (out, in)) from ``src`` to ``dst``, bias on ``dst``."""
    b.dense(weight, src, dst, edge_type)
    if bias is not None:
        b.star(bias, b.bias_node(bias.name), dst, et.BIAS)


def declare_attention(
    b: GraphBuilder,
    name: str,
    x: NodeGroup,
    heads: int,
    weights: tuple[ParamView, ParamView, ParamView],
    biases: tuple[ParamView | None, ParamView | None, ParamView | None],
    *,
    block_names: tuple[str, str, str] | None = None,
    bias_names: tuple[str, str, str] | None = None,
    naive: bool = False,
    arch: str = "attention",
) -> NodeGroup:
    """Self-attention reading stream ``x``; returns the value units (the input of W_o).

    ``weights`` are W_q, W_k, W_v as (out, in) views — (units, width); ``biases`` their biases
    (or None). ``block_names`` / ``bias_names`` name the three weight blocks and the three bias
    blocks and nodes (default: the views' names; give distinct names when the three are slices
    of one fused parameter).
    """
    q, k, v = weights
    names = block_names or (q.name, k.name, v.name)
    bnames = bias_names or tuple(bias.name if bias is not None else "" for bias in biases)
    units = q.shape[0]
    if k.shape != q.shape:
        raise ParameterMismatchError(f"{arch}: key weight {k.shape} and query weight {q.shape} differ in shape")
    if units % heads or v.shape[0] % heads:
        raise UnsupportedModelError(
            f"{arch}: {name}: {units} query-key / {v.shape[0]} value units do not split into {heads} heads"
        )
    if naive:
        if v.shape != q.shape:
            raise UnsupportedModelError(f"{arch}: {name}: the naive graph needs W_q, W_k, W_v of one shape")
        qkv = b.group(f"{name}.qkv", units, role="value")
        b.dense([q, k, v], x, qkv, et.LINEAR, name=f"{name}.qkv")
        present = [bias is not None for bias in biases]
        if any(present):
            if not all(present):
                raise UnsupportedModelError(
                    f"{arch}: {name}: the naive graph stacks the q, k, v biases; some of them are missing"
                )
            node = b.bias_node(f"{name}.qkv.bias")
            blk = b.star(list(biases), node, qkv, et.BIAS, name=f"{name}.qkv.bias")
            b.without_effect(blk, "a key bias adds q.b_k to every score of a query: softmax cancels it", slot=1)
        b.permutable(qkv, segments=heads)
        return qkv
    head_nodes = b.group(f"{name}.heads", heads, role="head")
    qk = b.group(f"{name}.qk", units, role="query_key")
    values = b.group(f"{name}.v", v.shape[0], role="value")
    b.dense(q, x, qk, et.ATTN_QUERY, name=names[0])
    b.dense(k.t(), qk, x, et.ATTN_KEY, name=names[1])
    b.dense(v, x, values, et.ATTN_VALUE, name=names[2])
    b.head_membership(head_nodes, name + ".", qk=qk, v=values)
    for part, bias, dst, block in zip("qkv", biases, (qk, qk, values), bnames):
        if bias is None:
            continue
        blk = b.star(bias, b.bias_node(block), dst, et.BIAS, name=block)
        if part == "k":
            b.without_effect(blk, "a key bias adds q.b_k to every score of a query: softmax cancels it")
    b.permutable_heads(head_nodes, qk, values)
    b.permutable(qk, segments=heads)
    b.permutable(values, segments=heads)
    return values


def check_leftover(reader: ParamReader, what: str) -> None:
    rest = reader.leftover()
    if rest:
        raise UnsupportedModelError(f"{reader.arch}: parameter '{rest[0]}' is not part of {what}")


def check_module_class(source: ModelSource, arch: str, supported: Sequence[str], base: str) -> None:
    """Refuse Hugging Face classes of this family other than ``supported`` (by name, with
    subclasses of a supported class accepted)."""
    module = source.module
    if module is None:
        return
    mro = [c.__name__ for c in type(module).__mro__]
    if base in mro and not any(name in supported for name in mro):
        raise UnsupportedModelError(
            f"{arch}: {type(module).__name__} is not supported (supported: {', '.join(supported)})"
        )


def num_heads(source: ModelSource, *names: str) -> int:
    heads = int(config_value(source.config, *names, what="number of attention heads"))
    if heads < 1:
        raise UnsupportedModelError(f"the number of attention heads must be positive, got {heads}")
    return heads


# ---------------------------------------------------------------------------- BERT
def _norm(b: GraphBuilder, r: ParamReader, name: str, units: NodeGroup) -> None:
    declare_norm(b, r.get(name + ".weight", (units.size,)), r.opt(name + ".bias", (units.size,)), units)


def _linear(b: GraphBuilder, r: ParamReader, name: str, src: NodeGroup, dst: NodeGroup) -> None:
    declare_linear(b, r.get(name + ".weight", (dst.size, src.size)), r.opt(name + ".bias", (dst.size,)), src, dst)


def _bert_embeddings(b: GraphBuilder, r: ParamReader, e: str) -> tuple[int, Streams]:
    """Word, position and token-type embeddings into ``stream.0``, then their LayerNorm; returns
    the vocabulary size and the stream."""
    wte = r.get(e + "word_embeddings.weight", (None, None), what="word embedding")
    vocab, width = wte.shape
    wpe = r.get(e + "position_embeddings.weight", (None, width))
    tte = r.get(e + "token_type_embeddings.weight", (None, width))
    for view in (wte, wpe, tte):
        if view.shape[0] < 1:
            raise UnsupportedModelError(f"bert: embedding '{view.name}' has no rows")
    tokens = b.group("tokens", vocab, role="token", tokens=True)
    positions = b.group("positions", wpe.shape[0], role="position")
    token_types = b.group("token_types", tte.shape[0], role="token")
    streams = Streams(b, width)
    b.dense(wte.t(), tokens, streams.last, et.TOKEN_EMBEDDING)
    b.dense(wpe.t(), positions, streams.last, et.POSITION_EMBEDDING)
    b.dense(tte.t(), token_types, streams.last, et.TOKEN_EMBEDDING)
    _norm(b, r, e + "LayerNorm", streams.last)
    return vocab, streams


def _bert_attention_block(b: GraphBuilder, r: ParamReader, p: str, streams: Streams, heads: int, naive: bool) -> None:
    """Self-attention on the last stream, output projection and residual into a new stream, LayerNorm."""
    a = p + "attention.self."
    x, width = streams.last, streams.width
    q = r.get(a + "query.weight", (None, width))
    units = q.shape[0]
    k = r.get(a + "key.weight", (units, width))
    v = r.get(a + "value.weight", (None, width))
    biases = tuple(r.opt(a + n + ".bias", (m.shape[0],)) for n, m in zip(("query", "key", "value"), (q, k, v)))
    values = declare_attention(b, p + "attention", x, heads, (q, k, v), biases, naive=naive, arch="bert")
    mid = streams.new()
    _linear(b, r, p + "attention.output.dense", values, mid)
    b.residual(x, mid)
    _norm(b, r, p + "attention.output.LayerNorm", mid)


def _bert_feed_forward(b: GraphBuilder, r: ParamReader, p: str, streams: Streams) -> None:
    """``intermediate`` -> hidden units -> ``output.dense`` into a new stream, residual, LayerNorm."""
    mid = streams.last
    w1 = r.get(p + "intermediate.dense.weight", (None, streams.width))
    hidden = b.group(p + "intermediate", w1.shape[0], role="hidden")
    declare_linear(b, w1, r.opt(p + "intermediate.dense.bias", (hidden.size,)), mid, hidden)
    out = streams.new()
    _linear(b, r, p + "output.dense", hidden, out)
    b.residual(mid, out)
    _norm(b, r, p + "output.LayerNorm", out)
    b.permutable(hidden)


def _bert_head_kinds(r: ParamReader, pre: str) -> tuple[bool, bool]:
    """Whether the model has a sequence classifier and whether it has a masked-LM head."""
    classifier = "classifier.weight" in r.specs
    mlm = "cls.predictions.transform.dense.weight" in r.specs
    if pre and not (classifier or mlm):
        extra = next((n for n in r.order if not n.startswith(pre)), None)
        raise UnsupportedModelError(
            "bert: parameters under 'bert.' but no classifier or masked-LM head"
            + (f" (found '{extra}')" if extra else "")
            + f"; supported: {', '.join(SUPPORTED_CLASSES)}"
        )
    if not pre and (classifier or mlm):
        raise UnsupportedModelError("bert: a classifier or masked-LM head needs the encoder under 'bert.'")
    return classifier, mlm


def _bert_pooler(b: GraphBuilder, r: ParamReader, pre: str, final: NodeGroup, classifier: bool) -> str | None:
    """The pooler (an output of ``BertModel``) and the classifier that reads it; returns
    ``"classifier"`` when there is one."""
    if r.has(pre + "pooler.dense.weight"):
        pw = r.get(pre + "pooler.dense.weight", (None, final.size))
        pooler = b.group(pre + "pooler", pw.shape[0], role="hidden" if classifier else "output")
        declare_linear(b, pw, r.opt(pre + "pooler.dense.bias", (pooler.size,)), final, pooler)
        if classifier:
            cw = r.get("classifier.weight", (None, pooler.size))
            logits = b.group("logits", cw.shape[0], role="output")
            declare_linear(b, cw, r.opt("classifier.bias", (logits.size,)), pooler, logits)
            b.permutable(pooler)
            return "classifier"
    elif classifier:
        raise UnsupportedModelError(
            "bert: 'classifier.weight' without a pooler reads every position of the stream "
            "(BertForTokenClassification), which is not supported; supported: " + ", ".join(SUPPORTED_CLASSES)
        )
    return None


def _bert_mlm_head(b: GraphBuilder, r: ParamReader, streams: Streams, vocab: int) -> list[NodeGroup]:
    """The masked-LM prediction head; returns the groups that move with the stream (the transform
    units of a tied decoder)."""
    c, width = "cls.predictions.", streams.width
    tw = r.get(c + "transform.dense.weight", (None, width))
    transform = b.group(c + "transform", tw.shape[0], role="hidden")
    declare_linear(b, tw, r.opt(c + "transform.dense.bias", (transform.size,)), streams.last, transform)
    _norm(b, r, c + "transform.LayerNorm", transform)
    logits = b.group("logits", vocab, role="output", tokens=True)
    if r.has(c + "decoder.weight"):  # untied decoder
        _linear(b, r, c + "decoder", transform, logits)
        unused = r.opt(c + "bias", (vocab,))
        if unused is not None:
            blk = b.star(unused, b.bias_node(unused.name), logits, et.BIAS)
            b.without_effect(blk, "with an untied decoder the forward pass reads decoder.bias, not this one")
        b.permutable(transform)
        return []
    # decoder tied to the word embedding
    if transform.size != width:
        raise ParameterMismatchError(
            f"bert: a decoder tied to the word embedding needs {width} transform units, got {transform.size}"
        )
    b.diagonal(transform, streams.groups[0], et.RESIDUAL, name=c + "decoder.tied")
    bias = r.opt(c + "bias", (vocab,))
    if bias is None:
        bias = r.opt(c + "decoder.bias", (vocab,))
    if bias is not None:
        b.star(bias, b.bias_node(bias.name), logits, et.BIAS)
    return [transform]


def declare_bert(source: ModelSource, *, naive: bool = False) -> GraphBuilder:
    check_module_class(source, "bert", SUPPORTED_CLASSES, "BertPreTrainedModel")
    r = ParamReader(source, "bert")
    pre = "bert." if any(n.startswith("bert.") for n in r.order) else ""
    heads = num_heads(source, "num_attention_heads", "num_heads")
    b = GraphBuilder(source.params, arch="bert")
    vocab, streams = _bert_embeddings(b, r, pre + "embeddings.")
    for i in layer_indices(list(r.order), pre + "encoder.layer.", "bert"):
        _bert_attention_block(b, r, f"{pre}encoder.layer.{i}.", streams, heads, naive)
        _bert_feed_forward(b, r, f"{pre}encoder.layer.{i}.", streams)

    classifier, mlm = _bert_head_kinds(r, pre)
    head = _bert_pooler(b, r, pre, streams.last, classifier)
    stream_group = list(streams.groups)  # what moves with the residual stream, when it may move
    if mlm:
        if classifier:
            raise UnsupportedModelError("bert: both a classifier and a masked-LM head: not a supported class")
        stream_group += _bert_mlm_head(b, r, streams, vocab)
        head = "masked-LM head"
    check_leftover(r, ", ".join(SUPPORTED_CLASSES))
    if head is not None:  # the outputs are logits, not the stream
        b.permutable(*stream_group)
    b.meta["bert_head"] = head or "none"
    log.debug("bert: %d layers, %d heads, head: %s", (len(streams.groups) - 1) // 2, heads, head or "none")
    return b


def sample_bert(rng: random.Random):
    transformers = require_transformers("the BERT example")
    heads = rng.randint(1, 4)
    # LayerNorm over one feature is constant and over two a sign function: keep the width >= 3
    head_size = rng.randint(max(1, -(-3 // heads)), 3)
    kind = rng.choice(["model", "model", "mlm", "mlm", "seq"])
    config = transformers.BertConfig(
        hidden_size=heads * head_size, num_hidden_layers=rng.randint(1, 3), num_attention_heads=heads,
        intermediate_size=rng.randint(2, 9), vocab_size=rng.randint(3, 11), max_position_embeddings=rng.randint(2, 6),
        type_vocab_size=rng.randint(1, 3), pad_token_id=0, num_labels=rng.randint(1, 4),
        tie_word_embeddings=rng.random() < 0.7, is_decoder=kind != "seq" and rng.random() < 0.2,
        attn_implementation="eager",
    )
    if kind == "model":
        model = transformers.BertModel(config, add_pooling_layer=rng.random() < 0.7)
    elif kind == "mlm":
        model = transformers.BertForMaskedLM(config)
    else:
        model = transformers.BertForSequenceClassification(config)
    return model.eval()


def bert_inputs(model, graph, generator: torch.Generator, batch: int) -> dict:
    config = model.config
    shape = (batch_within(batch, config.max_position_embeddings * config.vocab_size), config.max_position_embeddings)
    return {
        "input_ids": torch.randint(config.vocab_size, shape, generator=generator),
        "token_type_ids": torch.randint(config.type_vocab_size, shape, generator=generator),
        "return_dict": False,
        "use_cache": False,
    }


@register(
    "bert",
    model_types=("bert",),
    accepts_specs=True,
    example=sample_bert,
    example_inputs=bert_inputs,
    description="Hugging Face BERT (BertModel, BertForMaskedLM, BertForSequenceClassification): "
    "post-LayerNorm, head nodes",
)
def convert_bert(source: ModelSource, *, naive: bool = False) -> GraphBuilder:
    """Hugging Face BERT; ``naive=True`` stacks W_q, W_k, W_v into one 3-d edge, no head nodes."""
    return declare_bert(source, naive=naive)
