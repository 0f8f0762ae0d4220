"""The neuron-permutation-symmetry experiment (NiNo paper, appendix A.6), for every attention converter.

Question: does a neural graph tell a permutation of a transformer's neurons that keeps the
network's function ("good") from one that does not ("bad")? :func:`symmetry_experiment`

1. builds one (or ``layers``) transformer layer of the architecture from a config (no downloads),
   in float64, with parameters re-drawn at random (seeded);
2. draws ``n`` permutations of its units: about half from the symmetries the converter declares
   on the correct graph (random non-empty combinations of them), half of several "bad" kinds
   (:data:`BAD_KINDS`): units moved across heads consistently for Q, K and V (one swap, or a
   shuffle that ignores the heads), a declared symmetry applied everywhere except one parameter
   block (e.g. queries permuted but not keys), one unit moved into another head in one group
   only;
3. **labels every sample by running the model**: the permuted parameters are loaded into the
   model and its outputs on fixed random inputs are compared with the original outputs; the
   sample is function-preserving (label 1) when the largest change, relative to the largest
   output, is at most ``tolerance``;
4. builds the graph of every permuted parameter vector with the correct construction and with the
   naive one (Kofinas et al. 2024: W_q, W_k, W_v stacked into one 3-slot edge, no head nodes) and
   embeds it with one randomly initialised GNN (NiNo's message passing, 3 layers, 32 hidden units,
   mean aggregation, edge features and edge types); the graph embedding is the mean over edges of
   the final edge states concatenated with the mean over nodes of the final node states;
5. fits a logistic regression (standardized features, seeded) good vs bad on all samples (the
   paper's accuracy) and, beyond the paper, on a stratified train split scored on the held-out rest;
6. draws a PCA scatter of the classifier's inputs coloured by label, one panel per construction.

Graphs of permuted parameters: a permutation moves parameter values between edges of one fixed
structure (the value on edge ``(s, d)`` moves to ``(pi(s), pi(d))``), so the graph of the
permuted model is the original structure carrying the permuted edge features. The structure is
therefore built once per construction and only the edge features change per sample.

Three choices make the random GNN a faithful isomorphism probe (``docs/analysis_symmetry.md``
has the measurements behind them):

* **Messages flow both ways** (``bidirectional=True``). NiNo passes messages along edge direction
  only, and head-membership edges point from the head node to its units: a head node never hears
  from its units, so with automorphism-invariant node features no directed GNN can tell which
  units share a head. Every edge but the self-loops is therefore also passed reversed, with its
  own edge type (``type + 15``).
* **Automorphism-invariant node features** (``node_features="invariant"``). The converters'
  Laplacian positional encodings are not invariant under the graph's own automorphisms where an
  eigenvalue is degenerate (the basis inside the eigenspace follows node order): permuting whole
  heads moves parameters but not the encodings, so function-preserving head permutations would
  look different to any GNN. The default replaces them by a basis-independent version of the same
  spectral information (per node, the diagonal of the projector onto each of the first ``lpe``
  eigenvalue clusters of the same normalized Laplacian), plus the token-id feature ``pos_w``.
  ``"lpe"`` uses the converters' ``pos`` unchanged, ``"none"`` only ``pos_w``.
* **The classifier compares with the unpermuted graph** (``features="difference"``). Every good
  permutation yields a graph isomorphic to the original, hence exactly the original embedding (to
  round-off); bad ones scatter *around* it in every direction, so a linear classifier on the raw
  embeddings cannot cut that one point out of the cloud however well the graph separates them
  (:attr:`SymmetryResult.embedding_accuracy` reports that protocol too). The classifier therefore
  sees ``log10(|z - z_ref| / rms(z_ref) + 1e-12)`` per embedding component, ``z_ref`` being the
  embedding of the unpermuted graph; ``features="embedding"`` uses ``z`` itself.

Grouped-query attention: the converters build no naive graph for it. The naive graph of a GQA
layer here is the naive graph of the equivalent multi-head layer (each key/value head repeated for
the query heads it serves), carrying the GQA parameters at the repeated places.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from neuralgraph.verify import model_outputs

__all__ = [
    "BAD_KINDS",
    "DEFAULT_BAD_KINDS",
    "LABEL_COLORS",
    "SYMMETRY_ARCHS",
    "SymmetryResult",
    "supported_archs",
    "symmetry_experiment",
]

log = logging.getLogger(__name__)

SYMMETRY_ARCHS: tuple[str, ...] = ("gpt2", "llama", "bert", "vit", "nanogpt")
"""Registered attention converters the experiment supports (it builds their models itself)."""

GOOD_KIND = "declared-symmetry"
BAD_KINDS: dict[str, str] = {
    "cross-head-swap": "one unit of a head swapped with one of another head, in Q, K and V alike",
    "cross-head-shuffle": "a random permutation of the attention units that ignores the heads, Q, K and V alike",
    "inconsistent": "a declared symmetry applied everywhere except one parameter block or stacked tensor",
    "cross-segment": "one unit moved into another head in one unit group only (e.g. query-key, not value)",
    "qk-within-head": "query/key dimensions permuted within each head, Q and K alike (keeps a GPT-2 layer's "
    "function but not a RoPE layer's: a graph automorphism either way)",
}
"""The kinds of "bad" permutations (the label is measured, whatever the kind)."""

DEFAULT_BAD_KINDS: tuple[str, ...] = ("cross-head-swap", "cross-head-shuffle", "inconsistent", "cross-segment")

LABEL_COLORS: dict[int, str] = {1: "#1a9850", 0: "#d73027"}
"""Scatter colours: label 1 (function-preserving) green, label 0 (function-changing) red."""

CONSTRUCTIONS: tuple[str, ...] = ("correct", "naive")

ROUNDOFF_FLOOR = 1e-12
"""Embedding changes below this (relative to the embedding's RMS) count as round-off."""

_EDGE_TYPES = 15  # NiNo's edge-type vocabulary; reversed edges get type + 15
_VOCAB = 8  # token / position counts of the tiny embedding tables around the layer
_POSITIONS = 8


def supported_archs() -> tuple[str, ...]:
    """The registered converters the experiment supports (attention converters)."""
    from neuralgraph import converters

    registered = {c.name for c in converters()}
    return tuple(a for a in SYMMETRY_ARCHS if a in registered)


# ---------------------------------------------------------------------------------------- result
@dataclass
class SymmetryResult:
    """Outcome of :func:`symmetry_experiment`.

    Attributes:
        arch, width, heads, kv_heads, layers, n, seed: the configuration.
        labels: ``[n]`` int, 1 = the permuted model computes the same outputs (measured).
        kinds: ``[n]`` the kind each permutation was drawn as (``"declared-symmetry"`` or a key
            of :data:`BAD_KINDS`).
        intended: ``[n]`` int, 1 where the permutation was drawn from the declared symmetries.
        deviations: ``[n]`` relative output change ``max|y' - y| / max|y|``.
        tolerance: labels are 1 exactly where ``deviations <= tolerance``.
        accuracy: ``{"correct": a, "naive": b}``, logistic regression fit and scored on all samples.
        heldout_accuracy: the same, fit on a stratified train split, scored on the held-out rest.
        embeddings: ``{"correct": [n, 64], "naive": [n, 64]}`` graph embeddings.
        distances: per construction, ``[n]`` distance of each embedding from the embedding of the
            unpermuted graph, relative to the latter's norm (0 up to round-off for isomorphic graphs).
        kind_accuracy: per construction, per kind, the fit-on-all classifier's accuracy on that kind.
        figure: the PNG (a PDF lies next to it), or None when no figure was asked for.
        colors: label -> colour of the scatter points.
        point_colors: per construction, the RGBA face colour of every point, in sample order
            (read back from the drawn scatter).
        naive_graph: how the naive graph was built.
        node_features: which node features the GNN got.
        seconds: wall time per stage.
        model: the float64 model with its random parameters; ``inputs`` the inputs it was run on;
            ``graph`` its correct graph; ``permutations`` per sample ``(perms, skip)`` as taken by
            :func:`neuralgraph.permute.permute_params` (see :meth:`permuted_params`).
        references: per construction, the embedding of the unpermuted graph.
        embedding_accuracy: fit-on-all accuracy of a logistic regression on the raw embeddings
            (the paper's protocol; see the module docstring for why it is not the headline number).
        features: what ``accuracy`` was computed on: ``"difference"`` or ``"embedding"``.
    """

    arch: str
    n: int
    width: int
    heads: int
    kv_heads: int | None
    layers: int
    seed: int
    labels: np.ndarray
    kinds: np.ndarray
    intended: np.ndarray
    deviations: np.ndarray
    tolerance: float
    accuracy: dict[str, float]
    heldout_accuracy: dict[str, float]
    embeddings: dict[str, np.ndarray]
    distances: dict[str, np.ndarray]
    kind_accuracy: dict[str, dict[str, float]]
    figure: Path | None = None
    colors: dict[int, str] = field(default_factory=lambda: dict(LABEL_COLORS))
    point_colors: dict[str, np.ndarray] = field(default_factory=dict)
    references: dict[str, np.ndarray] = field(default_factory=dict)
    embedding_accuracy: dict[str, float] = field(default_factory=dict)
    features: str = "difference"
    bidirectional: bool = True
    naive_graph: str = "converter (naive=True)"
    node_features: str = "invariant"
    seconds: dict[str, float] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False)
    graph: Any = field(default=None, repr=False)
    inputs: Any = field(default=None, repr=False)
    permutations: list = field(default_factory=list, repr=False)

    def permuted_params(self, i: int) -> torch.Tensor:
        """The flat parameter vector of sample ``i`` (``model``'s parameters, permuted)."""
        from neuralgraph import flatten_params
        from neuralgraph.permute import permute_params

        perms, skip = self.permutations[i]
        return permute_params(self.graph, flatten_params(self.model), perms, skip=skip)

    def classifier_inputs(self, construction: str) -> np.ndarray:
        """The features the logistic regression saw for ``construction`` (before standardizing)."""
        z = self.embeddings[construction]
        return _difference_features(z, self.references[construction]) if self.features == "difference" else z

    @property
    def n_good(self) -> int:
        return int(self.labels.sum())

    @property
    def n_bad(self) -> int:
        return int(len(self.labels) - self.labels.sum())

    @property
    def mislabeled(self) -> int:
        """Samples whose measured label differs from the kind they were drawn as."""
        return int((self.labels != self.intended).sum())

    def table(self) -> str:
        """A small table: one row per construction; fit-on-all and held-out accuracy, class sizes."""
        rows = [("graph", "fit-on-all acc", "held-out acc", "n good", "n bad")]
        for c in CONSTRUCTIONS:
            if c in self.accuracy:
                rows.append((c, f"{self.accuracy[c]:.3f}", f"{self.heldout_accuracy.get(c, math.nan):.3f}",
                             str(self.n_good), str(self.n_bad)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
                 for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        kv = f", kv_heads {self.kv_heads}" if self.kv_heads is not None else ""
        title = (f"{self.arch}: width {self.width}, heads {self.heads}{kv}, layers {self.layers}, n {self.n}, "
                 f"tolerance {self.tolerance:.0e}")
        return "\n".join([title, *lines])

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        acc = ", ".join(f"{c}={a:.3f}/{self.heldout_accuracy.get(c, math.nan):.3f}" for c, a in self.accuracy.items())
        return (f"SymmetryResult(arch={self.arch!r}, n={self.n}, good={self.n_good}, bad={self.n_bad}, "
                f"accuracy (fit-on-all/held-out): {acc}, figure={str(self.figure) if self.figure else None!r})")


# ---------------------------------------------------------------------------------------- models
def _check_config(arch: str, width: int, heads: int, kv_heads: int | None, layers: int, n: int) -> str:
    supported = supported_archs()
    if not isinstance(arch, str) or arch not in supported:
        raise ValueError(
            f"symmetry_experiment supports the attention converters {', '.join(supported)}; got {arch!r}"
        )
    for what, value, low in (("width", width, 1), ("heads", heads, 1), ("layers", layers, 1), ("n", n, 4)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")
    if width % heads:
        raise ValueError(f"width {width} does not split into {heads} heads")
    if kv_heads is not None:
        if arch != "llama":
            raise ValueError(
                f"kv_heads (grouped-query attention) is only meaningful for 'llama'; '{arch}' has as many "
                "key/value heads as query heads: leave kv_heads=None"
            )
        if not isinstance(kv_heads, int) or isinstance(kv_heads, bool) or kv_heads < 1 or heads % kv_heads:
            raise ValueError(f"kv_heads must be a positive divisor of heads={heads}, got {kv_heads!r}")
    if arch == "llama" and (width // heads) % 2:
        raise ValueError(f"llama: the head size width/heads = {width // heads} must be even (RoPE rotates pairs)")
    return arch


def _build_model(arch: str, width: int, heads: int, kv_heads: int | None, layers: int, inner: int) -> nn.Module:
    """One (or ``layers``) layer of ``arch`` with tiny embedding tables, from a config."""
    if arch == "nanogpt":
        from neuralgraph.models import nanogpt as nanogpt_model

        config = nanogpt_model.GPTConfig(block_size=_POSITIONS, vocab_size=_VOCAB, n_layer=layers, n_head=heads,
                                         n_embd=width, dropout=0.0, bias=True)
        return nanogpt_model.GPT(config)
    from neuralgraph.arch._hf import require_transformers

    transformers = require_transformers("the symmetry experiment")
    if arch == "gpt2":
        config = transformers.GPT2Config(
            n_embd=width, n_layer=layers, n_head=heads, n_inner=inner, vocab_size=_VOCAB, n_positions=_POSITIONS,
            bos_token_id=0, eos_token_id=0, attn_implementation="eager",
        )
        return transformers.GPT2Model(config)
    if arch == "llama":
        config = transformers.LlamaConfig(
            vocab_size=_VOCAB, hidden_size=width, intermediate_size=inner, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=kv_heads or heads, head_dim=width // heads,
            max_position_embeddings=2 * _POSITIONS, bos_token_id=0, eos_token_id=0, pad_token_id=0,
            attn_implementation="eager",
        )
        return transformers.LlamaModel(config)
    if arch == "bert":
        config = transformers.BertConfig(
            hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=inner,
            vocab_size=_VOCAB, max_position_embeddings=_POSITIONS, type_vocab_size=2, pad_token_id=0,
            attn_implementation="eager",
        )
        return transformers.BertModel(config, add_pooling_layer=False)
    if arch == "vit":
        config = transformers.ViTConfig(
            hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=inner,
            image_size=4, patch_size=2, num_channels=3, qkv_bias=True, attn_implementation="eager",
        )
        return transformers.ViTModel(config, add_pooling_layer=False)
    raise ValueError(f"no model builder for '{arch}'")  # pragma: no cover - guarded by _check_config


def _redraw(model: nn.Module, generator: torch.Generator) -> None:
    """Random parameters: matrices ~ N(0, 1/fan_in), embeddings ~ N(0, 1), 1-D ~ U(0.5, 1.5).

    Random values make every unit different from the others, so any permutation that is not a
    symmetry changes the outputs visibly.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                embedding = "embed" in name or name.endswith(("wte.weight", "wpe.weight")) or "position" in name
                fan_in = 1 if embedding else max(1, p.numel() // p.shape[0])
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * fan_in**-0.5)
            else:
                p.copy_(torch.rand(p.shape, generator=generator, dtype=p.dtype) + 0.5)


# ---------------------------------------------------------------------------------------- permutations
Perms = dict[str, torch.Tensor]
Skip = tuple


@dataclass(frozen=True)
class _Draw:
    kind: str
    perms: Perms
    skip: Skip = ()


def _compose(perms: Perms, extra: Mapping[str, torch.Tensor]) -> Perms:
    from neuralgraph.symmetry import compose

    out = dict(perms)
    for name, perm in extra.items():
        out[name] = compose(out[name], perm) if name in out else perm
    return out


class _Sampler:
    """Draws good and bad permutations of a correct graph's node groups."""

    def __init__(self, graph, generator: torch.Generator, rng: random.Random) -> None:
        from neuralgraph import PermutableHeads

        self.graph = graph
        self.gen = generator
        self.rng = rng
        self.sizes = {g.name: g.size for g in graph.groups}
        self.roles = {g.name: g.role for g in graph.groups}
        self.symmetries = [s for s in graph.symmetries if s.movable(self.sizes)]
        if not self.symmetries:
            raise ValueError(f"the {graph.arch} graph declares no movable symmetry: nothing to permute")
        self.inert = set(graph.meta.get("without_effect", {}))
        # attention head structures: top-level head symmetries (not the within-group ones of GQA)
        self.heads = [s for s in graph.symmetries if isinstance(s, PermutableHeads) and s.within == 1
                      and self.sizes[s.heads] > 1]
        self.sides = self._inconsistent_sides()
        self.cross = [s for s in self.symmetries if s.cross_segment(self.sizes, torch.Generator().manual_seed(0))]

    # -- good
    def good(self) -> _Draw:
        chosen = [s for s in self.symmetries if self.rng.random() < 0.5] or [self.rng.choice(self.symmetries)]
        perms: Perms = {}
        for sym in chosen:
            perms = _compose(perms, sym.draw(self.sizes, self.gen))
        return _Draw(GOOD_KIND, perms)

    # -- bad
    def available(self, kinds: Sequence[str]) -> list[str]:
        ok = []
        for kind in kinds:
            if kind in ("cross-head-swap", "cross-head-shuffle") and self.heads:
                ok.append(kind)
            elif kind == "qk-within-head" and self.heads and any(self._slots(s)[1] > 1 for s in self.heads):
                ok.append(kind)
            elif kind == "inconsistent" and self.sides:
                ok.append(kind)
            elif kind == "cross-segment" and self.cross:
                ok.append(kind)
        return ok

    def bad(self, kind: str) -> _Draw:
        if kind in ("cross-head-swap", "cross-head-shuffle", "qk-within-head"):
            sym = self.rng.choice(self.heads)
            return _Draw(kind, self._slot_permutation(sym, kind))
        if kind == "inconsistent":
            sym, side = self.rng.choice(self.sides)
            return _Draw(kind, sym.draw(self.sizes, self.gen), (side,))
        if kind == "cross-segment":
            sym = self.rng.choice(self.cross)
            return _Draw(kind, sym.cross_segment(self.sizes, self.gen))
        raise ValueError(f"unknown kind of bad permutation '{kind}'; known: {', '.join(BAD_KINDS)}")

    def _inconsistent_sides(self) -> list[tuple[Any, tuple]]:
        """(symmetry, side to leave unpermuted) pairs, as the verifier breaks symmetries."""
        out = []
        for sym in self.symmetries:
            groups = set(sym.groups)
            sides: list[tuple] = [
                (b.name, side)
                for b in self.graph.blocks
                if b.view is not None and b.name not in self.inert
                for side, rng in (("src", b.src), ("dst", b.dst))
                if rng.group in groups and rng.size > 1 and not (b.kind == "diagonal" and side == "src")
            ]
            sides += [
                (b.name, "slot", k)
                for b in self.graph.blocks
                if b.view is not None and len(b.view.parts) > 1 and b.name not in self.inert
                and {b.src.group, b.dst.group} & groups
                for k in range(len(b.view.parts))
                if f"{b.name}[{k}]" not in self.inert
            ]
            if len(sides) > 1:
                out += [(sym, side) for side in sides]
        return out

    def _slots(self, sym) -> tuple[list[str], int]:
        """Unit groups of a head symmetry (head-node groups excluded) and their common unit width."""
        count = self.sizes[sym.heads]
        members = [m for m in sym.members if self.roles[m] != "head"]
        width = min(self.sizes[m] // count for m in members)
        if any((self.sizes[m] // count) % width for m in members):
            raise ValueError(f"{sym.name}: unit groups do not share a head size")  # pragma: no cover
        return members, width

    def _slot_permutation(self, sym, kind: str) -> Perms:
        """A permutation ``tau`` of the (head, dim) slots, applied to every unit group of the heads:
        unit ``(h, r, j)`` (head ``h``, copy ``r`` — e.g. query head ``r`` of key/value group ``h``
        — dimension ``j``) moves to ``(tau(h, j), r)``. Head nodes stay."""
        count = self.sizes[sym.heads]
        members, dim = self._slots(sym)
        total = count * dim
        if kind == "cross-head-swap":
            a, b = self.rng.sample(range(count), 2)
            i, j = a * dim + self.rng.randrange(dim), b * dim + self.rng.randrange(dim)
            tau = torch.arange(total)
            tau[i], tau[j] = j, i
        elif kind == "cross-head-shuffle":
            for _ in range(100):
                tau = torch.randperm(total, generator=self.gen)
                if not torch.equal(tau.view(count, dim).div(dim, rounding_mode="floor").amax(1),
                                   tau.view(count, dim).div(dim, rounding_mode="floor").amin(1)):
                    break  # some head's units land in more than one head
        else:  # qk-within-head: query-key dims only, each head its own permutation (not all identity)
            for _ in range(100):
                keys = torch.rand(count, dim, generator=self.gen, dtype=torch.float64)
                tau = (keys.argsort(dim=1) + torch.arange(count).unsqueeze(1) * dim).reshape(-1)
                if not torch.equal(tau, torch.arange(total)):
                    break
            members = [m for m in members if self.roles[m] == "query_key"]
        perms: Perms = {}
        for m in members:
            copies = self.sizes[m] // count // dim
            h, rest = torch.arange(self.sizes[m]).div(copies * dim, rounding_mode="floor"), torch.arange(self.sizes[m])
            r = (rest % (copies * dim)).div(dim, rounding_mode="floor")
            j = rest % dim
            target = tau[h * dim + j]
            perms[m] = target.div(dim, rounding_mode="floor") * copies * dim + r * dim + target % dim
        return perms


# ---------------------------------------------------------------------------------------- naive graphs
def _naive_graph(model: nn.Module, arch: str, lpe: int) -> tuple[Any, torch.Tensor | None, str]:
    """The naive graph and, when it is built on an expanded model, the gather index mapping the
    model's flat parameter vector onto the expanded one."""
    import neuralgraph as ng

    config = getattr(model, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    kv = getattr(config, "num_key_value_heads", None)
    if arch != "llama" or kv is None or kv == heads:
        return ng.convert(model, naive=True, lpe=lpe), None, "converter (naive=True)"
    # grouped-query attention: the naive graph of the equivalent multi-head layer
    mha_config = copy.deepcopy(config)
    mha_config.num_key_value_heads = heads
    with torch.device("meta"):
        expanded = type(model)(mha_config)
    graph = ng.convert(expanded, naive=True, lpe=lpe)
    group = heads // kv
    own = {p.name: p for p in ng.param_specs(model)}
    index = []
    for spec in ng.param_specs(expanded):
        src = own[spec.name]
        ids = torch.arange(src.offset, src.offset + src.numel).reshape(src.shape)
        if spec.shape != src.shape:  # k_proj / v_proj rows (and biases): repeat each key/value head
            head_dim = src.shape[0] // kv
            ids = ids.reshape(kv, head_dim, *src.shape[1:]).repeat_interleave(group, dim=0).reshape(spec.shape)
        index.append(ids.reshape(-1))
    how = f"naive graph of the equivalent multi-head layer (key/value heads repeated x{group})"
    return graph, torch.cat(index), how


# ---------------------------------------------------------------------------------------- node features
def _invariant_spectral_features(graph, k: int) -> torch.Tensor:
    """``[N, k]``: per node, the diagonal of the projector onto each of the ``k`` smallest
    non-trivial eigenvalue clusters of the graph's normalized Laplacian (basis-independent, hence
    unchanged by every automorphism; a dense eigendecomposition, for the small graphs used here)."""
    from neuralgraph.lpe import dense_laplacian

    lap = dense_laplacian(graph.num_nodes, graph.connections())
    values, vectors = np.linalg.eigh(lap)
    order = np.argsort(values, kind="stable")
    values, vectors = values[order], vectors[:, order]
    cuts = np.flatnonzero(np.diff(values) > 1e-8) + 1
    clusters = np.split(np.arange(len(values)), cuts)
    out = np.zeros((graph.num_nodes, k))
    for col, members in enumerate(clusters[1 : k + 1]):  # skip the smallest (trivial) cluster
        out[:, col] = (vectors[:, members] ** 2).sum(axis=1) * len(values) / len(members)
    return torch.from_numpy(out)


def _node_features(graph, mode: str, lpe: int) -> torch.Tensor | None:
    if mode == "lpe":
        return graph.pos.to(torch.float64) if graph.pos is not None else None
    if mode == "invariant":
        return _invariant_spectral_features(graph, lpe)
    return None


# ---------------------------------------------------------------------------------------- GNN
def _random_gnn(max_feat_size: int, vocab: int, lpe: int, seed: int, hid: int = 32, layers: int = 3,
                edge_types: int = 2 * _EDGE_TYPES):
    """A randomly initialised NiNo GNN (float64): weights ~ N(0, 1/fan_in), biases ~ N(0, 0.01),
    embeddings ~ N(0, 1) — large enough that its non-linearities act (NiNo's own initialisation,
    std 0.02, would make a random network almost linear)."""
    from nowcast import NiNoConfig, NiNoModel

    config = NiNoConfig(ctx=1, hid=hid, layers=layers, max_feat_size=max_feat_size, seq_len=1, lpe=lpe,
                        wte_pos_enc=True, vocab_size=max(1, vocab), edge_types=edge_types)
    gen = torch.Generator().manual_seed(seed)
    model = NiNoModel(config, edge_chunk=None)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * module.in_features**-0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
            elif isinstance(module, nn.Embedding):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen))
    return model.double().eval()


class _Embedder:
    """Graph embeddings of many parameter vectors on one graph structure.

    With ``bidirectional`` every edge except the self-loops is also passed in reverse, with the
    same features and edge type ``type + 15``, so that messages flow both ways (a head node hears
    from its units). Graphs are embedded one at a time (the cost is the GNN's matrix products;
    one at a time also keeps every sample's arithmetic identical, so isomorphic graphs get
    embeddings equal to round-off)."""

    def __init__(self, graph, gnn, node_features: torch.Tensor | None, *, bidirectional: bool = True) -> None:
        from types import SimpleNamespace

        from neuralgraph import edge_types as et

        self.graph = graph
        self.gnn = gnn
        edge_index, edge_type = graph.edge_index, graph.edge_type
        self.reverse = (edge_type != et.SELF_LOOP).nonzero().squeeze(1) if bidirectional else None
        if self.reverse is not None:
            edge_index = torch.cat([edge_index, edge_index[:, self.reverse].flip(0)], dim=1)
            edge_type = torch.cat([edge_type, edge_type[self.reverse] + _EDGE_TYPES])
        self.data = SimpleNamespace(edge_index=edge_index, edge_type=edge_type, edge_attr=None,
                                    pos=node_features, pos_w=graph.pos_w)

    def __call__(self, vectors: torch.Tensor, chunk: int = 64) -> np.ndarray:
        """``vectors`` ``[B, P]`` (already scaled) -> embeddings ``[B, 2 * hid]``: the mean of the
        final edge states and the mean of the final node states."""
        g = self.graph
        out = []
        for start in range(0, vectors.shape[0], chunk):
            block = vectors[start : start + chunk]
            feats = g.edge_features(block.t().contiguous())  # [E, F * b], column f * b + t
            b = block.shape[0]
            feats = feats.reshape(g.num_edges, feats.shape[1] // b, b)
            if self.reverse is not None:
                feats = torch.cat([feats, feats[self.reverse]])
            for t in range(b):
                self.data.edge_attr = feats[:, :, t]
                with torch.no_grad():
                    emb = self.gnn.embed(self.data)
                out.append(torch.cat([emb.edges.mean(0), emb.nodes.mean(0)]))
        self.data.edge_attr = None
        return torch.stack(out).numpy()


def _scaling(graph, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor standardization ``(x - mean) / std`` of the reference parameters, as ``[P]``
    vectors (a permutation moves values only within a tensor, so one scaling fits all samples)."""
    mean = torch.empty_like(theta)
    std = torch.empty_like(theta)
    for p in graph.params:
        values = theta[p.offset : p.offset + p.numel]
        s = float(values.std()) if p.numel > 1 else 0.0
        mean[p.offset : p.offset + p.numel] = float(values.mean())
        std[p.offset : p.offset + p.numel] = s if s > 1e-12 else 1.0
    return mean, std


# ---------------------------------------------------------------------------------------- classifier
def _difference_features(z: np.ndarray, z0: np.ndarray) -> np.ndarray:
    """``log10(|z - z0| / rms(z0) + ROUNDOFF_FLOOR)`` per embedding component: how far each sample's
    graph embedding lies from the unpermuted graph's, on a log scale (changes span several decades).
    The floor sits well above the float64 round-off of the GNN (~1e-15), so that isomorphic graphs
    all land on it and the classifier cannot fit round-off noise."""
    scale = float(np.sqrt(np.mean(z0**2))) + 1e-300
    return np.log10(np.abs(z - z0) / scale + ROUNDOFF_FLOOR)


def _accuracies(x: np.ndarray, y: np.ndarray, seed: int, heldout: float) -> tuple[float, float, np.ndarray]:
    """(fit-on-all accuracy, held-out accuracy, fit-on-all predictions)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def classifier():
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=10_000, random_state=seed))

    if len(np.unique(y)) < 2:
        log.warning("only one class among the labels: accuracies are trivially 1")
        return 1.0, 1.0, y.copy()
    clf = classifier().fit(x, y)
    pred = clf.predict(x)
    full = float((pred == y).mean())
    counts = np.bincount(y, minlength=2)
    test = max(2, int(round(heldout * len(y))))
    if counts.min() < 2 or test > len(y) - 2:
        return full, math.nan, pred
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test, stratify=y, random_state=seed)
    held = float((classifier().fit(xtr, ytr).predict(xte) == yte).mean())
    return full, held, pred


# ---------------------------------------------------------------------------------------- figure
def _figure(result: SymmetryResult, out_dir: Path, stem: str) -> tuple[Path, dict[str, np.ndarray]]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    out_dir.mkdir(parents=True, exist_ok=True)
    panels = [c for c in CONSTRUCTIONS if c in result.embeddings]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    colors = np.array([result.colors[int(v)] for v in result.labels])
    point_colors: dict[str, np.ndarray] = {}
    order = np.argsort(result.labels, kind="stable")  # function-preserving points drawn on top
    inverse = np.argsort(order, kind="stable")
    for ax, name in zip(axes[0], panels):
        x = StandardScaler().fit_transform(result.classifier_inputs(name))
        xy = PCA(n_components=2, random_state=result.seed).fit_transform(x) if x.shape[1] >= 2 else np.c_[x, x]
        sizes = np.where(result.labels[order] == 1, 30.0, 14.0)
        scatter = ax.scatter(xy[order, 0], xy[order, 1], c=colors[order], s=sizes, alpha=0.7,
                             edgecolors="none")
        point_colors[name] = np.asarray(scatter.get_facecolors())[inverse].copy()
        ax.set_title(f"{name} graph: accuracy {result.accuracy[name]:.3f} "
                     f"(held-out {result.heldout_accuracy[name]:.3f})", fontsize=10)
        same = result.distances[name] <= ROUNDOFF_FLOOR
        ax.set_xlabel(f"PC 1\n(same embedding as the unpermuted graph: "
                      f"{int((same & (result.labels == 1)).sum())} preserving, "
                      f"{int((same & (result.labels == 0)).sum())} changing)", fontsize=8)
        ax.set_ylabel("PC 2")
    handles = [
        Line2D([], [], marker="o", ls="", color=result.colors[1], label=f"function-preserving ({result.n_good})"),
        Line2D([], [], marker="o", ls="", color=result.colors[0], label=f"function-changing ({result.n_bad})"),
    ]
    axes[0][0].legend(handles=handles, loc="best", fontsize=8)
    kv = f", {result.kv_heads} kv heads" if result.kv_heads is not None else ""
    what = "log distance from the unpermuted graph's embedding" if result.features == "difference" else "embeddings"
    fig.suptitle(f"{result.arch}: {result.layers} layer(s), width {result.width}, {result.heads} heads{kv}, "
                 f"n {result.n}; random-GNN graph {what} (PCA)", fontsize=10)
    fig.tight_layout()
    png = out_dir / f"{stem}.png"
    fig.savefig(png, dpi=120)
    fig.savefig(out_dir / f"{stem}.pdf")
    plt.close(fig)
    return png, point_colors


# ---------------------------------------------------------------------------------------- experiment
def symmetry_experiment(
    arch: str,
    *,
    width: int,
    heads: int,
    kv_heads: int | None = None,
    n: int = 1000,
    seed: int = 0,
    out_dir: str | Path | None = None,
    layers: int = 1,
    inner: int | None = None,
    tolerance: float | None = None,
    bad_kinds: Sequence[str] = DEFAULT_BAD_KINDS,
    good_fraction: float = 0.5,
    features: str = "difference",
    node_features: str = "invariant",
    bidirectional: bool = True,
    lpe: int = 8,
    hidden: int = 32,
    gnn_layers: int = 3,
    heldout: float = 0.3,
    figure: bool = True,
) -> SymmetryResult:
    """Run the permutation-symmetry experiment on one ``arch`` layer (see the module docstring).

    Args:
        arch: a converter of :func:`supported_archs` (``gpt2``, ``llama``, ``bert``, ``vit``, ``nanogpt``).
        width, heads: the layer's width and number of (query) heads.
        kv_heads: key/value heads for grouped-query attention (``llama`` only; None = ``heads``).
        n: number of permutations (about ``good_fraction`` of them drawn from declared symmetries).
        seed: seeds the model's parameters, the inputs, the permutations, the GNN and the classifier.
        out_dir: where the figure goes (``symmetry_{arch}.png`` and ``.pdf``); default a new
            temporary directory.
        layers: transformer layers in the model.
        inner: MLP hidden units (default ``4 * width``).
        tolerance: a sample is function-preserving when ``max|y' - y| / max|y| <= tolerance``;
            default 1e-8, or the converter's ``verify_rtol`` where the model computes parts in
            float32 whatever its dtype (Hugging Face RMSNorm: llama, 1e-5).
        bad_kinds: kinds of bad permutations to mix (keys of :data:`BAD_KINDS`), drawn uniformly.
        node_features: ``"invariant"`` (default), ``"lpe"`` or ``"none"`` (see the module docstring).
        lpe: spectral node-feature columns.
        hidden, gnn_layers: the random GNN's size (the paper: 32 and 3).
        heldout: fraction of samples held out for ``heldout_accuracy``.
        figure: draw the figure.

    Raises ``ValueError`` for an unsupported ``arch``, ``kv_heads`` on an architecture without
    grouped-query attention, or an invalid configuration.
    """
    import neuralgraph as ng
    from neuralgraph.permute import permute_params

    t0 = time.perf_counter()
    name = _check_config(arch, width, heads, kv_heads, layers, n)
    unknown = [k for k in bad_kinds if k not in BAD_KINDS]
    if unknown or not bad_kinds:
        raise ValueError(f"unknown or no bad_kinds {unknown or list(bad_kinds)}; known: {', '.join(BAD_KINDS)}")
    if features not in ("difference", "embedding"):
        raise ValueError(f"features must be 'difference' or 'embedding', got {features!r}")
    if node_features not in ("invariant", "lpe", "none"):
        raise ValueError(f"node_features must be 'invariant', 'lpe' or 'none', got {node_features!r}")
    if not 0.0 < good_fraction < 1.0:
        raise ValueError(f"good_fraction must lie strictly between 0 and 1, got {good_fraction}")
    inner = 4 * width if inner is None else int(inner)
    torch_gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    seconds: dict[str, float] = {}

    # 1. the model, float64, random parameters (constructors' own random draws are overwritten and
    #    kept away from the caller's global generator)
    with torch.random.fork_rng(devices=[]):
        model = _build_model(name, width, heads, kv_heads, layers, inner).to(torch.float64).eval()
    _redraw(model, torch_gen)
    theta = ng.flatten_params(model)
    lpe_cols = lpe if node_features == "lpe" else 0
    graph = ng.convert(model, lpe=lpe_cols)
    naive, gather, naive_how = _naive_graph(model, name, lpe_cols)
    converter = ng.get_converter(name)
    if tolerance is None:
        tolerance = max(1e-8, converter.verify_rtol or 0.0)
    inputs = converter.example_inputs(model, graph, torch_gen, 8)
    reference = model_outputs(model, inputs)
    scale = float(reference.abs().max()) + 1e-30
    seconds["build"] = time.perf_counter() - t0

    # 2. permutations -> permuted parameter vectors
    t = time.perf_counter()
    sampler = _Sampler(graph, torch_gen, rng)
    kinds_ok = sampler.available(bad_kinds)
    if not kinds_ok:
        raise ValueError(f"{name}: none of the bad kinds {list(bad_kinds)} applies to this layer")
    if len(kinds_ok) < len(bad_kinds):
        log.info("%s: bad kinds %s do not apply; using %s", name, sorted(set(bad_kinds) - set(kinds_ok)), kinds_ok)
    n_good = int(round(n * good_fraction))
    plan = [True] * n_good + [False] * (n - n_good)
    rng.shuffle(plan)
    draws = [sampler.good() if is_good else sampler.bad(rng.choice(kinds_ok)) for is_good in plan]
    vectors = torch.stack([permute_params(graph, theta, d.perms, skip=d.skip) for d in draws])
    seconds["permute"] = time.perf_counter() - t

    # 3. labels from the model's outputs
    t = time.perf_counter()
    moved = copy.deepcopy(model)
    deviations = np.empty(n)
    for i, vec in enumerate(vectors):
        ng.load_params(moved, vec)
        deviations[i] = float((model_outputs(moved, inputs) - reference).abs().max()) / scale
    del moved
    labels = (deviations <= tolerance).astype(np.int64)
    intended = np.array([d.kind == GOOD_KIND for d in draws], dtype=np.int64)
    kinds = np.array([d.kind for d in draws])
    seconds["label"] = time.perf_counter() - t
    disagree = int((labels != intended).sum())
    if disagree:
        log.info("%s: %d of %d samples behave otherwise than the kind they were drawn as", name, disagree, n)
    good_dev = deviations[labels == 1]
    bad_dev = deviations[labels == 0]
    log.info("%s: %d function-preserving (largest change %.1e), %d function-changing (smallest change %.1e), "
             "tolerance %.0e", name, len(good_dev), good_dev.max(initial=0.0), len(bad_dev),
             bad_dev.min(initial=math.inf), tolerance)

    # 4. graph embeddings with one random GNN
    t = time.perf_counter()
    mean, std = _scaling(graph, theta)
    scaled = (vectors - mean) / std
    scaled_ref = ((theta - mean) / std).unsqueeze(0)
    graphs = {"correct": (graph, None), "naive": (naive, gather)}
    feats = {c: _node_features(g, node_features, lpe) for c, (g, _) in graphs.items()}
    vocab = max(int(g.pos_w.max()) for g, _ in graphs.values())
    max_feat = max(g.max_feat_size for g, _ in graphs.values())
    with torch.random.fork_rng(devices=[]):
        gnn = _random_gnn(max_feat, vocab, lpe if node_features != "none" else 0, seed + 1, hidden, gnn_layers)
    embeddings: dict[str, np.ndarray] = {}
    references: dict[str, np.ndarray] = {}
    distances: dict[str, np.ndarray] = {}
    for c, (g, index) in graphs.items():
        embed = _Embedder(g, gnn, feats[c], bidirectional=bidirectional)
        vec, ref = (scaled, scaled_ref) if index is None else (scaled[:, index], scaled_ref[:, index])
        embeddings[c] = embed(vec)
        references[c] = embed(ref)[0]
        distances[c] = np.linalg.norm(embeddings[c] - references[c], axis=1) / (np.linalg.norm(references[c]) + 1e-300)
    seconds["embed"] = time.perf_counter() - t

    # 5. logistic regression
    t = time.perf_counter()
    accuracy, held, kind_acc, raw = {}, {}, {}, {}
    for c in CONSTRUCTIONS:
        x = _difference_features(embeddings[c], references[c]) if features == "difference" else embeddings[c]
        accuracy[c], held[c], pred = _accuracies(x, labels, seed, heldout)
        kind_acc[c] = {str(k): float((pred[kinds == k] == labels[kinds == k]).mean()) for k in dict.fromkeys(kinds)}
        raw[c] = accuracy[c] if features == "embedding" else _accuracies(embeddings[c], labels, seed, heldout)[0]
    seconds["classify"] = time.perf_counter() - t

    result = SymmetryResult(
        arch=name, n=n, width=width, heads=heads, kv_heads=kv_heads, layers=layers, seed=seed, labels=labels,
        kinds=kinds, intended=intended, deviations=deviations, tolerance=float(tolerance), accuracy=accuracy,
        heldout_accuracy=held, embeddings=embeddings, distances=distances, kind_accuracy=kind_acc,
        references=references, embedding_accuracy=raw, features=features, bidirectional=bidirectional,
        naive_graph=naive_how, node_features=node_features, seconds=seconds, model=model, graph=graph, inputs=inputs,
        permutations=[(d.perms, d.skip) for d in draws],
    )

    # 6. figure
    if figure:
        t = time.perf_counter()
        directory = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="symmetry_"))
        kv = f"_kv{kv_heads}" if kv_heads is not None else ""
        result.figure, result.point_colors = _figure(result, directory, f"symmetry_{name}{kv}")
        seconds["figure"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    log.info("%s", result.table())
    return result
