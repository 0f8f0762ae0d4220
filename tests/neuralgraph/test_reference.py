"""Compatibility with graphs built by the NiNo authors' code (``tests/data/reference``).

The reference files number nodes their own way, so the test derives the node correspondence from
the parameters: ``edge_attr_index_plus1`` holds, on every parameter edge, the flat index + 1 of
the parameters it carries. Matching every parameter's edge in both graphs gives a node map; the
test then checks that it is a bijection under which every edge (parameter and auxiliary) and
edge type corresponds — i.e. the graphs are isomorphic with every parameter on the
corresponding edge.
"""

import torch
import pytest

import neuralgraph as ng
from neuralgraph import edge_types as et
from neuralgraph.examples import fm16, mlp
from neuralgraph.lpe import laplacian_spectrum


def _param_edges(edge_index, edge_type, feats):
    """Map first-parameter-index -> (src, dst, type, feature row) over parameter edges."""
    out = {}
    for e in torch.nonzero(edge_type < et.RESIDUAL).flatten().tolist():
        out[int(feats[e, 0]) - 1] = (int(edge_index[0, e]), int(edge_index[1, e]), int(edge_type[e]), feats[e])
    return out


def node_map(ref, graph):
    ours = graph.edge_features(torch.arange(1, graph.num_params + 1, dtype=torch.float64))
    a = _param_edges(ref["edge_index"], ref["edge_type"], ref["edge_attr_index_plus1"].double())
    b = _param_edges(graph.edge_index, graph.edge_type, ours)
    assert a.keys() == b.keys(), "the graphs place different parameters on edges"
    mapping = {}
    for key, (s, d, t, f) in a.items():
        s2, d2, t2, f2 = b[key]
        assert t == t2, f"parameter {key}: edge type {t} in the reference, {t2} here"
        assert torch.equal(f, f2), f"parameter {key}: feature slots differ"
        for x, y in ((s, s2), (d, d2)):
            assert mapping.setdefault(x, y) == y, f"reference node {x} maps to two nodes"
    assert len(set(mapping.values())) == len(mapping) == ref["num_nodes"] == graph.num_nodes
    return torch.tensor([mapping[i] for i in range(ref["num_nodes"])])


def edge_multiset(edge_index, edge_type, feats, relabel=None):
    src, dst = edge_index
    if relabel is not None:
        src, dst = relabel[src], relabel[dst]
    rows = torch.cat([src[:, None].double(), dst[:, None].double(), edge_type[:, None].double(), feats.double()], 1)
    return sorted(map(tuple, rows.tolist()))


CASES = {
    "graph_mlp.pt": mlp((4, 5, 3)),
    "graph_convnet_fm16.pt": fm16(),
}


@pytest.mark.parametrize("name", CASES)
def test_isomorphic_to_reference(reference, name):
    ref = torch.load(reference / name, weights_only=True)
    model = CASES[name]
    assert [(n, tuple(p.shape)) for n, p in model.named_parameters()] == [tuple(p) for p in ref["params"]]
    graph = ng.convert(model)
    assert (graph.num_nodes, graph.num_edges, graph.num_params, graph.max_feat_size) == (
        ref["num_nodes"], ref["num_edges"], ref["n_params"], ref["max_feat_size"])
    mapping = node_map(ref, graph)
    ours = graph.edge_features(torch.arange(1, graph.num_params + 1, dtype=torch.float64))
    assert edge_multiset(ref["edge_index"], ref["edge_type"], ref["edge_attr_index_plus1"], mapping) == edge_multiset(
        graph.edge_index, graph.edge_type, ours)
    assert torch.equal(graph.pos_w[mapping], ref["pos_w"])


@pytest.mark.parametrize("name", CASES)
def test_positional_encodings_match_reference(reference, name):
    ref = torch.load(reference / name, weights_only=True)
    graph = ng.convert(CASES[name])
    spectrum = laplacian_spectrum(graph.num_nodes, graph.connections(), 10)
    assert torch.allclose(spectrum, ref["lpe_laplacian_eigvals_f64"], atol=1e-6)
    mapping = node_map(ref, graph)
    pos = graph.pos[mapping].double()
    ref_pos = ref["pos"].double()
    for col in torch.nonzero(ref["lpe_col_nondegenerate"]).flatten().tolist():
        a, b = pos[:, col], ref_pos[:, col]
        sign = 1.0 if float(a @ b) >= 0 else -1.0
        assert torch.allclose(a, sign * b, atol=1e-4), f"column {col}"
