"""The PCA of a baseline run: :func:`pca_project` fits it on the baseline's snapshots only and
projects every run into it (:class:`PCAProjection`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .trajectory import Trajectory

__all__ = ["PCAProjection", "pca_project"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PCAProjection:
    """The result of :func:`pca_project`.

    Attributes:
        coords: one ``[T_i, n_components]`` array per trajectory, in the order given.
        names: the trajectories' names.
        baseline: index of the run the PCA was fitted on.
        mean: ``[P]`` mean of the baseline's snapshots.
        components: ``[n_components, P]`` principal directions (unit rows).
        explained_variance: ``[n_components]`` variance of the baseline along each direction.
        explained_variance_ratio: the same as a fraction of the baseline's total variance.
    """

    coords: list[np.ndarray]
    names: list[str]
    baseline: int
    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray

    def __getitem__(self, name: str) -> np.ndarray:
        return self.coords[self.names.index(name)]


def _baseline_index(trajectories: Sequence[Trajectory], baseline: int | str) -> int:
    if isinstance(baseline, str):
        names = [t.name for t in trajectories]
        if baseline not in names:
            raise ValueError(f"no trajectory named '{baseline}' (have: {', '.join(names)})")
        return names.index(baseline)
    if not -len(trajectories) <= baseline < len(trajectories):
        raise ValueError(f"baseline index {baseline} out of range for {len(trajectories)} trajectories")
    return baseline % len(trajectories)


def pca_project(
    trajectories: Trajectory | Sequence[Trajectory], *, baseline: int | str = 0, n_components: int = 2
) -> PCAProjection:
    """Fit a PCA on the baseline run's snapshots only and project every run into it.

    The PCA is an SVD of the baseline's centred ``[T, P]`` snapshots (float64). Signs are fixed
    so that the baseline ends at a non-negative coordinate on every component (it moves left to
    right and bottom to top). Directions the baseline does not span get zero variance.

    Args:
        trajectories: the runs (all with the same number of parameters).
        baseline: index or name of the run that defines the axes (e.g. ``"Adam"``).
        n_components: dimensions of the projection.
    """
    runs = [trajectories] if isinstance(trajectories, Trajectory) else list(trajectories)
    if not runs:
        raise ValueError("no trajectories given")
    b = _baseline_index(runs, baseline)
    size = runs[b].num_params
    bad = [f"'{t.name}' ({t.num_params})" for t in runs if t.num_params != size]
    if bad:
        raise ValueError(
            f"all trajectories need {size} parameters like the baseline '{runs[b].name}'; got {', '.join(bad)}"
        )
    x = runs[b].params.astype(np.float64)
    if x.shape[0] < 2:
        raise ValueError(f"the baseline '{runs[b].name}' needs at least 2 snapshots for a PCA, has {x.shape[0]}")
    mean = x.mean(axis=0)
    centred = x - mean
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    k = int(n_components)
    if k < 1:
        raise ValueError(f"n_components must be positive, got {n_components}")
    comps = np.zeros((k, size))
    have = min(k, vt.shape[0])
    comps[:have] = vt[:have]
    variance = np.zeros(k)
    variance[:have] = sv[:have] ** 2 / (x.shape[0] - 1)
    total = float((sv**2).sum() / (x.shape[0] - 1))
    ratio = variance / total if total > 0 else np.zeros(k)
    end = centred[-1] @ comps.T
    comps *= np.where(end < 0, -1.0, 1.0)[:, None]
    coords = [(t.params.astype(np.float64) - mean) @ comps.T for t in runs]
    log.debug("PCA on '%s' (%d snapshots): explained variance ratio %s", runs[b].name, x.shape[0], ratio)
    return PCAProjection(coords, [t.name for t in runs], b, mean, comps, variance, ratio)
