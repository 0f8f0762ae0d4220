"""Regime conditioning (``NiNoConfig.lr_interval_input``): the model reads ``log10`` of the base
learning rate times the steps between states; every forward path, :func:`nowcast.predict`, the
optimizer wrapper and the meta-training windows hand it the same number."""

from __future__ import annotations

import pytest
import torch
from nowcast_testutils import small_nino
from torch import nn

import neuralgraph as ng
import nowcast
from neuralgraph.examples import fm16, mlp
from nowcast import NiNo, NiNoConfig, NiNoPredictor, predict
from nowcast.metatrain import MetaTrainConfig


def _history(graph: ng.NeuralGraph, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    start = torch.randn(graph.num_params, 1, generator=gen)
    return start + 0.05 * torch.randn(graph.num_params, 5, generator=gen).cumsum(1)


def test_off_by_default_and_in_the_published_arguments() -> None:
    assert not NiNoConfig().lr_interval_input
    assert not NiNoConfig.from_official_args({"hid": 64}).lr_interval_input
    assert not hasattr(nowcast.NiNoModel(NiNoConfig(hid=8, wte_pos_enc=False)), "lr_interval_edge")
    with pytest.raises(ValueError, match="lr_interval_input must be a bool"):
        NiNoConfig(lr_interval_input=1)
    assert MetaTrainConfig(lr_interval_input=True).nino_config().lr_interval_input


@pytest.mark.parametrize("gnn", [True, False], ids=["nino", "wnn+"])
def test_the_regime_changes_the_prediction_and_is_required(gnn: bool) -> None:
    model = small_nino(gnn=gnn, lr_interval_input=True)
    graph = ng.convert(mlp((4, 8, 3)))
    states = _history(graph)
    low = predict(graph, states, 3, model, lr_interval=0.04)
    high = predict(graph, states, 3, model, lr_interval=1.2)
    assert torch.isfinite(low).all() and not torch.allclose(low, high, atol=1e-4)
    assert torch.equal(predict(graph, states, 3, model, lr_interval=torch.tensor(0.04)), low)
    with pytest.raises(ValueError, match="pass lr_interval="):
        predict(graph, states, 3, model)
    data = graph.to_pyg(states)
    for bad in (None, 0.0, -1.0, float("nan"), float("inf"), True, "0.1"):
        data.lr_interval = bad
        with pytest.raises(ValueError, match="data.lr_interval must be"):
            model(data, 1)


def test_an_unconditioned_model_ignores_the_regime() -> None:
    model = small_nino()
    graph = ng.convert(mlp((4, 8, 3)))
    states = _history(graph)
    assert torch.equal(predict(graph, states, 3, model, lr_interval=0.04), predict(graph, states, 3, model))


def test_every_forward_path_adds_the_same_regime_term() -> None:
    """Stored, streamed (no E x hid buffer) and block-streamed passes agree with conditioning on."""
    model = small_nino(lr_interval_input=True)
    graph = ng.convert(fm16())
    data = graph.to_pyg(_history(graph))
    data.lr_interval = 0.3
    with torch.no_grad():
        stored = model(data, [1, 7, 40], stream=False)
        blocks = model(data, [1, 7, 40], stream=True, edge_chunk=100)
        data.blocks = None
        streamed = model(data, [1, 7, 40], stream=True, edge_chunk=333)
        data.lr_interval = 3.0
        other = model(data, [1, 7, 40], stream=False)
    assert torch.allclose(stored, streamed, rtol=1e-5, atol=1e-5)
    assert torch.allclose(stored, blocks, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(stored, other, atol=1e-3)


def test_the_regime_enters_as_log10_through_the_regime_layers() -> None:
    """Zeroing the regime layers gives the unconditioned model with the same other weights."""
    model = small_nino(lr_interval_input=True)
    plain = small_nino()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("lr_interval_")})
    graph = ng.convert(mlp((4, 8, 3)))
    states = _history(graph)
    with torch.no_grad():
        model.lr_interval_edge.weight.zero_()
        model.lr_interval_node.weight.zero_()
        model.lr_interval_edge.bias.zero_()
        model.lr_interval_node.bias.zero_()
    assert torch.allclose(predict(graph, states, 5, model, lr_interval=0.5), predict(graph, states, 5, plain), atol=1e-6)
    with torch.no_grad():  # a pure bias shift equal to weight * log10(lr_interval): 10 ** 1 = 10
        model.lr_interval_edge.weight.fill_(1.0)
        shifted = predict(graph, states, 5, model, lr_interval=10.0)
        model.lr_interval_edge.weight.zero_()
        model.lr_interval_edge.bias.fill_(1.0)
        assert torch.allclose(predict(graph, states, 5, model, lr_interval=0.5), shifted, atol=1e-6)


def test_save_and_load_keep_the_regime_layers(tmp_path) -> None:
    model = small_nino(lr_interval_input=True)
    loaded = nowcast.load(model.save(tmp_path / "ckpt"))
    assert loaded.config.lr_interval_input
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


class _Spy:
    """A regime-aware Nowcaster that records the lr_interval it is given (answers: no change)."""

    name = "spy"
    needs_graph = False
    uses_lr_interval = True

    def __init__(self) -> None:
        self.seen: list[float | None] = []

    def predict(self, graph, states, k, *, lr_interval=None):
        self.seen.append(lr_interval)
        return states[:, -1].clone()


def _train(net: nn.Module, opt, steps: int, sched=None) -> None:
    x, y = torch.randn(16, 4), torch.randn(16, 3)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()


def test_the_wrapper_passes_the_current_lr_times_the_state_interval() -> None:
    torch.manual_seed(0)
    net = mlp((4, 8, 3))
    spy = _Spy()
    base = torch.optim.Adam(net.parameters(), lr=0.01)
    opt = NiNo(base, net, spy, period=10, ctx=5, max_train_steps=40)
    sched = torch.optim.lr_scheduler.StepLR(base, step_size=10, gamma=0.5)
    _train(net, opt, 20, sched)
    assert spy.seen == pytest.approx([0.01 * 2, 0.005 * 2])  # lr at the jump x (period / ctx)
    assert opt.lr_interval() == pytest.approx(0.0025 * 2)

    fixed = NiNo(torch.optim.Adam(net.parameters(), lr=0.01), net, spy, period=10, ctx=5, max_train_steps=40, lr_interval=0.7)
    _train(net, fixed, 10)
    assert spy.seen[-1] == 0.7
    for bad in (0, -1.0, float("inf"), True):
        with pytest.raises(ValueError, match="lr_interval must be a positive number"):
            NiNo(torch.optim.Adam(net.parameters()), net, spy, period=10, ctx=5, max_train_steps=40, lr_interval=bad)


def test_the_wrapper_drives_a_conditioned_model_like_predict() -> None:
    torch.manual_seed(0)
    net = mlp((4, 8, 3))
    model = small_nino(lr_interval_input=True)
    opt = NiNo(torch.optim.Adam(net.parameters(), lr=0.01), net, NiNoPredictor(model), period=10, ctx=5, max_train_steps=40)
    history = []
    x, y = torch.randn(16, 4), torch.randn(16, 3)
    for step in range(10):
        opt.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        if step in (1, 3, 5, 7):
            history.append(ng.flatten_params(net).clone())
        opt.step()
        if step == 8:
            history.append(ng.flatten_params(net).clone())
    expected = predict(ng.convert(net), torch.stack(history, 1), opt.k_schedule[0], model, lr_interval=0.01 * 2)
    assert opt.jumps == 1 and torch.equal(ng.flatten_params(net), expected)

