"""Parameter trajectories: record them, project them with PCA, plot them (the paper's Fig. 4).

- :class:`TrajectoryRecorder` collects flat parameter snapshots (float32) during any training
  loop — call it every step, or :meth:`~TrajectoryRecorder.attach` it to the optimizer — and,
  when the optimizer is a :class:`nowcast.NiNo` wrapper, notes which steps were nowcast jumps.
- :class:`Trajectory` holds one run: steps ``[T]``, parameters ``[T, P]``, jump steps, metrics.
- :func:`pca_project` fits a 2-D PCA on the *baseline* run only (e.g. Adam) and projects every
  run into it; :func:`plot_trajectories` draws them together (Fig. 4a).
- :func:`embedding_trajectory` turns a trajectory into a sequence of graph embeddings from a
  :class:`nowcast.NiNoModel` (mean-pooled node and edge states after message passing, one per
  window of ``ctx`` consecutive snapshots); :func:`plot_embeddings` draws their PCA (Fig. 4b,c).

Only numpy is imported with this package; torch, nowcast and matplotlib are imported where used.

The package, one concept per module: :mod:`~analysis.trajectories.trajectory` (the run and
its snapshots), :mod:`~analysis.trajectories.recorder` (collecting them during training),
:mod:`~analysis.trajectories.pca` (the baseline's PCA), :mod:`~analysis.trajectories.plot`
(the figures), :mod:`~analysis.trajectories.embeddings` (NiNo graph embeddings).
"""

from __future__ import annotations

from .embeddings import embedding_trajectory
from .pca import PCAProjection, pca_project
from .plot import plot_embeddings, plot_trajectories
from .recorder import TrajectoryRecorder
from .trajectory import Trajectory

__all__ = [
    "PCAProjection",
    "Trajectory",
    "TrajectoryRecorder",
    "embedding_trajectory",
    "pca_project",
    "plot_embeddings",
    "plot_trajectories",
]
