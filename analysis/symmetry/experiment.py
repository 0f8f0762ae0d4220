"""The symmetry experiment's runner: :func:`symmetry_experiment` runs its stages in order (build
the model, draw permutations, label them by running the model, embed their graphs, classify,
draw the figure) and collects everything in a :class:`~analysis.symmetry.result.SymmetryResult`."""

from __future__ import annotations

import copy
import logging
import math
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import neuralgraph as ng
import neuralgraph.build as ngb
from neuralgraph.verify import model_outputs

from .classifier import classify
from .embedding import embed_samples, naive_graph
from .figure import scatter_figure
from .models import build_model, check_config, redraw_parameters
from .permutations import BAD_KINDS, DEFAULT_BAD_KINDS, GOOD_KIND, Draw, draw_permutations
from .result import SymmetryResult

__all__ = ["symmetry_experiment"]

log = logging.getLogger(__name__)


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
    """Run the permutation-symmetry experiment on one ``arch`` layer (see :mod:`analysis.symmetry`).

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
        node_features: ``"invariant"`` (default), ``"lpe"`` or ``"none"`` (see :mod:`analysis.symmetry`).
        lpe: spectral node-feature columns.
        hidden, gnn_layers: the random GNN's size (the paper: 32 and 3).
        heldout: fraction of samples held out for ``heldout_accuracy``.
        figure: draw the figure.

    Raises ``ValueError`` for an unsupported ``arch``, ``kv_heads`` on an architecture without
    grouped-query attention, or an invalid configuration.
    """
    t0 = time.perf_counter()
    name = check_config(arch, width, heads, kv_heads, layers, n)
    _check_options(bad_kinds, features, node_features, good_fraction)
    inner = 4 * width if inner is None else int(inner)
    torch_gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    seconds: dict[str, float] = {}

    setup = _build(name, width, heads, kv_heads, layers, inner, node_features=node_features, lpe=lpe,
                   tolerance=tolerance, generator=torch_gen)
    seconds["build"] = time.perf_counter() - t0

    t = time.perf_counter()
    draws, vectors = draw_permutations(setup.graph, setup.theta, torch_gen, rng, n=n, good_fraction=good_fraction,
                                       bad_kinds=bad_kinds, name=name)
    seconds["permute"] = time.perf_counter() - t

    t = time.perf_counter()
    deviations, labels, intended, kinds = _label(setup, vectors, draws)
    seconds["label"] = time.perf_counter() - t
    _log_labels(name, labels, intended, deviations, setup.tolerance)

    t = time.perf_counter()
    graphs = {"correct": (setup.graph, None), "naive": (setup.naive, setup.gather)}
    embeddings, references, distances = embed_samples(
        graphs, setup.theta, vectors, node_features=node_features, lpe=lpe, gnn_seed=seed + 1, hidden=hidden,
        gnn_layers=gnn_layers, bidirectional=bidirectional,
    )
    seconds["embed"] = time.perf_counter() - t

    t = time.perf_counter()
    accuracy, held, kind_acc, raw = classify(embeddings, references, labels, kinds, features=features, seed=seed,
                                             heldout=heldout)
    seconds["classify"] = time.perf_counter() - t

    result = SymmetryResult(
        arch=name, n=n, width=width, heads=heads, kv_heads=kv_heads, layers=layers, seed=seed, labels=labels,
        kinds=kinds, intended=intended, deviations=deviations, tolerance=float(setup.tolerance), accuracy=accuracy,
        heldout_accuracy=held, embeddings=embeddings, distances=distances, kind_accuracy=kind_acc,
        references=references, embedding_accuracy=raw, features=features, bidirectional=bidirectional,
        naive_graph=setup.naive_how, node_features=node_features, seconds=seconds, model=setup.model,
        graph=setup.graph, inputs=setup.inputs, permutations=[(d.perms, d.skip) for d in draws],
    )
    if figure:
        t = time.perf_counter()
        result.figure, result.point_colors = _write_figure(result, out_dir)
        seconds["figure"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    log.info("%s", result.table())
    return result


# ---------------------------------------------------------------------------------------- stages
def _check_options(bad_kinds: Sequence[str], features: str, node_features: str, good_fraction: float) -> None:
    """``ValueError`` for unknown kinds of bad permutations, features or node features, or a
    ``good_fraction`` outside (0, 1)."""
    unknown = [k for k in bad_kinds if k not in BAD_KINDS]
    if unknown or not bad_kinds:
        raise ValueError(f"unknown or no bad_kinds {unknown or list(bad_kinds)}; known: {', '.join(BAD_KINDS)}")
    if features not in ("difference", "embedding"):
        raise ValueError(f"features must be 'difference' or 'embedding', got {features!r}")
    if node_features not in ("invariant", "lpe", "none"):
        raise ValueError(f"node_features must be 'invariant', 'lpe' or 'none', got {node_features!r}")
    if not 0.0 < good_fraction < 1.0:
        raise ValueError(f"good_fraction must lie strictly between 0 and 1, got {good_fraction}")


@dataclass
class _Setup:
    """Stage 1: the float64 model with its random parameters, its correct and naive graphs, the
    inputs it is run on and its outputs on them."""

    model: nn.Module
    theta: torch.Tensor
    graph: Any
    naive: Any
    gather: torch.Tensor | None
    naive_how: str
    tolerance: float
    inputs: Any
    reference: torch.Tensor
    scale: float


def _build(name: str, width: int, heads: int, kv_heads: int | None, layers: int, inner: int, *,
           node_features: str, lpe: int, tolerance: float | None, generator: torch.Generator) -> _Setup:
    """The model, float64, random parameters (the constructors' own random draws are overwritten
    and kept away from the caller's global generator), its graphs and reference outputs."""
    with torch.random.fork_rng(devices=[]):
        model = build_model(name, width, heads, kv_heads, layers, inner).to(torch.float64).eval()
    redraw_parameters(model, generator)
    theta = ng.flatten_params(model)
    lpe_cols = lpe if node_features == "lpe" else 0
    graph = ng.convert(model, lpe=lpe_cols)
    naive, gather, naive_how = naive_graph(model, name, lpe_cols)
    converter = ngb.get_converter(name)
    if tolerance is None:
        tolerance = max(1e-8, converter.verify_rtol or 0.0)
    inputs = converter.example_inputs(model, graph, generator, 8)
    reference = model_outputs(model, inputs)
    scale = float(reference.abs().max()) + 1e-30
    return _Setup(model, theta, graph, naive, gather, naive_how, tolerance, inputs, reference, scale)


def _label(setup: _Setup, vectors: torch.Tensor,
           draws: Sequence[Draw]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run the model carrying each permuted vector: ``[n]`` relative output changes
    ``max|y' - y| / max|y|``, measured labels (1 = within the tolerance), intended labels, kinds."""
    moved = copy.deepcopy(setup.model)
    deviations = np.empty(vectors.shape[0])
    for i, vec in enumerate(vectors):
        ng.load_params(moved, vec)
        deviations[i] = float((model_outputs(moved, setup.inputs) - setup.reference).abs().max()) / setup.scale
    del moved
    labels = (deviations <= setup.tolerance).astype(np.int64)
    intended = np.array([d.kind == GOOD_KIND for d in draws], dtype=np.int64)
    kinds = np.array([d.kind for d in draws])
    return deviations, labels, intended, kinds


def _write_figure(result: SymmetryResult, out_dir: str | Path | None) -> tuple[Path, dict[str, np.ndarray]]:
    """The figure in ``out_dir`` (default: a new temporary directory), named after the configuration."""
    directory = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="symmetry_"))
    kv = f"_kv{result.kv_heads}" if result.kv_heads is not None else ""
    return scatter_figure(result, directory, f"symmetry_{result.arch}{kv}")


def _log_labels(name: str, labels: np.ndarray, intended: np.ndarray, deviations: np.ndarray,
                tolerance: float) -> None:
    disagree = int((labels != intended).sum())
    if disagree:
        log.info("%s: %d of %d samples behave otherwise than the kind they were drawn as", name, disagree,
                 len(labels))
    good_dev = deviations[labels == 1]
    bad_dev = deviations[labels == 0]
    log.info("%s: %d function-preserving (largest change %.1e), %d function-changing (smallest change %.1e), "
             "tolerance %.0e", name, len(good_dev), good_dev.max(initial=0.0), len(bad_dev),
             bad_dev.min(initial=math.inf), tolerance)
