"""nowcast.predict: reference reproduction, model untouched, per-block prediction."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from nowcast_testutils import official_checkpoint, rel_err, Layered, small_nino

import neuralgraph as ng
import nowcast
from neuralgraph.examples import fm16, mlp
from nowcast import Linefit, load, NiNoPredictor, predict, WNNPlus
from nowcast.parts import layer_parts

TOL = 1e-5


def test_predict_reproduces_the_authors_nino(shared_root: Path, reference: Path, inputs: dict, fm16_graph: ng.NeuralGraph) -> None:
    model = load(official_checkpoint(shared_root, "nino_no_posw"))
    ref = torch.load(reference / "nino_out_nino_no_posw_convnet_fm16.pt", weights_only=True)
    assert ref["uses_pos"]
    for k in ref["ks"]:
        # the authors' Laplacian encodings (their eigenvector signs / bases) are part of the input
        x = predict(fm16_graph, inputs["states_raw"], k, model, pos=inputs["pos"])
        assert x.shape == (fm16_graph.num_params,)
        assert rel_err(x, ref[f"x_pred_k{k}"]) < TOL, f"k={k}"


def test_predict_reproduces_the_authors_wnn_plus(shared_root: Path, reference: Path, inputs: dict, fm16_graph: ng.NeuralGraph) -> None:
    predictor = WNNPlus.load(official_checkpoint(shared_root, "nino_mlp"))
    ref = torch.load(reference / "nino_out_nino_mlp_convnet_fm16.pt", weights_only=True)
    for k in ref["ks"]:
        x = predictor.predict(fm16_graph, inputs["states_raw"], k)
        assert rel_err(x, ref[f"x_pred_k{k}"]) < TOL, f"k={k}"
        assert torch.equal(x, predict(fm16_graph, inputs["states_raw"], k, predictor.model))


def test_published_nino_with_our_encodings_runs(shared_root: Path, reference: Path, inputs: dict, fm16_graph: ng.NeuralGraph) -> None:
    predictor = NiNoPredictor.load(official_checkpoint(shared_root, "nino_no_posw"))
    x = predictor.predict(fm16_graph, inputs["states_raw"], 5)
    assert torch.isfinite(x).all()
    last = inputs["states_raw"][:, -1]
    ref = torch.load(reference / "nino_out_nino_no_posw_convnet_fm16.pt", weights_only=True)["x_pred_k5"]
    # another basis of the degenerate Laplacian eigenspaces changes the prediction only slightly
    assert ((x - ref).norm() / (ref - last).norm()).item() < 0.05


def test_predict_does_not_modify_the_model() -> None:
    net = mlp((4, 6, 3))
    graph = ng.convert(net)
    model = small_nino().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    states = torch.randn(graph.num_params, 5, generator=torch.Generator().manual_seed(1)).cumsum(1)
    x = predict(graph, states, 7, model)
    assert model.training
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert x.shape == (graph.num_params,) and not x.requires_grad
    # the same model serves another graph (a convnet with 9 feature slots) afterwards
    conv = ng.convert(fm16())
    assert torch.isfinite(predict(conv, torch.randn(conv.num_params, 5).cumsum(1), 2, model)).all()
    assert torch.equal(predict(graph, states, 7, model), x)


def test_predict_keeps_dtype_and_checks_inputs() -> None:
    graph = ng.convert(mlp())
    model = small_nino()
    states = torch.randn(graph.num_params, 5, dtype=torch.float64).cumsum(1)
    x = predict(graph, states, 3, model)
    assert x.dtype == torch.float64
    torch.testing.assert_close(x.float(), predict(graph, states.float(), 3, model), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="ctx=5"):
        predict(graph, states[:, :4], 3, model)
    with pytest.raises(ValueError, match="1..40"):
        predict(graph, states, 41, model)
    with pytest.raises(ValueError, match="positive integer"):
        predict(graph, states, 0, model)
    with pytest.raises(ValueError, match="parameters"):
        predict(graph, states[1:], 3, model)
    with pytest.raises(ValueError, match="needs the neural graph"):
        predict(None, states, 3, model)
    with pytest.raises(TypeError, match="predictor"):
        predict(graph, states, 3, object())


def test_any_predictor_through_predict() -> None:
    graph = ng.convert(mlp())
    states = torch.randn(graph.num_params, 5).cumsum(1)
    for predictor in (Linefit(), nowcast.LinefitPlus(), nowcast.WNN(), small_nino(), small_nino(gnn=False), "linefit"):
        x = predict(graph, states, 4, predictor)
        assert x.shape == (graph.num_params,) and torch.isfinite(x).all()
    assert torch.equal(predict(None, states, 4, Linefit()), predict(graph, states, 4, "linefit"))


def test_layer_parts_write_every_parameter_once() -> None:
    graph = ng.convert(Layered((4, 8, 8, 8, 3)))
    for hops in (0, 2):
        parts = layer_parts(graph, context_hops=hops)
        assert len(parts) == 4
        hits = torch.zeros(graph.num_params, dtype=torch.long)
        for part in parts:
            assert part.graph.num_params == part.num_params
            for (start, stop), owned in zip(part.segments, part.owned):
                hits[start:stop] += int(owned)
        assert torch.equal(hits, torch.ones_like(hits))
    assert [p.num_params for p in layer_parts(graph)] == [40, 72, 72, 27]
    assert [p.num_params for p in layer_parts(graph, context_hops=2)] == [40, 112, 184, 171]


def test_per_block_equals_whole_graph() -> None:
    graph = ng.convert(Layered((4, 8, 8, 8, 3)))
    gen = torch.Generator().manual_seed(0)
    states = (torch.randn(graph.num_params, 1, generator=gen) + 0.1 * torch.randn(graph.num_params, 5, generator=gen).cumsum(1))
    fit = Linefit()
    assert torch.equal(predict(graph, states, 5, fit, per_block=True), predict(graph, states, 5, fit))
    model = small_nino()
    last = states[:, -1]
    for k in (1, 5, 40):
        whole = predict(graph, states, k, model)
        blocks = predict(graph, states, k, model, per_block=True)
        assert ((blocks - whole).norm() / (whole - last).norm()).item() < 1e-5
        # without the upstream context each layer misses its neighbours' messages
        alone = predict(graph, states, k, model, per_block=True, parts=layer_parts(graph))
        assert ((alone - whole).norm() / (whole - last).norm()).item() > 1e-3
    wnn_plus = small_nino(gnn=False)
    assert torch.equal(predict(graph, states, 3, wnn_plus, per_block=True), predict(graph, states, 3, wnn_plus))


def test_per_block_on_a_transformer() -> None:
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    net = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_embd=8, n_layer=5, n_head=2, vocab_size=11, n_positions=6)
    )
    graph = ng.convert(net)
    parts = layer_parts(graph, context_hops=2)
    assert len(parts) == 6
    # context stays local: a middle block's part is far smaller than the whole graph
    assert max(p.graph.num_edges for p in parts[1:-1]) < 0.6 * graph.num_edges
    states = ng.flatten_params(net).unsqueeze(1) + 0.01 * torch.randn(graph.num_params, 5).cumsum(1)
    model = small_nino()
    whole = predict(graph, states, 3, model)
    blocks = predict(graph, states, 3, model, per_block=True, parts=parts)
    assert ((blocks - whole).norm() / (whole - states[:, -1]).norm()).item() < 1e-5


def test_kernels_wider_than_the_model_reads_are_split() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))
    graph = ng.convert(net)
    assert graph.max_feat_size == 25
    model = small_nino()
    states = torch.randn(graph.num_params, 5, generator=torch.Generator().manual_seed(3)).cumsum(1)
    x = predict(graph, states, 4, model)
    assert torch.isfinite(x).all() and not torch.equal(x, states[:, -1])
    assert torch.equal(x, predict(graph.split_kernels(9), states, 4, model))
    with pytest.raises(ValueError, match="at most 9"):  # the model itself still refuses wide edges
        model(graph.to_pyg(states), 1)
