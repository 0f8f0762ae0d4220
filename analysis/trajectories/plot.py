"""Plotting runs in the PCA of a baseline run: :func:`plot_trajectories` (the paper's Fig. 4a)
and :func:`plot_embeddings` for graph-embedding trajectories (Fig. 4b,c)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..draw import _new_figure, _save
from .pca import pca_project
from .trajectory import Trajectory

if TYPE_CHECKING:  # pragma: no cover
    from ..draw import SavedFigure

__all__ = ["plot_embeddings", "plot_trajectories"]


def plot_trajectories(
    trajectories: Trajectory | Sequence[Trajectory],
    path: str | Path,
    *,
    baseline: int | str = 0,
    title: str | None = None,
    axis_label: str = "PC",
    jump_label: str = "nowcast jump",
    dpi: int = 150,
) -> SavedFigure:
    """Plot runs in the 2-D PCA of the baseline run (the paper's Fig. 4a); writes PNG and PDF.

    Every run is a line with markers; its start (square) and end (diamond) are annotated, the
    snapshots right after nowcast jumps get a star and the jump itself a dashed segment. Axis
    labels give the share of the baseline's variance each component explains.

    Args:
        path: output file; its stem gets ``.png`` and ``.pdf``.
        baseline: index or name of the run the PCA is fitted on.

    Returns:
        the written files (:class:`analysis.draw.SavedFigure`).
    """
    runs = [trajectories] if isinstance(trajectories, Trajectory) else list(trajectories)
    proj = pca_project(runs, baseline=baseline)
    fig, ax = _new_figure((6.4, 5.0))
    from matplotlib.lines import Line2D

    colors = _run_colors(len(runs), proj.baseline)
    handles: list[Any] = []
    starts: list[np.ndarray] = []
    ends: list[tuple[np.ndarray, str, Any, int]] = []
    everything = np.concatenate(proj.coords)[:, :2]
    lo, hi = everything.min(axis=0), everything.max(axis=0)
    scale = float(np.abs(everything).max()) or 1.0
    for i, (run, xy) in enumerate(zip(runs, proj.coords)):
        color = colors[i]
        jumps = run.is_jump
        # a jump is the segment that ends at a post-jump snapshot: draw it dashed
        seg_jump = jumps[1:]
        pts = _broken_path(xy, seg_jump)  # the solid line skips the jump segments
        marker_every = max(1, len(run) // 60)
        (h,) = ax.plot(pts[:, 0], pts[:, 1], "-", color=color, lw=1.5, alpha=0.9, zorder=2, label=run.name)
        ax.plot(xy[::marker_every, 0], xy[::marker_every, 1], "o", color=color, ms=3, zorder=3)
        if seg_jump.any():
            idx = np.flatnonzero(seg_jump) + 1
            seg = np.stack([xy[idx - 1], xy[idx]], axis=1)  # [J, 2, 2]
            from matplotlib.collections import LineCollection

            ax.add_collection(LineCollection(seg, colors=[color], linestyles="--", linewidths=1.3, zorder=2))
            ax.plot(xy[idx, 0], xy[idx, 1], "*", color=color, ms=13, mec="black", mew=0.6, zorder=5)
        elif jumps.any():  # a jump at the first snapshot
            ax.plot(xy[jumps, 0], xy[jumps, 1], "*", color=color, ms=13, mec="black", mew=0.6, zorder=5)
        ax.plot(*xy[0], "s", color=color, ms=8, mec="black", mew=0.8, zorder=6)
        ax.plot(*xy[-1], "D", color=color, ms=8, mec="black", mew=0.8, zorder=6)
        ends.append((xy[-1], f"end ({run.name})", color, i))
        if not any(np.allclose(xy[0], s, rtol=0, atol=1e-6 * scale) for s in starts):
            ends.append((xy[0], "start", "black", 0))
            starts.append(xy[0])
        handles.append(h)
    # labels point toward the middle of the plot so that they stay inside the axes
    middle = (lo + hi) / 2
    for point, text, color, i in ends:
        right = point[0] > middle[0]
        up = point[1] <= middle[1]
        ax.annotate(
            text, point, xytext=(-8 if right else 8, (1 if up else -1) * (8 + 10 * (i % 3))),
            textcoords="offset points", fontsize=8, color=color, ha="right" if right else "left",
            va="bottom" if up else "top",
        )
    any_jump = any(r.is_jump.any() for r in runs)
    handles.append(Line2D([], [], ls="none", marker="s", color="grey", mec="black", label="start"))
    handles.append(Line2D([], [], ls="none", marker="D", color="grey", mec="black", label="end"))
    if any_jump:
        handles.append(Line2D([], [], ls="--", marker="*", ms=11, color="grey", mec="black", label=jump_label))
    ratio = proj.explained_variance_ratio
    ax.set_xlabel(f"{axis_label}1 ({100 * ratio[0]:.1f}% of {runs[proj.baseline].name}'s variance)")
    ax.set_ylabel(f"{axis_label}2 ({100 * ratio[1]:.1f}% of {runs[proj.baseline].name}'s variance)")
    ax.set_title(title or f"trajectories in the PCA of {runs[proj.baseline].name}")
    ax.legend(handles=handles, fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    ax.autoscale_view()
    labels = tuple(h.get_label() for h in handles)
    return _save(fig, path, dpi=dpi, legend=labels, info={"explained_variance_ratio": ratio.tolist()})


def _broken_path(xy: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """Points of a polyline with NaN rows inserted where segment ``i`` (``xy[i] -> xy[i+1]``) is a gap."""
    if not gaps.any():
        return xy
    insert_at = np.flatnonzero(gaps) + 1
    return np.insert(xy, insert_at, np.nan, axis=0)


def _run_colors(n: int, baseline: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    # the baseline is black-ish blue (C0); others follow the cycle
    order = [baseline] + [i for i in range(n) if i != baseline]
    colors: list[Any] = [None] * n
    for rank, i in enumerate(order):
        colors[i] = cmap(rank % 10)
    return colors


def plot_embeddings(
    embeddings: Trajectory | Sequence[Trajectory],
    path: str | Path,
    *,
    baseline: int | str = 0,
    title: str | None = None,
    dpi: int = 150,
) -> SavedFigure:
    """PCA plot of graph-embedding trajectories (from :func:`embedding_trajectory`), as the
    paper's Fig. 4b,c: the PCA is fitted on the baseline run's embeddings."""
    runs = [embeddings] if isinstance(embeddings, Trajectory) else list(embeddings)
    return plot_trajectories(
        runs, path, baseline=baseline, title=title or "NiNo graph embeddings (PCA)", axis_label="embedding PC", dpi=dpi
    )
