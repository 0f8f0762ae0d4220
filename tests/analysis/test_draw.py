"""analysis.draw: adjacency matrix, graphviz drawing, t-SNE of positional encodings."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import neuralgraph
from analysis import (
    GraphTooLargeError,
    GraphvizNotFoundError,
    adjacency_matrix,
    draw_adjacency,
    draw_graph,
    draw_lpe,
    edge_type_label,
)
from neuralgraph import edge_types as et
from neuralgraph import registry
from neuralgraph.examples import fm16, mlp

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None, reason="graphviz's 'dot' is not installed (apt-get install graphviz)"
)


def assert_real_figure(png, pdf):
    """Both files exist and are non-empty, and the PNG is not blank."""
    import matplotlib.image

    assert png.stat().st_size > 1000 and pdf.stat().st_size > 1000
    assert pdf.read_bytes().startswith(b"%PDF")
    assert matplotlib.image.imread(png)[..., :3].var() > 0


@pytest.fixture(scope="module")
def mlp_graph():
    torch.manual_seed(0)
    return neuralgraph.convert(mlp())


@pytest.fixture(scope="module")
def gpt2_graph():
    pytest.importorskip("transformers")
    converter = registry.get_converter("gpt2")
    return registry.convert(converter.example(random.Random(0)), arch="gpt2")


# ------------------------------------------------------------------------------------ adjacency
@pytest.mark.parametrize("which", ["mlp_graph", "gpt2_graph"])
def test_adjacency_matrix_matches_edge_index(request, which):
    graph = request.getfixturevalue(which)
    matrix = adjacency_matrix(graph)
    src, dst = graph.edge_index
    types = graph.edge_type
    n = graph.num_nodes
    # every edge is drawn, in its type (no pair carries two edges in these graphs) ...
    assert len(set(zip(src.tolist(), dst.tolist()))) == graph.num_edges
    assert (matrix[src.numpy(), dst.numpy()] == types.numpy()).all()
    # ... and nothing else
    assert int((matrix >= 0).sum()) == graph.num_edges
    # a window is the corresponding block of the full matrix
    lo, hi = n // 3, n // 3 + n // 2
    np.testing.assert_array_equal(adjacency_matrix(graph, (lo, hi)), matrix[lo:hi, lo:hi])


@pytest.mark.parametrize("which", ["mlp_graph", "gpt2_graph"])
def test_draw_adjacency_legend_lists_present_edge_types(request, which, tmp_path):
    graph = request.getfixturevalue(which)
    fig = draw_adjacency(graph, tmp_path / "adj")
    assert_real_figure(fig.png, fig.pdf)
    present = sorted(graph.edge_type_counts())
    assert fig.info["edge_types"] == present
    assert list(fig.legend) == [edge_type_label(t) for t in present]
    assert all(et.name(t) in label for t, label in zip(present, fig.legend))
    assert not fig.info["cropped"]
    if which == "gpt2_graph":
        assert {"attn_query (7)", "attn_key (8)", "head (11)", "residual (10)"} <= set(fig.legend)


def test_draw_adjacency_crops_large_graphs(tmp_path, caplog):
    graph = neuralgraph.convert(fm16())
    fig = draw_adjacency(graph, tmp_path / "adj.pdf", max_nodes=30)
    assert fig.info["nodes"] == (0, 30) and fig.info["cropped"]
    assert "max_nodes=30" in caplog.text
    assert fig.png.name == "adj.png" and fig.pdf.name == "adj.pdf"
    assert_real_figure(fig.png, fig.pdf)
    # only the types inside the drawn block: the block holds no linear (classifier) edges
    assert "linear (1)" not in fig.legend and "conv (3)" in fig.legend
    window = draw_adjacency(graph, tmp_path / "adj2", nodes=(50, 95))
    assert window.info["nodes"] == (50, 95) and "linear (1)" in window.legend
    with pytest.raises(ValueError, match="node range"):
        draw_adjacency(graph, tmp_path / "bad", nodes=(10, 500))


# ------------------------------------------------------------------------------------ graphviz
def test_draw_graph_without_graphviz_names_it(mlp_graph, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there: no dot
    with pytest.raises(GraphvizNotFoundError) as info:
        draw_graph(mlp_graph, tmp_path / "g")
    message = str(info.value)
    assert "graphviz" in message and "apt-get install graphviz" in message and "'dot'" in message
    assert isinstance(info.value, RuntimeError)
    assert not (tmp_path / "g.png").exists()


@needs_dot
def test_draw_graph_writes_figures(mlp_graph, tmp_path):
    fig = draw_graph(mlp_graph, tmp_path / "graph")
    assert_real_figure(fig.png, fig.pdf)
    assert fig.info["nodes"] == mlp_graph.num_nodes
    # self-loops are left out by default; every other edge is drawn once
    assert fig.info["edges"] == mlp_graph.num_edges - mlp_graph.num_nodes
    assert "linear (1)" in fig.legend and "bias (2)" in fig.legend and "self_loop (13)" not in fig.legend
    assert {g.name for g in mlp_graph.groups} <= set(fig.legend)  # nodes coloured by group


@needs_dot
def test_draw_graph_attention(gpt2_graph, tmp_path):
    fig = draw_graph(gpt2_graph, tmp_path / "gpt2", prog="dot", color_by="role")
    assert_real_figure(fig.png, fig.pdf)
    assert {"head (11)", "attn_key (8)", "query_key", "value", "head"} <= set(fig.legend)


def test_draw_graph_caps_size(tmp_path):
    graph = neuralgraph.convert(fm16())
    if shutil.which("dot") is None:
        pytest.skip("graphviz's 'dot' is not installed: the missing program is reported first")
    with pytest.raises(GraphTooLargeError, match="max_nodes=50"):
        draw_graph(graph, tmp_path / "g", max_nodes=50)
    with pytest.raises(GraphTooLargeError, match="max_edges=100"):
        draw_graph(graph, tmp_path / "g", max_edges=100)


# ------------------------------------------------------------------------------------ LPE
def test_draw_lpe(mlp_graph, tmp_path):
    fig = draw_lpe(mlp_graph, tmp_path / "lpe")
    assert_real_figure(fig.png, fig.pdf)
    n = mlp_graph.num_nodes
    assert fig.info["perplexity"] == pytest.approx((n - 1) / 3)  # clipped for an 18-node graph
    assert fig.info["nodes"] == n
    assert {g.name for g in mlp_graph.groups} <= set(fig.legend)


def test_draw_lpe_samples_and_tiny_graphs(tmp_path):
    graph = neuralgraph.convert(fm16())
    fig = draw_lpe(graph, tmp_path / "lpe", max_nodes=40, perplexity=5)
    assert fig.info["nodes"] == 40 and fig.info["perplexity"] == 5
    tiny = neuralgraph.convert(torch.nn.Linear(1, 1), lpe=2)
    fig = draw_lpe(tiny, tmp_path / "tiny")
    assert fig.info["perplexity"] is None and fig.png.exists()
    with pytest.raises(ValueError, match="lpe=0"):
        draw_lpe(neuralgraph.convert(mlp(), lpe=0), tmp_path / "none")


def test_import_analysis_is_light():
    code = (
        "import sys, analysis; heavy = [m for m in ('matplotlib', 'sklearn', 'pydot') if m in sys.modules]; "
        "print(heavy); assert not heavy; analysis.draw_adjacency; analysis.plot_trajectories"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
