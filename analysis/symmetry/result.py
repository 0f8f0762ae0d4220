"""What the symmetry experiment returns: :class:`SymmetryResult` and its summary table."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from neuralgraph import flatten_params
from neuralgraph.permute import permute_params

from .classifier import difference_features
from .embedding import CONSTRUCTIONS

__all__ = ["LABEL_COLORS", "SymmetryResult"]

LABEL_COLORS: dict[int, str] = {1: "#1a9850", 0: "#d73027"}
"""Scatter colours: label 1 (function-preserving) green, label 0 (function-changing) red."""


@dataclass
class SymmetryResult:
    """Outcome of :func:`~analysis.symmetry.symmetry_experiment`.

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
            (the paper's protocol; see :mod:`analysis.symmetry` for why it is not the headline number).
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
        perms, skip = self.permutations[i]
        return permute_params(self.graph, flatten_params(self.model), perms, skip=skip)

    def classifier_inputs(self, construction: str) -> np.ndarray:
        """The features the logistic regression saw for ``construction`` (before standardizing)."""
        z = self.embeddings[construction]
        return difference_features(z, self.references[construction]) if self.features == "difference" else z

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
