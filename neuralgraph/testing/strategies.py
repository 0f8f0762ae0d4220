"""Hypothesis strategies: random small models of every family, and permutations of their neurons.

* :func:`models` draws ``(model, inputs)``: a small model of a family (``"mlp"``, ``"convnet"``,
  ``"gpt2"``, ``"llama"``, ``"bert"``, ``"vit"``, ``"nanogpt"``, ``"modded_nanogpt"``,
  ``"traced"`` — the traced converter's grammar of residual, gated, attention and convolution
  blocks — or any converter registered with an ``example``) and the arguments of one forward call;
* :func:`permutations` draws a :class:`~neuralgraph.testing.Permutation` of a graph's neurons,
  ``"good"`` (from the declared symmetries) or ``"bad"`` (one of them broken, as
  :func:`neuralgraph.verify` breaks them).

Every choice is a hypothesis primitive, so a failing example shrinks: models toward the smallest
configuration, permutations toward a single swap of two units.

This module needs ``hypothesis`` (``pip install hypothesis``); the rest of
:mod:`neuralgraph.testing` does not.
"""

from __future__ import annotations

try:
    from hypothesis import reject
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError(
        "neuralgraph.testing.strategies needs the 'hypothesis' package: pip install hypothesis "
        "(the assertions of neuralgraph.testing work without it)"
    ) from None

import torch

from ..blocks import STAR
from ..errors import NeuralGraphError
from ..graph import NeuralGraph
from ..permutation import Permutation
from ..permute import param_index
from ..registry import convert
from ..symmetry import PermutableHeads, compose, from_segments
from ..verify_bad import moves_left_out, part_name, ways_to_break
from .draws import group_sizes, movable_symmetries
from .model_families import INPUT_BATCH, build_example, families, family, inert_blocks

__all__ = ["models", "examples", "permutations", "families"]

#: Widths up to which a segment's permutation is drawn whole with ``st.permutations``; wider
#: segments draw a few swaps or a seeded shuffle (a whole permutation of thousands of units
#: would outgrow hypothesis's example buffer).
WHOLE_PERMUTATION_WIDTH = 32

#: Most swaps drawn for a segment wider than :data:`WHOLE_PERMUTATION_WIDTH`.
MAX_SWAPS = 16


# ------------------------------------------------------------------------------------ models
@st.composite
def _example(draw, name: str, batch: int):
    rng = draw(st.randoms(use_true_random=False))
    seed = draw(st.integers(0, 2**32 - 1))
    try:
        example = build_example(name, rng, seed, batch=batch)
    except NeuralGraphError:  # the traced converter refuses some grammar models, with a reason
        reject()
    graph = example.graph
    if not _reads_alike(example):
        reject()
    symmetries = movable_symmetries(graph)
    ways = _ways(graph, symmetries, group_sizes(graph)) if symmetries else []
    # only models with a symmetry to keep and one to break, and no bias the outputs do not depend on
    # (a key bias, which softmax cancels, where the converter does not declare it): both kinds of
    # test have something to do, and a bad permutation changes the function
    biases = {side[0] for kind, _, side in ways if kind == "inconsistent" and graph.block(side[0]).kind == STAR}
    if not ways or inert_blocks(example, sorted(biases)):
        reject()
    return example


def _reads_alike(example) -> bool:
    """Whether ``neuralgraph.convert(model)`` (no ``arch=``) reads the model as its family's converter
    does. Only the ``sequential`` families can differ: their models have no converter of their own,
    and where the traced forward does not confirm the chain of layers (a convolution with ``"same"``
    padding of an even kernel pads explicitly, and the trace keeps the padded channels in place) the
    traced graph is used, with fewer symmetries. A test converting the drawn model itself gets the
    graph the draw was checked on."""
    if example.graph.arch != "sequential":
        return True
    try:
        return convert(example.model, lpe=0).arch == "sequential"
    except NeuralGraphError:
        return False


def _names(arch: str | None) -> list[str]:
    if arch is None:
        return families()
    return [arch]


def examples(arch: str | None = None, *, batch: int = INPUT_BATCH) -> st.SearchStrategy:
    """Like :func:`models`, drawing :class:`~neuralgraph.testing.model_families.Example` values:
    ``.model``, ``.inputs``, ``.graph`` (built with the family's converter, ``lpe=0``) and
    ``.family`` — saves converting the model again."""
    names = _names(arch)
    return st.sampled_from(names).flatmap(lambda name: _example(name, batch))


def models(arch: str | None = None, *, batch: int = INPUT_BATCH) -> st.SearchStrategy:
    """Draws ``(model, inputs)``: a small random model of family ``arch`` and one forward call's
    arguments (a tuple of positional or a dict of keyword arguments: ``model(*inputs)`` /
    ``model(**inputs)``).

    ``arch`` is a family of :func:`families` (``"mlp"``, ``"convnet"``, ``"gpt2"``, ``"llama"``,
    ``"bert"``, ``"vit"``, ``"nanogpt"``, ``"modded_nanogpt"``, ``"traced"``), any name of a
    registered converter with an ``example`` (one you registered with
    :func:`neuralgraph.build.register` included), or None for every family. The model is in eval mode
    with generic parameters (no two units alike, ReLU units active: a broken symmetry shows in
    its outputs) and declares at least one movable symmetry and one way to break it. The
    Hugging Face families need ``transformers``.
    """
    for name in _names(arch):  # fail at definition, with the registry's message, for unknown names
        family(name)
    return examples(arch, batch=batch).map(lambda e: (e.model, e.inputs))


# ------------------------------------------------------------------------------ permutations
def _swaps(width: int) -> st.SearchStrategy:
    pair = st.tuples(st.integers(0, width - 1), st.integers(0, width - 1))

    def apply(pairs) -> torch.Tensor:
        perm = torch.arange(width)
        for i, j in pairs:  # at most MAX_SWAPS transpositions
            perm[[i, j]] = perm[[j, i]]
        return perm

    return st.lists(pair, max_size=MAX_SWAPS).map(apply)


def _segment(width: int) -> st.SearchStrategy:
    """A permutation of ``range(width)``; shrinks toward the identity."""
    if width <= WHOLE_PERMUTATION_WIDTH:
        return st.permutations(range(width)).map(lambda p: torch.tensor(p, dtype=torch.long))
    shuffled = st.integers(0, 2**63 - 1).map(lambda s: torch.randperm(width, generator=torch.Generator().manual_seed(s)))
    return st.one_of(_swaps(width), shuffled)


@st.composite
def _base(draw, sym, sizes: dict[str, int]) -> torch.Tensor:
    """A base permutation of ``sym`` (units, or heads), never the identity: where every segment
    drew the identity, units 0 and 1 swap (the smallest permutation there is)."""
    segments, width = sym.layout(sizes)
    local = torch.stack([draw(_segment(width)) for _ in range(segments)])
    base = from_segments(local)
    if torch.equal(base, torch.arange(base.numel())):
        base[[0, 1]] = base[[1, 0]]
    return base


def _merge(perms: dict[str, torch.Tensor], extra: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = dict(perms)
    for name, perm in extra.items():
        out[name] = compose(out[name], perm) if name in out else perm
    return out


@st.composite
def _good(draw, graph: NeuralGraph, symmetries: list, sizes: dict[str, int]) -> Permutation:
    chosen = draw(st.lists(st.sampled_from(range(len(symmetries))), min_size=1, unique=True))
    perms: dict[str, torch.Tensor] = {}
    for i in sorted(chosen):
        perms = _merge(perms, symmetries[i].expand(draw(_base(symmetries[i], sizes)), sizes))
    names = [symmetries[i].name for i in sorted(chosen)]
    what = names[0] if len(names) == 1 else f"{len(names)} declared symmetries ({'; '.join(names)})"
    return Permutation(perms, kind="good", description=f"permute {what}")


def _left_out(graph: NeuralGraph, sym, side: tuple):
    """The first range the bad permutation leaves out that ``sym`` permutes."""
    block = graph.block(side[0])
    ranges = (block.src, block.dst) if side[1] == "slot" else ((block.src,) if side[1] == "src" else (block.dst,))
    return next(r for r in ranges if r.group in sym.groups)


def _moving(graph: NeuralGraph, sym, sizes: dict[str, int], base: torch.Tensor, side: tuple) -> torch.Tensor:
    """``base``, or where it leaves the range of ``side`` in place, the swap of the range's first
    unit with its neighbour in the same segment (so that leaving the range out breaks something)."""
    if moves_left_out(graph, sym.expand(base, sizes), side):
        return base
    r = _left_out(graph, sym, side)
    _, width = sym.layout(sizes)
    u = sym.base_unit(r.group, r.lo, sizes)
    v = u + 1 if (u + 1) % width else u - 1
    swapped = torch.arange(base.numel())
    swapped[[u, v]] = swapped[[v, u]]
    return swapped


@st.composite
def _bad(draw, graph: NeuralGraph, ways: list, sizes: dict[str, int]) -> Permutation:
    kind, sym, side = draw(st.sampled_from(ways))
    if kind == "inconsistent":
        base = _moving(graph, sym, sizes, draw(_base(sym, sizes)), side)
        what = (f"permute {sym.name} everywhere except tensor {side[2]} ({part_name(graph, side)}) of block '{side[0]}'"
                if side[1] == "slot" else f"permute {sym.name} everywhere except the {side[1]} side of block '{side[0]}'")
        return Permutation(sym.expand(base, sizes), skip=(side,), kind="bad", description=what)
    count, width = sym.cross_layout(sizes)
    a = draw(st.integers(0, count - 1))
    b = draw(st.integers(0, count - 2))
    b += b >= a  # another segment
    x = draw(st.integers(0, width - 1))
    y = x if isinstance(sym, PermutableHeads) else draw(st.integers(0, width - 1))
    where = "head" if isinstance(sym, PermutableHeads) else "segment"
    return Permutation(sym.cross_segment_at(sizes, a, x, b, y), kind="bad",
                       description=f"move unit {x} of {where} {a} of {sym.name} into {where} {b}")


def permutations(graph: NeuralGraph, kind: str = "good") -> st.SearchStrategy:
    """Draws a :class:`~neuralgraph.testing.Permutation` of ``graph``'s neurons.

    ``kind="good"``: one or more of the graph's declared symmetries, each drawn inside its
    segments (units within a head, heads within a grouped-query run, whole heads with their
    units): the network's function does not change. Never the identity; shrinks toward swapping
    units 0 and 1 of the first symmetry.

    ``kind="bad"``: one declared symmetry broken as :func:`neuralgraph.verify` breaks it: applied
    everywhere except one block side or one stacked tensor incident to its groups (the incoming
    weights of a unit move, its outgoing ones do not; queries move, keys do not), or one unit
    moved into another segment or head. The network's function changes (for generic parameters).
    Blocks the graph declares without effect are never the ones left out.

    Where the graph has nothing of the kind to draw (no symmetry moves a unit; no way to break
    one), the example is rejected (``hypothesis.reject``): draw models that have one.
    """
    if kind not in ("good", "bad"):
        raise ValueError(f"kind must be 'good' or 'bad', got {kind!r}")
    sizes = group_sizes(graph)
    symmetries = movable_symmetries(graph)
    if kind == "good":
        return _good(graph, symmetries, sizes) if symmetries else st.nothing()
    ways = _ways(graph, symmetries, sizes) if symmetries else []
    return _bad(graph, ways, sizes) if ways else st.nothing()


def _ways(graph: NeuralGraph, symmetries: list, sizes: dict[str, int]) -> list:
    """The verifier's ways to break ``symmetries`` (``(kind, symmetry, side)``), without the
    cross-segment moves the blocks cannot take: where each segment has a block of its own (a grouped
    convolution), moving a unit across segments is no permutation of the parameters at all (the
    graph rules it out; :func:`neuralgraph.verify` counts it inert)."""
    kept = []
    for kind, sym, side in ways_to_break(graph, symmetries, sizes, torch.Generator()):
        if kind == "cross-segment":
            try:
                param_index(graph, sym.cross_segment_at(sizes, 0, 0, 1, 0))
            except ValueError:
                continue
        kept.append((kind, sym, side))
    return kept
