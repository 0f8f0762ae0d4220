"""Drawings of neural graphs: adjacency matrix, graphviz layout, t-SNE of positional encodings.

- :func:`draw_adjacency` — the ``N x N`` adjacency matrix coloured by edge type, with group
  boundaries and a legend naming the edge types (:mod:`neuralgraph.edge_types`). Graphs larger
  than ``max_nodes`` are cropped to a block of consecutive nodes. Built block by block (no
  ``edge_index``), so it works for graphs of any size.
- :func:`draw_graph` — nodes placed by a graphviz program (``dot`` by default) run on the DOT
  text pydot writes, nodes coloured by group (or role), edges by type. Needs graphviz's
  binaries (``apt-get install graphviz``); raises :class:`GraphvizNotFoundError` otherwise,
  and :class:`GraphTooLargeError` above ``max_nodes`` / ``max_edges``.
- :func:`draw_lpe` — the Laplacian positional encodings (``graph.pos``) embedded in 2-D with
  t-SNE (scikit-learn), coloured by group.

Every function writes a PNG and a PDF with the same stem and returns a :class:`SavedFigure`.
Figures are drawn on matplotlib's Agg canvas without pyplot (no global state, no display);
matplotlib, scikit-learn, networkx and pydot are imported inside the functions.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neuralgraph import edge_types as et

if TYPE_CHECKING:  # pragma: no cover
    from neuralgraph import NeuralGraph

__all__ = [
    "EDGE_TYPE_COLORS",
    "GraphTooLargeError",
    "GraphvizNotFoundError",
    "SavedFigure",
    "adjacency_matrix",
    "draw_adjacency",
    "draw_graph",
    "draw_lpe",
    "edge_type_label",
]

log = logging.getLogger(__name__)

EDGE_TYPE_COLORS: dict[str, str] = {
    "padding": "#dddddd",
    "linear": "#1f77b4",
    "bias": "#ff7f0e",
    "conv": "#2ca02c",
    "norm": "#d62728",
    "token_embedding": "#9467bd",
    "position_embedding": "#8c564b",
    "attn_query": "#e377c2",
    "attn_key": "#17becf",
    "attn_value": "#bcbd22",
    "residual": "#7f7f7f",
    "head": "#000000",
    "reserved": "#ffd700",
    "self_loop": "#c7c7c7",
}
"""Colour of every edge type (by its :data:`neuralgraph.edge_types.NAMES` name) in all drawings."""
_UNKNOWN_COLOR = "#ff00ff"


class GraphvizNotFoundError(RuntimeError):
    """Graphviz's layout program (``dot``, ``neato``, ...) is not installed / not on ``PATH``."""


class GraphTooLargeError(ValueError):
    """The graph is too large for the requested drawing."""


@dataclass(frozen=True)
class SavedFigure:
    """Files written by a drawing function.

    Attributes:
        png: the PNG file.
        pdf: the PDF file (same stem).
        legend: the legend's entries, in order.
        info: what the drawing shows (node window, perplexity, explained variance, ...).
    """

    png: Path
    pdf: Path
    legend: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def paths(self) -> tuple[Path, Path]:
        return (self.png, self.pdf)

    def __str__(self) -> str:
        return f"{self.png} and {self.pdf}"


# ------------------------------------------------------------------------------------ figures
def _new_figure(figsize: tuple[float, float]) -> tuple[Any, Any]:
    """A matplotlib figure on an Agg canvas (no pyplot, no global backend change) and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _stem(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() in (".png", ".pdf"):
        path = path.with_suffix("")
    return path


def _save(
    fig: Any, path: str | Path, *, dpi: int = 150, legend: tuple[str, ...] = (), info: dict | None = None
) -> SavedFigure:
    stem = _stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")
    # legends placed outside the axes must be inside the saved bounding box
    extra = [a for ax in fig.axes for a in ax.get_children() if type(a).__name__ == "Legend"]
    fig.savefig(png, dpi=dpi, bbox_inches="tight", bbox_extra_artists=extra)
    fig.savefig(pdf, bbox_inches="tight", bbox_extra_artists=extra)
    log.info("wrote %s and %s", png, pdf)
    return SavedFigure(png, pdf, tuple(legend), dict(info or {}))


def _type_color(edge_type: int) -> str:
    return EDGE_TYPE_COLORS.get(et.name(edge_type), _UNKNOWN_COLOR)


def _edge_rgba(types: np.ndarray) -> np.ndarray:
    """``[E, 4]`` RGBA colours of edge types (a table lookup)."""
    from matplotlib.colors import to_rgba

    table = np.array([to_rgba(_type_color(t)) for t in range(et.NUM_EDGE_TYPES)] + [to_rgba(_UNKNOWN_COLOR)])
    return table[np.where((types >= 0) & (types < et.NUM_EDGE_TYPES), types, et.NUM_EDGE_TYPES)]


def edge_type_label(edge_type: int) -> str:
    """Legend label of an edge type: its name and id, e.g. ``'linear (1)'``."""
    return f"{et.name(int(edge_type))} ({int(edge_type)})"


def _edge_legend(types: Any) -> list[Any]:
    from matplotlib.patches import Patch

    return [Patch(color=_type_color(int(t)), label=edge_type_label(int(t))) for t in types]


def _node_groups(graph: NeuralGraph) -> np.ndarray:
    """``[N]`` index of every node's group."""
    sizes = np.array([g.size for g in graph.groups], dtype=np.int64)
    return np.repeat(np.arange(sizes.size), sizes)


def _node_colors(graph: NeuralGraph, nodes: np.ndarray, color_by: str) -> tuple[np.ndarray, list[Any], str]:
    """RGBA per node of ``nodes`` and legend handles, by group (≤ 20 groups for 'auto') or role."""
    import matplotlib
    from matplotlib.lines import Line2D

    if color_by not in ("auto", "group", "role"):
        raise ValueError(f"color_by must be 'auto', 'group' or 'role', got {color_by!r}")
    group_of = _node_groups(graph)[nodes]
    shown = np.unique(group_of)
    if color_by == "auto":
        color_by = "group" if shown.size <= 20 else "role"
    cmap = matplotlib.colormaps["tab20"]
    if color_by == "group":
        labels = [graph.groups[i].name for i in shown]
        key = np.searchsorted(shown, group_of)
    else:  # one colour per role, in order of first appearance
        roles = [g.role for g in graph.groups]
        labels = list(dict.fromkeys(roles[i] for i in shown))
        per_group = np.array([labels.index(r) if r in labels else 0 for r in roles], dtype=np.int64)
        key = per_group[group_of]
    palette = np.array([cmap(i % 20) for i in range(len(labels))])
    handles = [
        Line2D([], [], ls="none", marker="o", color=palette[i], label=label) for i, label in enumerate(labels[:25])
    ]
    if len(labels) > 25:
        handles.append(Line2D([], [], ls="none", label=f"... {len(labels) - 25} more groups"))
    return palette[key], handles, color_by


# ------------------------------------------------------------------------------------ adjacency
def _window(graph: NeuralGraph, nodes: tuple[int, int] | None, max_nodes: int) -> tuple[int, int, bool]:
    n = graph.num_nodes
    if nodes is None:
        lo, hi = 0, n
    else:
        lo, hi = int(nodes[0]), int(nodes[1])
        if not 0 <= lo < hi <= n:
            raise ValueError(f"nodes=({lo}, {hi}) is not a node range of this graph (0 <= start < stop <= {n})")
    cropped = hi - lo > max_nodes
    if cropped:
        log.warning(
            "the graph has %d nodes in the requested range, more than max_nodes=%d: drawing nodes %d..%d only "
            "(pass nodes=(start, stop) to choose the block)", hi - lo, max_nodes, lo, lo + max_nodes - 1,
        )
        hi = lo + max_nodes
    return lo, hi, cropped or (lo, hi) != (0, n)


def adjacency_matrix(graph: NeuralGraph, nodes: tuple[int, int] | None = None) -> np.ndarray:
    """``[n, n]`` int16 matrix of the edge type from node ``lo + i`` to ``lo + j`` (-1: no edge)
    for the node range ``nodes = (lo, hi)`` (default: all nodes).

    Filled block by block with slices (a dense block is one rectangle, a star block one row
    segment, a diagonal block one strided diagonal), never per edge. Where a multigraph has
    several edges between two nodes, the later block's type is shown.
    """
    lo, hi = (0, graph.num_nodes) if nodes is None else (int(nodes[0]), int(nodes[1]))
    if not 0 <= lo <= hi <= graph.num_nodes:
        raise ValueError(f"nodes=({lo}, {hi}) is not a node range of this graph (0..{graph.num_nodes})")
    out = np.full((hi - lo, hi - lo), -1, dtype=np.int16)
    for b in graph.blocks:
        s0, s1 = max(b.src.start, lo), min(b.src.stop, hi)
        d0, d1 = max(b.dst.start, lo), min(b.dst.stop, hi)
        if b.kind == "diagonal":
            first = max(s0 - b.src.start, d0 - b.dst.start)
            last = min(s1 - b.src.start, d1 - b.dst.start)
            if last > first:
                i = np.arange(first, last)
                out[b.src.start + i - lo, b.dst.start + i - lo] = b.edge_type
        elif s1 > s0 and d1 > d0:  # dense: a rectangle; star: its one source row
            out[s0 - lo : s1 - lo, d0 - lo : d1 - lo] = b.edge_type
    return out


def draw_adjacency(
    graph: NeuralGraph,
    path: str | Path,
    *,
    nodes: tuple[int, int] | None = None,
    max_nodes: int = 2000,
    title: str | None = None,
    group_labels: bool = True,
    dpi: int = 200,
) -> SavedFigure:
    """Draw the adjacency matrix (rows: source nodes, columns: target nodes) coloured by edge type.

    Args:
        graph: the neural graph.
        path: output file; its stem gets ``.png`` and ``.pdf``.
        nodes: ``(start, stop)`` node range to draw (default: all).
        max_nodes: cap on the drawn nodes; a larger range is cropped to its first ``max_nodes``
            nodes, with a warning and a note in the title.
        group_labels: name the node groups on the axes (when at most 40 are shown).

    Returns:
        :class:`SavedFigure`; ``legend`` names the edge types present in the drawn block,
        ``info`` holds ``nodes`` (the drawn range), ``cropped`` and ``edge_types`` (ids).
    """
    from matplotlib.colors import ListedColormap

    lo, hi, partial = _window(graph, nodes, max_nodes)
    matrix = adjacency_matrix(graph, (lo, hi))
    present = np.unique(matrix[matrix >= 0]).astype(int)
    # colour index: 0 for "no edge", 1.. for the present types
    lookup = np.zeros(int(matrix.max(initial=0)) + 2, dtype=np.int16)
    lookup[present + 1] = np.arange(1, present.size + 1)
    image = lookup[matrix + 1]
    cmap = ListedColormap(["white"] + [_type_color(int(t)) for t in present])

    n = hi - lo
    size = float(np.clip(3.0 + n / 40, 5.0, 11.0))
    fig, ax = _new_figure((size + 2.5, size))
    ax.imshow(image, cmap=cmap, vmin=-0.5, vmax=present.size + 0.5, interpolation="nearest", aspect="equal")
    starts = np.array([g.start for g in graph.groups], dtype=np.int64)
    stops = np.array([g.stop for g in graph.groups], dtype=np.int64)
    inside = (stops > lo) & (starts < hi)
    bounds = np.clip(starts[inside][1:], lo, hi) - lo - 0.5
    ax.hlines(bounds, -0.5, n - 0.5, colors="#999999", linewidths=0.3)
    ax.vlines(bounds, -0.5, n - 0.5, colors="#999999", linewidths=0.3)
    shown = np.flatnonzero(inside)
    if group_labels and 0 < shown.size <= 40:
        centers = (np.clip(starts[shown], lo, hi) + np.clip(stops[shown], lo, hi)) / 2 - lo - 0.5
        names = [graph.groups[i].name for i in shown]
        ax.set_yticks(centers, names, fontsize=6)
        ax.set_xticks(centers, names, fontsize=6, rotation=90)
    ax.set_xlabel("target node")
    ax.set_ylabel("source node")
    handles = _edge_legend(present)
    ax.legend(handles=handles, title="edge type", fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    where = f"nodes {lo}..{hi - 1} of {graph.num_nodes}" if partial else f"{graph.num_nodes} nodes"
    ax.set_title(title or f"{graph.arch}: adjacency by edge type ({where}, {int((matrix >= 0).sum())} edges shown)")
    info = {"nodes": (lo, hi), "cropped": partial, "edge_types": present.tolist()}
    return _save(fig, path, dpi=dpi, legend=tuple(h.get_label() for h in handles), info=info)


# ------------------------------------------------------------------------------------ graphviz
def _find_graphviz(prog: str) -> str:
    found = shutil.which(prog)
    if found is None:
        raise GraphvizNotFoundError(
            f"draw_graph needs graphviz's '{prog}' program, which is not on PATH. Install graphviz "
            "(Debian/Ubuntu: `apt-get install graphviz`; conda: `conda install graphviz`; macOS: "
            "`brew install graphviz`), or use draw_adjacency / draw_lpe, which do not need it"
        )
    return found


def _unique_edges(graph: NeuralGraph, self_loops: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source, target and type of every distinct directed node pair (the last block's type wins)."""
    index = graph.edge_index.numpy()
    types = graph.edge_type.numpy()
    keep = np.ones(types.size, dtype=bool) if self_loops else types != et.SELF_LOOP
    src, dst, types = index[0, keep], index[1, keep], types[keep]
    key = src * graph.num_nodes + dst
    # np.unique keeps the first occurrence: reverse so that the last edge's type is the one kept
    _, first = np.unique(key[::-1], return_index=True)
    pick = np.sort(key.size - 1 - first)
    return src[pick], dst[pick], types[pick]


def _graphviz_positions(dot_text: str, exe: str, n: int, timeout: float) -> np.ndarray:
    """Run graphviz on DOT text and read node centres from its ``-Tplain`` output."""
    try:
        run = subprocess.run([exe, "-Tplain"], input=dot_text, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise GraphTooLargeError(
            f"graphviz ({exe}) did not finish within {timeout:.0f} s: draw a smaller graph (graph.layers()[i], "
            "graph.subgraph(...)) or use draw_adjacency"
        ) from None
    if run.returncode != 0:
        raise RuntimeError(f"graphviz ({exe}) failed with exit code {run.returncode}: {run.stderr.strip()[:500]}")
    lines = [line.split() for line in run.stdout.splitlines() if line.startswith("node ")]
    ids = np.array([int(parts[1].strip('"')) for parts in lines], dtype=np.int64)
    xy = np.array([[float(parts[2]), float(parts[3])] for parts in lines], dtype=np.float64).reshape(-1, 2)
    if ids.size != n:
        raise RuntimeError(f"graphviz returned {ids.size} node positions for {n} nodes")
    pos = np.empty((n, 2))
    pos[ids] = xy
    return pos


def draw_graph(
    graph: NeuralGraph,
    path: str | Path,
    *,
    prog: str = "dot",
    rankdir: str = "LR",
    self_loops: bool = False,
    color_by: str = "auto",
    max_nodes: int = 600,
    max_edges: int = 30_000,
    timeout: float = 120.0,
    title: str | None = None,
    dpi: int = 200,
) -> SavedFigure:
    """Draw the graph with a graphviz layout: nodes coloured by group, edges coloured by type.

    The layout comes from graphviz's ``prog`` (``dot``: layered, inputs to outputs along
    ``rankdir``; ``neato``, ``fdp``, ``sfdp``: force-directed) run on the DOT text pydot
    writes for the graph (distinct node pairs, self-loops left out unless ``self_loops``).
    Matplotlib then draws every edge as a straight segment in its type's colour. Attention key
    edges (which point from the query-key units back to the input stream) do not constrain
    ``dot``'s ranking, so the layout runs from inputs to outputs.

    Raises:
        GraphvizNotFoundError: ``prog`` is not installed (``apt-get install graphviz``).
        GraphTooLargeError: more than ``max_nodes`` nodes or ``max_edges`` edges (a drawing that
            large is unreadable and graphviz slow): draw ``graph.layers()[i]`` or
            ``graph.subgraph([...])``, or use :func:`draw_adjacency`.
    """
    exe = _find_graphviz(prog)
    n = graph.num_nodes
    src, dst, types = _unique_edges(graph, self_loops)
    if n > max_nodes or src.size > max_edges:
        raise GraphTooLargeError(
            f"the {graph.arch} graph has {n} nodes and {src.size} edges; draw_graph draws at most "
            f"max_nodes={max_nodes} nodes and max_edges={max_edges} edges. Draw a part "
            "(graph.layers()[i] or graph.subgraph([...])), raise the caps, or use draw_adjacency"
        )
    import networkx as nx

    nxg = nx.DiGraph()
    nxg.add_nodes_from(range(n))
    # W_k edges run backwards (qk unit -> input stream): they must not bend the ranking
    backwards = types == et.ATTN_KEY
    nxg.add_edges_from(zip(src[~backwards].tolist(), dst[~backwards].tolist()))
    nxg.add_edges_from(zip(src[backwards].tolist(), dst[backwards].tolist()), constraint="false")
    nxg.graph["graph"] = {"rankdir": rankdir, "splines": "false", "nodesep": "0.08", "ranksep": "1.2"}
    nxg.graph["node"] = {"shape": "point", "width": "0.05"}
    dot_text = nx.nx_pydot.to_pydot(nxg).to_string()
    pos = _graphviz_positions(dot_text, exe, n, timeout)

    from matplotlib.collections import LineCollection

    span = np.ptp(pos, axis=0) + 1e-9
    aspect = float(np.clip(span[0] / span[1], 0.5, 3.0))
    fig, ax = _new_figure((min(14.0, 6.0 * aspect) + 3.0, 6.0 if aspect >= 1 else 6.0 / aspect))
    rgba = _edge_rgba(types)
    rgba[:, 3] = float(np.clip(8.0 / np.sqrt(max(src.size, 1)), 0.08, 0.9))
    ax.add_collection(LineCollection(np.stack([pos[src], pos[dst]], axis=1), colors=rgba, linewidths=0.6, zorder=1))
    nodes = np.arange(n)
    colors, group_handles, used = _node_colors(graph, nodes, color_by)
    ax.scatter(pos[:, 0], pos[:, 1], c=colors, s=float(np.clip(3000 / max(n, 1), 4, 60)), edgecolors="black",
               linewidths=0.3, zorder=2)
    ax.autoscale_view()
    ax.set_axis_off()
    present = np.unique(types)
    edge_handles = _edge_legend(present)
    first = ax.legend(handles=edge_handles, title="edge type", fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.add_artist(first)
    ax.legend(handles=group_handles, title=f"node {used}", fontsize=7, loc="lower left", bbox_to_anchor=(1.01, 0.0))
    ax.set_title(title or f"{graph.arch}: {n} nodes, {src.size} edges ({prog} layout)")
    labels = tuple(h.get_label() for h in edge_handles + group_handles)
    info = {"prog": prog, "nodes": n, "edges": int(src.size), "edge_types": present.tolist(), "color_by": used}
    return _save(fig, path, dpi=dpi, legend=labels, info=info)


# ------------------------------------------------------------------------------------ t-SNE of LPE
def draw_lpe(
    graph: NeuralGraph,
    path: str | Path,
    *,
    perplexity: float = 30.0,
    seed: int = 0,
    max_nodes: int = 3000,
    color_by: str = "auto",
    title: str | None = None,
    dpi: int = 200,
) -> SavedFigure:
    """Embed the nodes' Laplacian positional encodings (``graph.pos``) in 2-D with t-SNE.

    ``perplexity`` is clipped to ``(N - 1) / 3`` for small graphs (t-SNE needs it below the
    number of points); graphs with fewer than 4 nodes are drawn at their first two encoding
    columns. Above ``max_nodes`` nodes a random sample of ``max_nodes`` (seeded) is drawn.

    Raises:
        ValueError: the graph has no positional encodings (converted with ``lpe=0``).
    """
    if graph.pos is None:
        raise ValueError(
            f"the {graph.arch} graph has no positional encodings (converted with lpe=0): "
            "convert it with neuralgraph.convert(model, lpe=8)"
        )
    pos = graph.pos.numpy().astype(np.float64)
    n = pos.shape[0]
    nodes = np.arange(n)
    if n > max_nodes:
        rng = np.random.default_rng(seed)
        nodes = np.sort(rng.choice(n, size=max_nodes, replace=False))
        log.warning("draw_lpe: %d nodes, drawing a random sample of max_nodes=%d", n, max_nodes)
    x = pos[nodes]
    used_perplexity = None
    if nodes.size < 4:
        xy = np.zeros((nodes.size, 2))
        xy[:, : min(2, x.shape[1])] = x[:, :2]
        method = "first two encoding columns"
    else:
        from sklearn.manifold import TSNE

        used_perplexity = float(min(perplexity, (nodes.size - 1) / 3))
        tsne = TSNE(
            n_components=2,
            perplexity=used_perplexity,
            init="pca" if x.shape[1] >= 2 else "random",
            learning_rate="auto",
            random_state=seed,
        )
        xy = tsne.fit_transform(x)
        method = f"t-SNE, perplexity {used_perplexity:.3g}"
    fig, ax = _new_figure((7.5, 5.5))
    colors, handles, used = _node_colors(graph, nodes, color_by)
    ax.scatter(xy[:, 0], xy[:, 1], c=colors, s=float(np.clip(4000 / max(nodes.size, 1), 6, 60)), edgecolors="black",
               linewidths=0.3)
    ax.legend(handles=handles, title=f"node {used}", fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax.set_xlabel("t-SNE 1" if used_perplexity is not None else "LPE 1")
    ax.set_ylabel("t-SNE 2" if used_perplexity is not None else "LPE 2")
    sample = f", {nodes.size} of {n} nodes" if nodes.size < n else f", {n} nodes"
    distinct = int(np.unique(np.round(x, 6), axis=0).shape[0])  # twins share their encodings
    ax.set_title(
        title or f"{graph.arch}: Laplacian positional encodings\n({method}{sample}, {distinct} distinct encodings)"
    )
    info = {
        "perplexity": used_perplexity,
        "nodes": int(nodes.size),
        "distinct": distinct,
        "color_by": used,
        "method": method,
    }
    return _save(fig, path, dpi=dpi, legend=tuple(h.get_label() for h in handles), info=info)
