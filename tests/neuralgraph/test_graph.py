import networkx as nx
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import neuralgraph as ng
from neuralgraph import edge_types as et
from neuralgraph.builder import GraphBuilder
from neuralgraph.params import normalize_specs


@st.composite
def random_graphs(draw):
    """Random groups and blocks (dense with kernels, star, diagonal, auxiliary)."""
    sizes = draw(st.lists(st.integers(1, 5), min_size=2, max_size=5))
    plan, pairs = [], []
    for i in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["dense", "star", "diag", "aux", "stack"]))
        a, b = draw(st.integers(0, len(sizes) - 1)), draw(st.integers(0, len(sizes) - 1))
        if kind == "dense":
            kernel = draw(st.sampled_from([(), (2,), (3, 3), (1, 2)]))
            pairs.append((f"p{i}", (sizes[b], sizes[a], *kernel)))
        elif kind == "star":
            pairs.append((f"p{i}", (sizes[b],)))
        elif kind == "stack":
            pairs += [(f"p{i}", (sizes[b], sizes[a])), (f"p{i}b", (sizes[b], sizes[a]))]
        elif kind == "diag":
            b = a if sizes[a] != sizes[b] else b
            pairs.append((f"p{i}", (sizes[a],)))
        else:
            b = a if sizes[a] != sizes[b] else b
        plan.append((kind, a, b, f"p{i}"))
    return sizes, plan, pairs


def build(sizes, plan, pairs):
    b = GraphBuilder(normalize_specs(pairs), arch="random")
    groups = [b.group(f"g{i}", n, role="hidden") for i, n in enumerate(sizes)]
    for kind, s, d, name in plan:
        if kind == "dense":
            b.dense(b.param(name), groups[s], groups[d], et.CONV)
        elif kind == "star":
            b.star(b.param(name), b.bias_node(name), groups[d], et.BIAS)
        elif kind == "stack":
            b.dense([b.param(name), b.param(name + "b")], groups[s], groups[d], et.LINEAR, name=name)
        elif kind == "diag":
            b.diagonal(groups[s], groups[d], et.NORM, view=b.param(name))
        else:
            b.residual(groups[s], groups[d], name=name)
    return b.build(lpe=0)


def slow_edges(graph, theta):
    """Per-edge reference implementation of edge_index / edge features (single state)."""
    src, dst, feats = [], [], []
    for blk in graph.blocks:
        for e in range(blk.num_edges):
            if blk.kind == "dense":
                s, d = divmod(e, blk.dst.size)
                src.append(blk.src.start + s)
                dst.append(blk.dst.start + d)
            else:
                src.append(blk.src.start + (0 if blk.kind == "star" else e))
                dst.append(blk.dst.start + e)
            row = [0.0] * graph.max_feat_size
            if blk.view is None:
                row[0] = blk.value
            else:
                kernel = []
                for part in blk.view.parts:
                    spec = next(p for p in graph.params if p.name == part.name)
                    w = theta[spec.offset : spec.offset + spec.numel].view(spec.shape)
                    kernel.append(w[d, s].reshape(-1) if blk.kind == "dense" else w[e].reshape(-1))
                kernel = torch.cat(kernel)
                row[: kernel.numel()] = kernel.tolist()
            feats.append(row)
    return torch.tensor([src, dst]), torch.tensor(feats, dtype=theta.dtype)


@given(random_graphs())
def test_vectorized_derivation_matches_per_edge_reference(case):
    graph = build(*case)
    theta = torch.randn(graph.num_params, dtype=torch.float64)
    index, feats = slow_edges(graph, theta)
    assert torch.equal(graph.edge_index, index)
    assert torch.equal(graph.edge_features(theta), feats)
    assert graph.edge_type.shape == (graph.num_edges,)
    assert int((graph.edge_type == et.SELF_LOOP).sum()) == graph.num_nodes


@given(random_graphs(), st.integers(1, 4))
def test_roundtrip_is_exact_for_stacks(case, steps):
    graph = build(*case)
    states = torch.randn(graph.num_params, steps)
    feats = graph.edge_features(states)
    assert feats.shape == (graph.num_edges, graph.max_feat_size * steps)
    for t in range(steps):
        assert torch.equal(graph.to_params(feats, state=t), states[:, t])
    # layout: slot f of state t is column f * T + t
    single = graph.edge_features(states[:, -1].contiguous())
    assert torch.equal(feats[:, steps - 1 :: steps], single)


def test_auxiliary_values_in_every_state():
    b = GraphBuilder(normalize_specs([("w", (2, 2))]))
    x, y = b.group("x", 2, role="input"), b.group("y", 2, role="output")
    b.dense(b.param("w"), x, y, et.LINEAR)
    b.residual(x, y)
    g = b.build(lpe=0)
    feats = g.edge_features(torch.zeros(4, 3))
    res = g.block("y.res")
    assert torch.equal(feats[res.edge_start : res.edge_stop], torch.ones(2, 3))
    loops = g.block("self_loops")
    assert torch.equal(feats[loops.edge_start :], torch.full((4, 3), 2.0))


def test_construction_errors_name_the_problem():
    specs = normalize_specs([("w", (3, 2)), ("b", (3,))])
    b = GraphBuilder(specs)
    x, y = b.group("x", 2, role="input"), b.group("y", 4, role="output")
    with pytest.raises(ng.GraphConstructionError, match="does not connect 2 source nodes"):
        b.dense(b.param("w"), x, y, et.LINEAR)
    with pytest.raises(ng.GraphConstructionError, match="cannot act on 4 nodes"):
        b.star(b.param("b"), b.bias_node("b"), y, et.BIAS)
    with pytest.raises(ng.GraphConstructionError, match="no parameter 'nope'"):
        b.param("nope")
    with pytest.raises(ng.GraphConstructionError, match="unknown role"):
        b.group("z", 1, role="weird")

    b = GraphBuilder(specs)
    x, y = b.group("x", 2, role="input"), b.group("y", 3, role="output")
    b.dense(b.param("w"), x, y, et.LINEAR)
    with pytest.raises(ng.GraphConstructionError, match="'b' .* place 0 of them"):
        b.build()

    b = GraphBuilder(normalize_specs([("w", (2, 2))]))
    x, y = b.group("x", 2, role="input"), b.group("y", 2, role="output")
    b.dense(b.param("w"), x, y, et.LINEAR)
    b.diagonal(x, y, et.NORM, view=b.param("w")[0])
    with pytest.raises(ng.GraphConstructionError, match="place 6"):
        b.build()


def test_wrong_vector_lengths():
    g = build([2, 3], [("dense", 0, 1, "p0")], [("p0", (3, 2))])
    with pytest.raises(ng.ParameterMismatchError, match=r"\[6\] or \[6, T\]"):
        g.edge_features(torch.zeros(5))
    with pytest.raises(ng.ParameterMismatchError, match="edge features of shape"):
        g.to_params(torch.zeros(3, 1))
    with pytest.raises(ng.ParameterMismatchError, match="state 2 out of range"):
        g.to_params(g.edge_features(torch.zeros(6, 2)), state=2)


def test_exports():
    g = ng.convert(torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)))
    theta = torch.randn(g.num_params)
    data = g.to_pyg(theta)
    assert data.num_nodes == g.num_nodes == 14
    assert torch.equal(data.edge_index, g.edge_index) and torch.equal(data.edge_type, g.edge_type)
    assert data.pos.shape == (14, 8) and data.pos.dtype == torch.float32
    assert data.pos_w.dtype == torch.int64 and data.edge_attr.shape == (g.num_edges, 1)
    assert "edge_attr" not in g.to_pyg()
    nxg = g.to_networkx(theta)
    assert isinstance(nxg, nx.MultiDiGraph)
    assert nxg.number_of_nodes() == 14 and nxg.number_of_edges() == g.num_edges
    assert nxg.nodes[5]["group"] == "0" and nxg.nodes[5]["role"] == "hidden"
    edge = nxg.get_edge_data(0, 5)[0]
    assert edge["edge_type"] == et.LINEAR and edge["feat"] == [pytest.approx(float(theta[0]))]


def test_pos_w_marks_token_nodes():
    b = GraphBuilder(normalize_specs([("wte", (4, 2))]))
    tok = b.group("tokens", 4, role="token", tokens=True)
    h = b.group("h", 2, role="stream")
    b.dense(b.param("wte").t(), tok, h, et.TOKEN_EMBEDDING)
    g = b.build(lpe=0)
    assert g.pos_w.tolist() == [1, 2, 3, 4, 0, 0]
