"""The separability test: a logistic regression, good vs bad, on the graph embeddings or on their
log distance from the unpermuted graph's embedding."""

from __future__ import annotations

import logging
import math

import numpy as np

from .embedding import CONSTRUCTIONS

__all__ = ["ROUNDOFF_FLOOR", "classify", "difference_features"]

log = logging.getLogger(__name__)

ROUNDOFF_FLOOR = 1e-12
"""Embedding changes below this (relative to the embedding's RMS) count as round-off."""


def difference_features(z: np.ndarray, z0: np.ndarray) -> np.ndarray:
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



def classify(
    embeddings: dict[str, np.ndarray], references: dict[str, np.ndarray], labels: np.ndarray, kinds: np.ndarray,
    *, features: str, seed: int, heldout: float,
) -> tuple[dict[str, float], dict[str, float], dict[str, dict[str, float]], dict[str, float]]:
    """Per construction: fit-on-all accuracy, held-out accuracy, fit-on-all accuracy per kind of
    permutation, and the fit-on-all accuracy on the raw embeddings (the paper's protocol)."""
    accuracy, held, kind_acc, raw = {}, {}, {}, {}
    for c in CONSTRUCTIONS:
        x = difference_features(embeddings[c], references[c]) if features == "difference" else embeddings[c]
        accuracy[c], held[c], pred = _accuracies(x, labels, seed, heldout)
        kind_acc[c] = {str(k): float((pred[kinds == k] == labels[kinds == k]).mean()) for k in dict.fromkeys(kinds)}
        raw[c] = accuracy[c] if features == "embedding" else _accuracies(embeddings[c], labels, seed, heldout)[0]
    return accuracy, held, kind_acc, raw
