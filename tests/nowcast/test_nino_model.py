"""NiNoModel behaviour that needs no reference files: purity, chunking, padding, validation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch_geometric.data import Data

import neuralgraph as ng
from neuralgraph.examples import fm16, mlp
from nowcast import NiNoConfig, NiNoModel
from nowcast.model import NiNoEmbedding
from nowcast.scaling import scale_states

SMALL = dict(hid=16, vocab_size=20)


def _randomize(model: NiNoModel, seed: int = 0) -> NiNoModel:
    """Weights large enough that every layer visibly matters (the default init is tiny)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


def _states(graph: ng.NeuralGraph, seed: int = 0, ctx: int = 5) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    raw = torch.randn(graph.num_params, 1, generator=gen) + 0.1 * torch.randn(graph.num_params, ctx, generator=gen).cumsum(1)
    return scale_states(raw, graph.params)[0]


@pytest.fixture(scope="module")
def mlp_data() -> Data:
    graph = ng.convert(mlp())
    return graph.to_pyg(_states(graph))


@pytest.fixture(scope="module")
def conv_data() -> Data:
    graph = ng.convert(fm16())
    return graph.to_pyg(_states(graph, seed=1))


def test_forward_does_not_modify_parameters(mlp_data: Data) -> None:
    assert mlp_data.edge_attr.shape[1] == 5  # max_feat_size 1 < the model's 9
    for config in (NiNoConfig(), NiNoConfig(gnn=False)):
        model = _randomize(NiNoModel(config))
        before = copy.deepcopy(model.state_dict())
        with torch.no_grad():
            out = model(mlp_data, 1)
        assert out.shape == (mlp_data.num_edges, 1)
        after = model.state_dict()
        assert before.keys() == after.keys()
        for key in before:
            assert torch.equal(before[key], after[key]), key
        assert model.edge_proj.fc[0].in_features == config.max_feat_size * config.ctx if config.gnn else config.ctx


@pytest.mark.parametrize("gnn", [True, False])
def test_one_instance_serves_mlp_then_convnet(mlp_data: Data, conv_data: Data, gnn: bool) -> None:
    config = NiNoConfig(gnn=gnn, **SMALL)
    shared = _randomize(NiNoModel(config))
    fresh = [copy.deepcopy(shared) for _ in range(2)]
    with torch.no_grad():
        first = shared(mlp_data, 4)
        second = shared(conv_data, 4)
        assert torch.equal(first, fresh[0](mlp_data, 4))
        assert torch.equal(second, fresh[1](conv_data, 4))
        assert torch.equal(shared(mlp_data, 4), first)
    assert second.shape == (conv_data.num_edges, 9)


def _rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Normwise relative error ``max|ours - ref| / max|ref|``."""
    return ((ours - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("gnn", [True, False])
@pytest.mark.parametrize(("graph", "chunk"), [("mlp_data", 7), ("conv_data", 64), ("conv_data", 500)])
def test_chunking_does_not_change_results(request: pytest.FixtureRequest, graph: str, gnn: bool, chunk: int) -> None:
    """Chunks change only GEMM blocking: results agree to float32 rounding, not bit for bit."""
    data = request.getfixturevalue(graph)
    model = _randomize(NiNoModel(NiNoConfig(gnn=gnn, **SMALL)))
    with torch.no_grad():
        whole = model(data, [1, 7, 40], edge_chunk=None)
        chunked = model(data, [1, 7, 40], edge_chunk=chunk)
        emb_whole = model.embed(data, edge_chunk=0)
        emb_chunked = model.embed(data, edge_chunk=chunk)
    assert _rel_err(chunked, whole) < 1e-5
    assert _rel_err(emb_chunked.edges, emb_whole.edges) < 1e-5
    if gnn:
        assert _rel_err(emb_chunked.nodes, emb_whole.nodes) < 1e-5


def test_fewer_feature_slots_equal_zero_padding(mlp_data: Data) -> None:
    """A graph with F < max_feat_size behaves as if the missing slots were zero."""
    model = _randomize(NiNoModel(NiNoConfig(**SMALL)))
    padded = mlp_data.clone()
    padded.edge_attr = torch.cat([mlp_data.edge_attr, torch.zeros(mlp_data.num_edges, 8 * 5)], dim=1)
    with torch.no_grad():
        narrow = model(mlp_data, [2, 9])
        wide = model(padded, [2, 9])
    assert narrow.shape == (mlp_data.num_edges, 1, 2) and wide.shape == (mlp_data.num_edges, 9, 2)
    assert _rel_err(narrow, wide[:, :1]) < 1e-6


def test_last_layer_node_update_is_skipped_only_in_forward(conv_data: Data) -> None:
    model = _randomize(NiNoModel(NiNoConfig(**SMALL)))
    with torch.no_grad():
        out = model(conv_data, 3)
        emb = model.embed(conv_data)
        for p in model.gnn.convs[-1].parameters():
            p.add_(1.0)
        assert torch.equal(model(conv_data, 3), out)
        emb2 = model.embed(conv_data)
    assert isinstance(emb, NiNoEmbedding)
    assert emb.nodes.shape == (conv_data.num_nodes, 16) and emb.edges.shape == (conv_data.num_edges, 16)
    assert torch.equal(emb.edges, emb2.edges) and not torch.equal(emb.nodes, emb2.nodes)


def test_node_and_edge_relabelling_equivariance(conv_data: Data) -> None:
    model = _randomize(NiNoModel(NiNoConfig(**SMALL)))
    gen = torch.Generator().manual_seed(3)
    node_perm = torch.randperm(conv_data.num_nodes, generator=gen)  # new id -> old id
    old_to_new = torch.empty_like(node_perm)
    old_to_new[node_perm] = torch.arange(conv_data.num_nodes)
    edge_perm = torch.randperm(conv_data.num_edges, generator=gen)
    moved = Data(
        edge_index=old_to_new[conv_data.edge_index[:, edge_perm]],
        edge_type=conv_data.edge_type[edge_perm],
        edge_attr=conv_data.edge_attr[edge_perm],
        pos=conv_data.pos[node_perm],
        pos_w=conv_data.pos_w[node_perm],
    )
    with torch.no_grad():
        assert _rel_err(model(moved, 5), model(conv_data, 5)[edge_perm]) < 1e-6


def test_gradients_flow_and_match_no_grad(conv_data: Data) -> None:
    model = _randomize(NiNoModel(NiNoConfig(**SMALL)), seed=2).train()
    out = model(conv_data, [1, 40], edge_chunk=700)
    out.square().mean().backward()
    assert model.gnn.edge_update[0].lin_e.weight.grad is not None
    assert model.gnn.convs[0].edge_encoder.weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert _rel_err(model(conv_data, [1, 40]), out.detach()) < 1e-6


def test_wnn_ignores_graph_structure(conv_data: Data) -> None:
    model = _randomize(NiNoModel(NiNoConfig(gnn=False, hid=16)))
    bare = Data(edge_attr=conv_data.edge_attr, edge_type=conv_data.edge_type)
    with torch.no_grad():
        assert torch.equal(model(bare, 6), model(conv_data, 6))
        emb = model.embed(bare)
    assert emb.nodes is None and emb.edges.shape == (conv_data.num_edges, 9, 16)


def test_input_validation(mlp_data: Data, conv_data: Data) -> None:
    model = NiNoModel(NiNoConfig(max_feat_size=1, **SMALL))
    with pytest.raises(ValueError, match="horizon"):
        model(mlp_data, 0)
    with pytest.raises(ValueError, match="horizon"):
        model(mlp_data, 41)
    with pytest.raises(ValueError, match="horizon"):
        model(mlp_data, True)
    with pytest.raises(ValueError, match="feature slots"):
        model(conv_data, 1)
    no_pos = mlp_data.clone()
    no_pos.pos = None
    with pytest.raises(ValueError, match="positional"):
        model(no_pos, 1)
    bad = mlp_data.clone()
    bad.edge_attr = bad.edge_attr[:, :4]
    with pytest.raises(ValueError, match="edge_attr"):
        model(bad, 1)
    with pytest.raises(ValueError, match="lpe > 0 or wte_pos_enc"):
        NiNoConfig(lpe=0, wte_pos_enc=False)
    assert model(mlp_data, torch.tensor(3)).shape == (mlp_data.num_edges, 1)


def test_streamed_forward_equals_stored():
    """Recomputing edge states chunk by chunk (no E x hid buffer) gives the same predictions."""
    import neuralgraph as ng
    from neuralgraph.examples import fm16

    from nowcast import NiNoConfig, NiNoModel

    torch.manual_seed(0)
    model = NiNoModel(NiNoConfig(hid=16, wte_pos_enc=False)).eval()
    graph = ng.convert(fm16())
    data = graph.to_pyg(torch.randn(graph.num_params, 5))
    with torch.no_grad():
        stored = model(data, [1, 7, 40], stream=False)
        streamed = model(data, [1, 7, 40], stream=True, edge_chunk=333)
        model.max_edge_state_bytes = 0  # automatic choice: stream
        auto = model(data, 7)
    assert torch.allclose(stored, streamed, rtol=1e-5, atol=1e-6)
    assert torch.allclose(auto, stored[:, :, 1], rtol=1e-5, atol=1e-6)


def test_block_streamed_forward_equals_stored():
    """Block-wise streaming (data.blocks from NeuralGraph.to_pyg) matches the stored pass."""
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    nino = NiNoModel(NiNoConfig(hid=16, wte_pos_enc=False)).eval()
    for model in (fm16(), transformers.GPT2LMHeadModel(transformers.GPT2Config(
            n_embd=8, n_layer=2, n_head=2, vocab_size=11, n_positions=5))):
        graph = ng.convert(model)
        data = graph.to_pyg(torch.randn(graph.num_params, 5))
        assert data.blocks.shape == (len(graph.blocks), 8)
        with torch.no_grad():
            stored = nino(data, [1, 40], stream=False)
            for piece in (7, 100, 4096):
                streamed = nino(data, [1, 40], stream=True, edge_chunk=piece)
                assert torch.allclose(stored, streamed, rtol=1e-5, atol=1e-5), piece
