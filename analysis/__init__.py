"""analysis: neuron-permutation symmetry experiments, trajectory PCA and graph drawings.

- :func:`symmetry_experiment` (:mod:`analysis.symmetry`): good vs bad neuron permutations of
  attention models, random-GNN graph embeddings, logistic-regression separability, naive vs
  correct graph (``docs/analysis_symmetry.md``).
- :mod:`analysis.trajectories`: :class:`TrajectoryRecorder` collects parameter snapshots during
  training (noting :class:`nowcast.NiNo` jumps), :func:`pca_project` / :func:`plot_trajectories`
  show runs in the PCA of a baseline run, :func:`embedding_trajectory` / :func:`plot_embeddings`
  do the same for NiNo graph embeddings (the paper's Fig. 4).
- :mod:`analysis.draw`: :func:`draw_adjacency`, :func:`draw_graph` (graphviz),
  :func:`draw_lpe` (t-SNE of positional encodings).
- ``analysis`` / ``python -m analysis`` on the command line (:mod:`analysis.cli`).

See ``docs/analysis.md``. Importing the package stays light: each name's submodule (and with it torch,
matplotlib or scikit-learn) is imported when the name is first used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .draw import (
        EDGE_TYPE_COLORS,
        GraphTooLargeError,
        GraphvizNotFoundError,
        SavedFigure,
        adjacency_matrix,
        draw_adjacency,
        draw_graph,
        draw_lpe,
        edge_type_label,
    )
    from .symmetry import SymmetryResult, symmetry_experiment
    from .trajectories import (
        PCAProjection,
        Trajectory,
        TrajectoryRecorder,
        embedding_trajectory,
        pca_project,
        plot_embeddings,
        plot_trajectories,
    )

_LAZY = {
    **dict.fromkeys(
        ("EDGE_TYPE_COLORS", "GraphTooLargeError", "GraphvizNotFoundError", "SavedFigure", "adjacency_matrix",
         "draw_adjacency", "draw_graph", "draw_lpe", "edge_type_label"),
        "draw",
    ),
    **dict.fromkeys(
        ("PCAProjection", "Trajectory", "TrajectoryRecorder", "embedding_trajectory", "pca_project",
         "plot_embeddings", "plot_trajectories"),
        "trajectories",
    ),
    "symmetry_experiment": "symmetry",
    "SymmetryResult": "symmetry",
}
"""Where each public name lives. Submodules are imported on first access, so that ``import analysis``
does not load torch, matplotlib or scikit-learn."""

__all__ = [
    "EDGE_TYPE_COLORS",
    "GraphTooLargeError",
    "GraphvizNotFoundError",
    "PCAProjection",
    "SavedFigure",
    "SymmetryResult",
    "Trajectory",
    "TrajectoryRecorder",
    "adjacency_matrix",
    "draw_adjacency",
    "draw_graph",
    "draw_lpe",
    "edge_type_label",
    "embedding_trajectory",
    "pca_project",
    "plot_embeddings",
    "plot_trajectories",
    "symmetry_experiment",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'analysis' has no attribute '{name}'")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
