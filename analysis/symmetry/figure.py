"""The experiment's figure: a PCA scatter of the classifier's inputs coloured by the measured
label, one panel per graph construction (PNG and PDF)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .classifier import ROUNDOFF_FLOOR
from .embedding import CONSTRUCTIONS
from .result import SymmetryResult

__all__ = ["scatter_figure"]


def scatter_figure(result: SymmetryResult, out_dir: Path, stem: str) -> tuple[Path, dict[str, np.ndarray]]:
    """Write ``out_dir/stem.png`` and ``.pdf``; returns the PNG and, per construction, the RGBA face
    colour of every point in sample order."""
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
