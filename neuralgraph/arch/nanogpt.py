"""nanoGPT (Karpathy) and the modded-nanogpt speedrun as neural graphs.

Both read a live model (:mod:`neuralgraph.models.nanogpt`, :mod:`neuralgraph.models.modded_nanogpt`,
or any module with the same parameter names) or a ``(name, shape)`` list with
``arch="nanogpt"`` / ``arch="modded_nanogpt"`` and ``config={"n_head": H}``.

**nanoGPT** (``"nanogpt"``) is GPT-2 with ``nn.Linear`` weights stored (out, in): the fused
``c_attn`` weight's rows are ``[W_q; W_k; W_v]``. The graph is the GPT-2 graph
(:mod:`neuralgraph.arch.gpt2`): W_q stream -> query-key units, W_k query-key units -> stream,
W_v stream -> value units, one node per head, key biases on the query-key units (declared without
effect: softmax cancels them), LayerNorm scales and biases as bias nodes, residuals as diagonal
blocks. ``lm_head`` is tied to ``wte``, so there is no output group and the residual stream is
free to permute (an untied ``lm_head.weight`` in a shape list gets a ``logits`` group). Declared:
query-key and value units within heads, whole heads, MLP hidden units, the stream.

**modded-nanogpt** (``"modded_nanogpt"``), per block ``i``:

* *Scalars* (``blocks.{i}.lambdas``, ``blocks.{i}.attn.lambdas``, ``skip_weights``): a scalar
  scales a whole connection, so it gets a *gate* node. Like any 1-D parameter, the tensor has one
  node (role ``bias``) with a star of type-2 (bias) edges carrying its values, one edge to each of
  its gate nodes. A gate is wired to the connection it scales with auxiliary type-10 (residual)
  edges: every unit of the source to the gate, the gate to every unit of the target; identity
  paths also keep their unit-to-unit diagonal. Where both sources of ``x = l0 * x + l1 * x0``
  are the same stream (block 0), the two gates are twins, as ``l0`` and ``l1`` are for the
  function. ``attn.lambdas[1]`` of a block without value embedding gates nothing (as in the model).
* *U-net*: a decoder block starts with a new stream: residual from the previous stream, plus the
  encoder output gated by its ``skip_weights`` entry.
* *Attention*: ``qkv_w[0]`` stream -> query-key units (type 7), ``qkv_w[1]`` query-key units ->
  stream (type 8), ``qkv_w[2]`` stream -> value units (type 9), one node per head (type 11).
  RoPE: per block a ``rotary`` group (role ``position``) with one node per rotating pair
  frequency; in every head, node ``j`` has a type-11 edge to dimension ``j`` (the pair's first
  member) and one from dimension ``j + head_dim/2`` (its second member: the opposite direction,
  as swapping the two members reverses the rotation), and the nodes form a chain
  (``j -> j+1``, type 11) in order of decreasing frequency, so no two of them are alike.
  Rotating dimensions of a head are thereby told apart, as RoPE tells them apart; the unrotated
  dimensions of half-truncated RoPE stay twins, as they are for the function.
  ``attn.lambdas[0]`` gates stream -> value units, ``attn.lambdas[1]`` value embedding -> value
  units.
* *Value embeddings*: ``value_embeds.{j}`` is a group of units (role ``value``) fed by the token
  nodes (type 5) and joined unit by unit (diagonal) to the value units of every block that uses it.
  Sharing couples those blocks: their value units and their heads only move together (with the
  embedding's units), and the graph declares them so.

Declared for modded-nanogpt: whole heads (coupled through shared value embeddings), value units
within heads (coupled likewise), MLP hidden units, the residual stream. Not declared: query-key
dimensions within a head — RoPE forbids moving rotating ones; the unrotated ones of half-truncated
RoPE *may* move among themselves (both halves of a head), and the graph keeps them twins, but a
``Permutable`` cannot name a subset of a head (the test suite checks this symmetry by hand).

``naive=True``: one unit per dimension with ``[W_q, W_k, W_v]`` stacked on one 3-d edge, no head
nodes (and for modded-nanogpt no rotary nodes). nanoGPT declares units within heads; modded-nanogpt
declares no attention symmetry (RoPE moves query-key dimensions with their unit).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .. import edge_types as et
from ..builder import GraphBuilder
from ..errors import ParameterMismatchError, UnsupportedModelError
from ..groups import NodeGroup
from ..models import modded_nanogpt as modded_model
from ..models import nanogpt as nanogpt_model
from ..params import ParamView
from ..registry import register
from ..source import ModelSource
from ._hf import config_value
from ._stream import Streams

__all__ = ["declare_nanogpt", "declare_modded_nanogpt", "sample_nanogpt", "sample_modded_nanogpt"]


def _config(config: Any, name: str, default: Any) -> Any:
    """An optional setting of a config object or dict (``default`` when absent or None)."""
    value = config.get(name) if isinstance(config, dict) else getattr(config, name, None)
    return default if value is None else value


class _Reader:
    """The parameters of a source, read by name with shape checks; remembers what was used."""

    def __init__(self, b: GraphBuilder, arch: str) -> None:
        self.b = b
        self.arch = arch
        self.known = {p.name: p for p in b.params}
        self.used: set[str] = set()

    def has(self, name: str) -> bool:
        return name in self.known

    def param(self, name: str, shape: Sequence[int | None] | None = None, what: str = "") -> ParamView:
        """The parameter ``name``; ``shape`` entries that are None match any size."""
        if name not in self.known:
            raise UnsupportedModelError(
                f"{self.arch}: the model has no parameter '{name}'{f' ({what})' if what else ''}"
            )
        got = self.known[name].shape
        if shape is not None and (len(got) != len(shape) or any(w is not None and w != g for w, g in zip(shape, got))):
            want = "(" + ", ".join("*" if w is None else str(w) for w in shape) + ("," if len(shape) == 1 else "") + ")"
            raise ParameterMismatchError(
                f"{self.arch}: parameter '{name}' has shape {tuple(got)}, but the layout needs {want}"
                f"{f' ({what})' if what else ''}"
            )
        self.used.add(name)
        return self.b.param(name)

    def optional(self, name: str, shape: Sequence[int | None]) -> ParamView | None:
        return self.param(name, shape) if name in self.known else None

    def indices(self, prefix: str, what: str) -> list[int]:
        """The sorted indices ``i`` of parameters named ``prefix{i}.…``; they must be 0, 1, ..."""
        found: set[int] = set()
        for name in self.known:
            if name.startswith(prefix):
                head = name[len(prefix) :].split(".")[0]
                if not head.isdigit():
                    raise UnsupportedModelError(f"{self.arch}: parameter '{name}' is not part of the layout")
                found.add(int(head))
        ordered = sorted(found)
        if ordered != list(range(len(ordered))):
            missing = min(set(range(len(ordered))) - found)
            raise UnsupportedModelError(
                f"{self.arch}: {what} {missing} is missing (no parameter '{prefix}{missing}.…')"
            )
        return ordered

    def finish(self, layout: str) -> None:
        for name in self.known:
            if name not in self.used:
                raise UnsupportedModelError(f"{self.arch}: parameter '{name}' is not part of the {layout} layout")


def _heads(source: ModelSource) -> int:
    names = ("n_head", "num_heads", "num_attention_heads")
    heads = int(config_value(source.config, *names, what="number of attention heads"))
    if heads < 1:
        raise UnsupportedModelError(f"the number of attention heads must be positive, got {heads}")
    return heads


def _split_rows(view: ParamView, parts: int) -> ParamView:
    """A fused ``(parts * n, ...)`` tensor seen as ``(parts, n, ...)``: its parts along a new first axis."""
    n = view.shape[0] // parts
    return ParamView(view.name, view.offset, (parts, n, *view.shape[1:]), (n * view.strides[0], *view.strides))


# ---------------------------------------------------------------------------------------- nanoGPT
def declare_nanogpt(source: ModelSource, *, naive: bool = False) -> GraphBuilder:
    b = GraphBuilder(source.params, arch="nanogpt")
    r = _Reader(b, "nanogpt")
    heads = _heads(source)
    wte = r.param("transformer.wte.weight", (None, None), "token embedding (vocab_size, n_embd)")
    vocab, width = wte.shape
    if width % heads:
        raise UnsupportedModelError(
            f"nanogpt: n_embd {width} (parameter 'transformer.wte.weight') does not split into {heads} heads"
        )
    wpe = r.param("transformer.wpe.weight", (None, width), "position embedding (block_size, n_embd)")
    tokens = b.group("tokens", vocab, role="token", tokens=True)
    positions = b.group("positions", wpe.shape[0], role="position")
    streams = Streams(b, width)
    b.dense(wte.t(), tokens, streams.last, et.TOKEN_EMBEDDING)
    b.dense(wpe.t(), positions, streams.last, et.POSITION_EMBEDDING)

    def norm(name: str, units: NodeGroup) -> None:
        b.star(r.param(name + ".weight", (width,)), b.bias_node(name + ".weight"), units, et.NORM)
        bias = r.optional(name + ".bias", (width,))
        if bias is not None:
            b.star(bias, b.bias_node(name + ".bias"), units, et.BIAS)

    def linear(name: str, src: NodeGroup, dst: NodeGroup) -> None:  # nn.Linear: (out, in)
        b.dense(r.param(name + ".weight", (dst.size, src.size)), src, dst, et.LINEAR)
        bias = r.optional(name + ".bias", (dst.size,))
        if bias is not None:
            b.star(bias, b.bias_node(name + ".bias"), dst, et.BIAS)

    for i in r.indices("transformer.h.", "block"):
        p = f"transformer.h.{i}."
        a = p + "attn."
        x = streams.last
        norm(p + "ln_1", x)
        w = _split_rows(r.param(a + "c_attn.weight", (3 * width, width), "rows [W_q; W_k; W_v]"), 3)
        wq, wk, wv = w[0], w[1], w[2]
        bias = r.optional(a + "c_attn.bias", (3 * width,))
        bias = _split_rows(bias, 3) if bias is not None else None  # [b_q, b_k, b_v]
        if naive:
            units = b.group(a + "qkv", width, role="value")
            b.dense([wq, wk, wv], x, units, et.LINEAR, name=a + "c_attn.qkv")
            if bias is not None:  # one (width, 3) view: b_k alone has no effect, so it is never left out
                b.star(bias.t(), b.bias_node(a + "c_attn.bias"), units, et.BIAS, name=a + "c_attn.qkv.bias")
            b.permutable(units, segments=heads)
            values = units
        else:
            head_nodes = b.group(a + "heads", heads, role="head")
            qk = b.group(a + "qk", width, role="query_key")
            values = b.group(a + "v", width, role="value")
            b.dense(wq, x, qk, et.ATTN_QUERY, name=a + "c_attn.q")
            b.dense(wk.t(), qk, x, et.ATTN_KEY, name=a + "c_attn.k")
            b.dense(wv, x, values, et.ATTN_VALUE, name=a + "c_attn.v")
            b.head_membership(head_nodes, a, qk=qk, v=values)
            if bias is not None:
                for k, (part, units) in enumerate((("q", qk), ("k", qk), ("v", values))):
                    blk = b.star(bias[k], b.bias_node(f"{a}c_attn.bias.{part}"), units, et.BIAS,
                                 name=f"{a}c_attn.{part}.bias")
                    if part == "k":
                        b.without_effect(blk, "a key bias adds q.b_k to every score of a query: softmax cancels it")
            b.permutable_heads(head_nodes, qk, values)
            b.permutable(qk, segments=heads)
            b.permutable(values, segments=heads)
        mid = streams.new()
        linear(a + "c_proj", values, mid)
        b.residual(x, mid)
        norm(p + "ln_2", mid)
        c_fc = r.param(p + "mlp.c_fc.weight", (None, width), "(hidden, n_embd)")
        hidden = b.group(p + "mlp", c_fc.shape[0], role="hidden")
        linear(p + "mlp.c_fc", mid, hidden)
        out = streams.new()
        linear(p + "mlp.c_proj", hidden, out)
        b.residual(mid, out)
        b.permutable(hidden)
    norm("transformer.ln_f", streams.last)
    if r.has("lm_head.weight"):  # untied head (nanoGPT ties it to wte, and lists it once)
        head = r.param("lm_head.weight", (None, width))
        logits = b.group("logits", head.shape[0], role="output", tokens=True)
        b.dense(head, streams.last, logits, et.LINEAR)
    b.permutable(*streams.groups)  # the outputs are logits: the stream itself is free to permute
    r.finish("nanoGPT")
    return b


def sample_nanogpt(rng: random.Random) -> nanogpt_model.GPT:
    heads = rng.randint(1, 4)
    head_size = rng.randint(max(1, -(-3 // heads)), 3)  # width >= 3: LayerNorm over 1-2 features hides permutations
    config = nanogpt_model.GPTConfig(
        block_size=rng.randint(2, 6), vocab_size=rng.randint(3, 11), n_layer=rng.randint(1, 3), n_head=heads,
        n_embd=heads * head_size, dropout=0.0, bias=rng.random() < 0.6,
    )
    return nanogpt_model.GPT(config).eval()


def nanogpt_inputs(model, graph, generator: torch.Generator, batch: int) -> tuple:
    config = model.config
    return (torch.randint(config.vocab_size, (min(batch, 8), config.block_size), generator=generator),)


@register(
    "nanogpt",
    modules=(nanogpt_model.GPT,),
    accepts_specs=True,
    example=sample_nanogpt,
    example_inputs=nanogpt_inputs,
    description="Karpathy's nanoGPT (GPT, nn.Linear layout): per-head query-key/value units, head nodes",
)
def convert_nanogpt(source: ModelSource, *, naive: bool = False) -> GraphBuilder:
    """nanoGPT; ``naive=True`` stacks W_q, W_k, W_v into one 3-d edge, no head nodes."""
    return declare_nanogpt(source, naive=naive)


# ------------------------------------------------------------------------------- modded-nanogpt
@dataclass(frozen=True)
class _ModdedShape:
    """What the parameters and the config say about a modded-nanogpt model."""

    vocab: int
    width: int
    heads: int
    layers: list[int]
    has_attn: dict[int, bool]  # block -> has an attention sublayer
    hdim: int  # query/key/value units of a block: heads * head_size
    head_size: int
    rotating: int  # rotating pairs per head (they come first)
    num_ve: int
    ve_of: list[int | None]  # block -> the value embedding it reads (None: none)

    @property
    def skips(self) -> int:
        """U-net skip connections: the first ``skips`` blocks feed the last ``skips``."""
        return len(self.layers) // 2


def _modded_shape(source: ModelSource, r: _Reader) -> _ModdedShape:
    cfg = source.config
    heads = _heads(source)
    embed = r.param("embed.weight", (None, None), "token embedding (vocab_size, model_dim)")
    vocab, width = embed.shape
    layers = r.indices("blocks.", "block")
    num_ve = len(r.indices("value_embeds.", "value embedding"))
    has_attn = {i: r.has(f"blocks.{i}.attn.qkv_w") for i in layers}
    first = next((i for i in layers if has_attn[i]), None)
    hdim = r.param(f"blocks.{first}.attn.qkv_w", (3, None, width)).shape[1] if first is not None else width
    if first is not None and hdim % heads:
        raise UnsupportedModelError(
            f"modded_nanogpt: parameter 'blocks.{first}.attn.qkv_w' has {hdim} query/key/value dimensions, "
            f"which do not split into {heads} heads"
        )
    head_size = hdim // heads
    truncated = bool(_config(cfg, "truncated_rope", True))
    try:
        freqs = modded_model.rotary_frequencies(head_size, truncated) if first is not None else torch.zeros(0)
    except ValueError as err:
        raise UnsupportedModelError(f"modded_nanogpt: parameter 'blocks.{first}.attn.qkv_w': {err}") from None
    rotating = int((freqs != 0).sum())  # the rotating pairs come first
    ve_of = list(_config(cfg, "value_embed_layers", None) or modded_model.value_embed_layers(len(layers), num_ve))
    if len(ve_of) != len(layers) or any(j is not None and not 0 <= j < num_ve for j in ve_of):
        raise UnsupportedModelError(
            f"modded_nanogpt: value_embed_layers {ve_of} must name one of the {num_ve} value embeddings "
            f"(or None) for each of the {len(layers)} blocks"
        )
    return _ModdedShape(vocab, width, heads, layers, has_attn, hdim, head_size, rotating, num_ve, ve_of)


class _ModdedGraph:
    """The node groups and edge blocks of a modded-nanogpt model, declared component by component."""

    def __init__(self, b: GraphBuilder, r: _Reader, shape: _ModdedShape, *, naive: bool) -> None:
        self.b, self.r, self.s, self.naive = b, r, shape, naive
        self.attention: dict[int, tuple[NodeGroup, NodeGroup, NodeGroup]] = {}  # block -> (heads, qk, values)
        # embeddings: tokens -> x0 = norm(embed(idx)); tokens -> each value embedding's units
        self.tokens = b.group("tokens", shape.vocab, role="token", tokens=True)
        self.streams = Streams(b, shape.width)
        self.x0 = self.streams.last
        b.dense(r.param("embed.weight").t(), self.tokens, self.x0, et.TOKEN_EMBEDDING)
        self.value_embeds = [self.value_embed(j) for j in range(shape.num_ve)]

    def value_embed(self, j: int) -> NodeGroup:
        w = self.r.param(f"value_embeds.{j}.weight", (self.s.vocab, self.s.hdim), "(vocab_size, num_heads * head_dim)")
        units = self.b.group(f"value_embeds.{j}", self.s.hdim, role="value")
        self.b.dense(w.t(), self.tokens, units, et.TOKEN_EMBEDDING)
        return units

    # ------------------------------------------------------------ scalars as gate nodes
    def gates(self, name: str, count: int, what: str) -> NodeGroup:
        """The scalar parameter ``name``: its node, and a bias edge with each scalar to its gate."""
        values = self.r.param(name, (count,), what)
        nodes = self.b.group(name + ".gates", count, role="bias")
        self.b.star(values, self.b.bias_node(name), nodes, et.BIAS)
        return nodes

    def gated(self, gates: NodeGroup, k: int, src: NodeGroup, dst: NodeGroup, *, identity: bool = True) -> None:
        """Gate ``k`` of ``gates`` scales the connection ``src -> dst`` (unit to unit when ``identity``)."""
        gate, label = gates[k : k + 1], f"{gates.name}[{k}]"
        self.b.connect(src, gate, et.RESIDUAL, name=f"{src.name}->{label}")
        self.b.connect(gate, dst, et.RESIDUAL, name=f"{label}->{dst.name}")
        if identity:
            self.b.diagonal(src, dst, et.RESIDUAL, name=f"{src.name}->{dst.name}")

    # ------------------------------------------------------------ blocks
    def blocks(self) -> NodeGroup:
        """Every block in order, U-net skips included; returns the last stream."""
        s = self.s
        decoder = len(s.layers) - s.skips  # the first U-net decoder block
        skip_gates = self.gates("skip_weights", s.skips, "one U-net weight per skip connection") if s.skips else None
        saved: list[NodeGroup] = []  # encoder outputs, waiting for their decoder block
        x = self.x0
        for i in s.layers:
            if i >= decoder:
                x = self.skip(skip_gates, i - decoder, x, saved.pop())
            x = self.lambdas(i, x)
            if s.has_attn[i]:
                x = self.attention_block(i, x)
            x = self.mlp(f"blocks.{i}.", x)
            if i < s.skips:
                saved.append(x)
        return x

    def skip(self, skip_gates: NodeGroup, k: int, x: NodeGroup, encoder: NodeGroup) -> NodeGroup:
        """A decoder block's new stream: residual from ``x``, plus the encoder output gated by skip ``k``."""
        s = self.streams.new()
        self.b.residual(x, s)
        self.gated(skip_gates, k, encoder, s)
        return s

    def lambdas(self, i: int, x: NodeGroup) -> NodeGroup:
        """``x = lambdas[0] * x + lambdas[1] * x0``."""
        lambdas = self.gates(f"blocks.{i}.lambdas", 2, "x = lambdas[0] * x + lambdas[1] * x0")
        mixed = self.streams.new()
        self.gated(lambdas, 0, x, mixed)
        self.gated(lambdas, 1, self.x0, mixed)
        return mixed

    def attention_block(self, i: int, x: NodeGroup) -> NodeGroup:
        s, b, a = self.s, self.b, f"blocks.{i}.attn."
        w = self.r.param(a + "qkv_w", (3, s.hdim, s.width), "[W_q, W_k, W_v], each (num_heads * head_dim, model_dim)")
        if self.naive:
            values = b.group(a + "qkv", s.hdim, role="value")
            b.dense([w[0], w[1], w[2]], x, values, et.LINEAR, name=a + "qkv_w")
        else:
            self.attention[i] = self.heads(a, x, w)
            values = self.attention[i][2]
        mix = self.gates(a + "lambdas", 2, "v = lambdas[0] * v + lambdas[1] * value_embed")
        self.gated(mix, 0, x, values, identity=False)
        if s.ve_of[i] is not None:
            self.gated(mix, 1, self.value_embeds[s.ve_of[i]], values)
        mid = self.streams.new()
        b.dense(self.r.param(a + "c_proj.weight", (s.width, s.hdim)), values, mid, et.LINEAR)
        b.residual(x, mid)
        return mid

    def heads(self, a: str, x: NodeGroup, w: ParamView) -> tuple[NodeGroup, NodeGroup, NodeGroup]:
        """Query-key units, value units and head nodes of one attention sublayer (with RoPE)."""
        b, s = self.b, self.s
        head_nodes = b.group(a + "heads", s.heads, role="head")
        qk = b.group(a + "qk", s.hdim, role="query_key")
        values = b.group(a + "v", s.hdim, role="value")
        b.dense(w[0], x, qk, et.ATTN_QUERY, name=a + "qkv_w.q")
        b.dense(w[1].t(), qk, x, et.ATTN_KEY, name=a + "qkv_w.k")
        b.dense(w[2], x, values, et.ATTN_VALUE, name=a + "qkv_w.v")
        b.head_membership(head_nodes, a, qk=qk, v=values)
        if s.rotating:
            self.rotary(a, qk)
        return head_nodes, qk, values

    def rotary(self, a: str, qk: NodeGroup) -> None:
        """One node per rotating pair, joined to the pair in every head and chained by frequency."""
        b, rotating, size = self.b, self.s.rotating, self.s.head_size
        rotary = b.group(a + "rotary", rotating, role="position")
        half = size // 2
        for h in range(self.s.heads):  # pair j: rotary j -> dimension j, dimension j + half -> rotary j
            leading = qk[h * size : h * size + rotating]
            trailing = qk[h * size + half : h * size + half + rotating]
            b.diagonal(rotary, leading, et.HEAD, name=f"{a}rotary.head{h}.first")
            b.diagonal(trailing, rotary, et.HEAD, name=f"{a}rotary.head{h}.second")
        if rotating > 1:
            b.diagonal(rotary[0 : rotating - 1], rotary[1:rotating], et.HEAD, name=f"{a}rotary.order")

    def mlp(self, p: str, x: NodeGroup) -> NodeGroup:
        b, r = self.b, self.r
        c_fc = r.param(p + "mlp.c_fc.weight", (None, self.s.width), "(hidden, model_dim)")
        hidden = b.group(p + "mlp", c_fc.shape[0], role="hidden")
        b.dense(c_fc, x, hidden, et.LINEAR)
        out = self.streams.new()
        b.dense(r.param(p + "mlp.c_proj.weight", (self.s.width, hidden.size)), hidden, out, et.LINEAR)
        b.residual(x, out)
        b.permutable(hidden)
        return out

    def lm_head(self, x: NodeGroup) -> None:
        lm_head = self.r.param("lm_head.weight", (None, self.s.width), "(padded vocab, model_dim)")
        logits = self.b.group("logits", lm_head.shape[0], role="output", tokens=True)
        self.b.dense(lm_head, x, logits, et.LINEAR)

    # ------------------------------------------------------------ symmetries
    def symmetries(self) -> None:
        """Blocks sharing a value embedding move their heads and value units together."""
        b, s = self.b, self.s
        for j, ve in enumerate(self.value_embeds):
            users = [self.attention[i] for i in s.layers if i in self.attention and s.ve_of[i] == j]
            if users:
                # (unit groups first: a bad "cross-head" permutation moves units of the first member)
                b.permutable_heads(users[0][0], *(g for u in users for g in u[1:]), *(u[0] for u in users[1:]), ve)
                b.permutable(*(u[2] for u in users), ve, segments=s.heads)
            elif not any(s.ve_of[i] == j and s.has_attn[i] for i in s.layers):
                b.permutable(ve)  # read by no block: its units are free
            # (naive graph: a value embedding moves with the stacked query/key/value units, which RoPE pins)
        for i, (head_nodes, qk, values) in self.attention.items():
            if s.ve_of[i] is None:
                b.permutable_heads(head_nodes, qk, values)
                b.permutable(values, segments=s.heads)
        b.permutable(*self.streams.groups)  # parameter-free RMS norms: the stream is free to permute


def declare_modded_nanogpt(source: ModelSource, *, naive: bool = False) -> GraphBuilder:
    b = GraphBuilder(source.params, arch="modded_nanogpt")
    r = _Reader(b, "modded_nanogpt")
    graph = _ModdedGraph(b, r, _modded_shape(source, r), naive=naive)
    graph.lm_head(graph.blocks())
    graph.symmetries()
    r.finish("modded-nanogpt")
    return b


def sample_modded_nanogpt(rng: random.Random) -> modded_model.GPT:
    layers = rng.randint(1, 3)
    heads = rng.randint(1, 4)
    truncated = rng.random() < 0.75
    if truncated:
        head_dim = rng.choice([4, 8]) if heads <= 2 else 4
    else:
        head_dim = rng.choice([2, 4]) if heads > 1 else 4
    hdim = heads * head_dim
    num_ve = rng.randint(0, min(3, layers))
    # RMS norm over one or two features hides permutations: keep the width >= 3
    width = hdim if num_ve or rng.random() < 0.7 else rng.randint(3, 8)
    config = modded_model.GPTConfig(
        vocab_size=rng.randint(3, 11), num_layers=layers, num_heads=heads, model_dim=width,
        max_seq_len=rng.randint(2, 6), head_dim=head_dim, num_value_embeds=num_ve, mlp_ratio=rng.choice([1, 2, 4]),
        skip_attention=tuple(i for i in range(layers) if rng.random() < 0.15),
        vocab_multiple=rng.choice([1, 4, 16]), truncated_rope=truncated,
    )
    return modded_model.GPT(config).eval()


def modded_nanogpt_inputs(model, graph, generator: torch.Generator, batch: int) -> tuple:
    config = model.config
    return (torch.randint(config.vocab_size, (min(batch, 8), config.max_seq_len), generator=generator),)


@register(
    "modded_nanogpt",
    modules=(modded_model.GPT,),
    aliases=("modded-nanogpt",),
    accepts_specs=True,
    example=sample_modded_nanogpt,
    example_inputs=modded_nanogpt_inputs,
    description="modded-nanogpt speedrun GPT: value embeddings, RoPE, U-net skips and lambdas as gate nodes",
)
def convert_modded_nanogpt(source: ModelSource, *, naive: bool = False) -> GraphBuilder:
    """modded-nanogpt; ``naive=True`` stacks W_q, W_k, W_v into one 3-d edge, no head or rotary nodes."""
    return declare_modded_nanogpt(source, naive=naive)
