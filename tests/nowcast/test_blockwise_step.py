"""The block-wise NiNo step (inputs read from the history block by block, predictions written
straight into the parameter vector) against the whole-graph step."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import transformers
from nowcast_testutils import official_checkpoint, small_nino
from torch import nn

import neuralgraph as ng
import nowcast
from neuralgraph.examples import fm16
from nowcast.model.graph_source import tensor_statistics
from nowcast.nowcasters import model_nowcaster
from nowcast.scaling import scale_states, unscale

transformers.logging.set_verbosity_error()


def _whole_graph_step(graph, states, k, model):
    """Scale, edge features of the whole graph, the stored (unstreamed) forward, unscale."""
    graph = graph.split_kernels(model.config.max_feat_size)
    scaled, scales = scale_states(states, graph.params)
    data = graph.to_pyg(scaled)
    with torch.no_grad():
        out = model(data, k, stream=False)
    return unscale(graph.to_params(out), scales)


def _blockwise(model, monkeypatch):
    """Make ``nowcast.predict`` take the block-wise path on small graphs, and record that it did."""
    calls = []
    original = model_nowcaster._predict_blockwise
    monkeypatch.setattr(model_nowcaster, "_predict_blockwise", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    model.max_edge_state_bytes = 0
    return calls


def _models():
    torch.manual_seed(0)
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=16, n_layer=2, n_head=4, vocab_size=37, n_positions=9))
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=29, max_position_embeddings=16))
    wide = nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3))  # a 25-slot kernel: split, then blocks of 9, 7 and 1 slots
    return {"gpt2": gpt2, "llama": llama, "fm16": fm16(), "wide conv": wide}


@pytest.mark.parametrize("name", list(_models()))
def test_blockwise_step_equals_the_whole_graph_step(name, monkeypatch) -> None:
    net = _models()[name]
    graph = ng.convert(net)
    theta = ng.flatten_params(net)
    states = theta.unsqueeze(1) + 0.01 * torch.randn(theta.numel(), 5, generator=torch.Generator().manual_seed(1)).cumsum(1)
    model = small_nino(wte_pos_enc=False)
    whole = _whole_graph_step(graph, states, 3, model)
    calls = _blockwise(model, monkeypatch)
    blockwise = nowcast.predict(graph, states, 3, model, edge_chunk=50)
    assert calls, "nowcast.predict did not take the block-wise path"
    assert not torch.equal(blockwise, states[:, -1])
    # the folded maps round differently (~1e-6 of the predicted change), nothing else differs
    torch.testing.assert_close(blockwise, whole, rtol=0, atol=1e-5 * float((whole - states[:, -1]).abs().max()))


def test_tensor_statistics_equal_scale_states() -> None:
    states = torch.randn(1000, 5, dtype=torch.float64).mul_(3).add_(1)
    params = [SimpleNamespace(name=f"p{i}", offset=o, numel=n) for i, (o, n) in enumerate([(0, 1), (1, 499), (500, 500)])]
    _, reference = scale_states(states, [1, 499, 500])
    mine = tensor_statistics(states, params)
    torch.testing.assert_close(mine.mean, reference.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mine.std, reference.std, rtol=1e-12, atol=1e-12)
    assert torch.equal(mine.sizes, reference.sizes)


@pytest.mark.slow
@pytest.mark.parametrize("width,layers", [(64, 3), (128, 4)])  # GPT-2 3.4M and 7.4M
def test_blockwise_step_on_gpt2_sizes(width, layers, shared_root, monkeypatch) -> None:
    torch.manual_seed(0)
    net = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=width, n_layer=layers, n_head=4))
    graph = ng.convert(net)
    theta = ng.flatten_params(net)
    states = theta.unsqueeze(1) + 1e-3 * torch.randn(theta.numel(), 5).cumsum(1)
    model = nowcast.load(official_checkpoint(shared_root, "nino_no_posw"))
    whole = _whole_graph_step(graph, states, 5, model)
    calls = _blockwise(model, monkeypatch)
    blockwise = nowcast.predict(graph, states, 5, model)
    assert calls
    assert float((blockwise - whole).abs().max()) <= 1e-6


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_blockwise_step_keeps_the_history_dtype(dtype, monkeypatch) -> None:
    net = _models()["llama"]
    graph = ng.convert(net)
    theta = ng.flatten_params(net)
    states = (theta.unsqueeze(1) + 0.01 * torch.randn(theta.numel(), 5, generator=torch.Generator().manual_seed(2)).cumsum(1)).to(dtype)
    model = small_nino(wte_pos_enc=False)
    whole = nowcast.predict(graph, states, 2, model)  # small graph: the whole-graph step
    calls = _blockwise(model, monkeypatch)
    blockwise = nowcast.predict(graph, states, 2, model, edge_chunk=64)
    assert calls and blockwise.dtype == dtype == whole.dtype
    change = float((whole.double() - states[:, -1].double()).abs().max())
    # bfloat16: the two paths round the same float32 numbers, which agree to ~1e-6 of the change
    tol = 1e-5 * change + (float(whole.abs().max()) * 2**-8 if dtype == torch.bfloat16 else 0.0)
    assert float((blockwise.double() - whole.double()).abs().max()) <= tol


def test_blockwise_step_reports_progress_over_every_pass(monkeypatch) -> None:
    net = _models()["gpt2"]
    graph = ng.convert(net)
    states = ng.flatten_params(net).unsqueeze(1).repeat(1, 5)
    model = small_nino(wte_pos_enc=False)
    done = []

    class Bar:
        def __init__(self, total):
            self.total = total

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            done.append(self)

        def update(self, n):
            self.total -= n

    monkeypatch.setattr(model_nowcaster, "_progress", Bar)
    _blockwise(model, monkeypatch)
    nowcast.predict(graph, states, 1, model, edge_chunk=30)
    assert len(done) == 1 and done[0].total == 0  # every edge of every pass counted, nothing more
