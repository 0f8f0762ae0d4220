"""The regime ceiling and the regime adapter (``NiNoConfig.lr_interval_ceiling``,
``regime_adapter``): a model that is bit for bit its unconditioned network at and above the
ceiling, and below it uses every parameter as ``θ + gate · Δθ`` with ``gate = log10(ceiling /
lr_interval)``."""

from __future__ import annotations

import math

import pytest
import torch
from nowcast_testutils import small_nino

import neuralgraph as ng
import nowcast
from neuralgraph.examples import fm16, mlp
from nowcast import NiNoConfig, NiNoModel, predict
from nowcast.model import _delta_key

CEILING = 0.2


def _history(graph: ng.NeuralGraph, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    start = torch.randn(graph.num_params, 1, generator=gen)
    return start + 0.05 * torch.randn(graph.num_params, 5, generator=gen).cumsum(1)


def _plain_twin(model: NiNoModel, gate: float) -> NiNoModel:
    """An unconditioned model whose parameters are ``model``'s ``θ + gate · Δθ``."""
    cfg = NiNoConfig.from_dict({
        **model.config.to_dict(), "lr_interval_input": False, "lr_interval_ceiling": None, "lr_interval_floor": None, "regime_adapter": False,
    })
    twin = NiNoModel(cfg)
    with torch.no_grad():
        for name, p in twin.named_parameters():
            p.copy_(model.get_parameter(name) + gate * model.regime_delta[_delta_key(name)])
    return twin.eval()


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="lr_interval_ceiling needs lr_interval_input"):
        NiNoConfig(lr_interval_ceiling=0.2)
    with pytest.raises(ValueError, match="regime_adapter needs"):
        NiNoConfig(lr_interval_input=True, regime_adapter=True)
    for bad in (0.0, -1.0, float("inf"), True, "0.2"):
        with pytest.raises(ValueError, match="lr_interval_ceiling must be a positive number"):
            NiNoConfig(lr_interval_input=True, lr_interval_ceiling=bad)
    with pytest.raises(ValueError, match="not both"):
        NiNoConfig(lr_interval_input=True, lr_interval_ceiling=0.2, lr_interval_floor=0.6)
    for bad in (0.0, float("nan"), True):
        with pytest.raises(ValueError, match="lr_interval_floor must be a positive number"):
            NiNoConfig(lr_interval_input=True, lr_interval_floor=bad)
    cfg = NiNoConfig(hid=8, wte_pos_enc=False, lr_interval_input=True, lr_interval_ceiling=CEILING, regime_adapter=True)
    assert NiNoConfig.from_dict(cfg.to_dict()) == cfg
    model = NiNoModel(cfg)
    assert model.lr_interval_edge.bias is None and model.lr_interval_node.bias is None  # no term above the ceiling
    assert set(model.regime_delta) == {_delta_key(n) for n, _ in model.named_parameters() if not n.startswith(("lr_interval_", "regime_delta."))}
    assert all(float(d.detach().abs().max()) == 0 for d in model.regime_delta.values())


@pytest.mark.parametrize("adapter", [False, True], ids=["ceiling", "adapter"])
@pytest.mark.parametrize("gnn", [True, False], ids=["nino", "wnn+"])
def test_at_and_above_the_ceiling_the_model_is_its_plain_network(gnn: bool, adapter: bool) -> None:
    """Random (non-zero) regime maps and offsets change nothing at or above the ceiling, bit for bit."""
    model = small_nino(gnn=gnn, lr_interval_input=True, lr_interval_ceiling=CEILING, regime_adapter=adapter)
    plain = _plain_twin(model, 0.0) if adapter else None
    if plain is None:
        cfg = NiNoConfig.from_dict({**model.config.to_dict(), "lr_interval_input": False, "lr_interval_ceiling": None})
        plain = NiNoModel(cfg)
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("lr_interval_")})
        plain.eval()
    graph = ng.convert(mlp((4, 8, 3)))
    states = _history(graph)
    expected = predict(graph, states, 3, plain)
    for value in (CEILING, 0.5, 1.2, 40.0):
        assert torch.equal(predict(graph, states, 3, model, lr_interval=value), expected)
    below = predict(graph, states, 3, model, lr_interval=0.04)
    assert not torch.allclose(below, expected, atol=1e-4)


@pytest.mark.parametrize("gnn", [True, False], ids=["nino", "wnn+"])
def test_below_the_ceiling_parameters_read_theta_plus_gate_times_delta(gnn: bool) -> None:
    """The adapted model equals an ordinary model built with θ + log10(ceiling / x) · Δθ (and zero
    regime maps): the offsets enter every parameter and nothing else."""
    model = small_nino(gnn=gnn, lr_interval_input=True, lr_interval_ceiling=CEILING, regime_adapter=True)
    with torch.no_grad():
        model.lr_interval_edge.weight.zero_()
        if gnn:
            model.lr_interval_node.weight.zero_()
    graph = ng.convert(mlp((4, 8, 3)))
    states = _history(graph)
    for value in (0.04, 0.1, 0.002):
        twin = _plain_twin(model, math.log10(CEILING / value))
        got = predict(graph, states, 3, model, lr_interval=value)
        assert torch.allclose(got, predict(graph, states, 3, twin), rtol=1e-5, atol=1e-5)
    for name, p in model.named_parameters():  # the swap is undone: the module holds its parameters again
        assert isinstance(p, torch.nn.Parameter), name


def test_every_forward_path_and_embed_use_the_offsets() -> None:
    model = small_nino(lr_interval_input=True, lr_interval_ceiling=CEILING, regime_adapter=True)
    twin = _plain_twin(model, math.log10(CEILING / 0.05))
    with torch.no_grad():
        model.lr_interval_edge.weight.zero_()
        model.lr_interval_node.weight.zero_()
    graph = ng.convert(fm16())
    data = graph.to_pyg(_history(graph))
    data.lr_interval = 0.05
    with torch.no_grad():
        stored = model(data, [1, 7, 40], stream=False)
        blocks = model(data, [1, 7, 40], stream=True, edge_chunk=100)
        reference = twin(data, [1, 7, 40], stream=False)
        embedded, twin_embedded = model.embed(data), twin.embed(data)
        data.blocks = None
        streamed = model(data, [1, 7, 40], stream=True, edge_chunk=333)
    for got in (stored, blocks, streamed):
        assert torch.allclose(got, reference, rtol=1e-4, atol=1e-4)
    assert torch.allclose(embedded.edges, twin_embedded.edges, rtol=1e-4, atol=1e-4)


def test_gradients_reach_the_offsets_and_the_base() -> None:
    model = small_nino(lr_interval_input=True, lr_interval_ceiling=CEILING, regime_adapter=True).train()
    graph = ng.convert(mlp((4, 8, 3)))
    data = graph.to_pyg(_history(graph))
    data.lr_interval = 0.02
    model(data, [1, 5]).square().sum().backward()
    delta = model.regime_delta[_delta_key("edge_proj.fc.0.weight")]
    base = model.edge_proj.fc[0].weight
    assert delta.grad is not None and base.grad is not None
    assert torch.allclose(delta.grad, math.log10(CEILING / 0.02) * base.grad, rtol=1e-5, atol=1e-7)  # d/dΔ = gate · d/dθ
    model.zero_grad()
    data.lr_interval = 0.5
    model(data, [1, 5]).square().sum().backward()
    assert delta.grad is None or float(delta.grad.abs().max()) == 0  # no offsets above the ceiling


def test_save_and_load_keep_the_offsets(tmp_path) -> None:
    model = small_nino(lr_interval_input=True, lr_interval_ceiling=CEILING, regime_adapter=True)
    out = nowcast.save(model, tmp_path / "adapted")
    loaded = nowcast.load(out)
    assert loaded.config == model.config
    graph = ng.convert(mlp((4, 8, 3)))
    states = _history(graph)
    for value in (0.04, 1.0):
        assert torch.equal(predict(graph, states, 3, loaded, lr_interval=value), predict(graph, states, 3, model, lr_interval=value))


@pytest.mark.parametrize("gnn", [True, False], ids=["nino", "wnn+"])
def test_a_floor_mirrors_the_ceiling(gnn: bool) -> None:
    """``lr_interval_floor``: bit for bit the plain network at and below the floor (random non-zero
    maps and offsets), ``θ + log10(x / floor) · Δθ`` above it."""
    floor = 0.6
    model = small_nino(gnn=gnn, lr_interval_input=True, lr_interval_floor=floor, regime_adapter=True)
    assert model.lr_interval_edge.bias is None
    graph = ng.convert(mlp((4, 8, 3)))
    states = _history(graph)
    plain = predict(graph, states, 3, _plain_twin(model, 0.0))
    for value in (floor, 0.2, 0.04, 1e-4):
        assert torch.equal(predict(graph, states, 3, model, lr_interval=value), plain)
    assert not torch.allclose(predict(graph, states, 3, model, lr_interval=1.2), plain, atol=1e-4)
    with torch.no_grad():
        model.lr_interval_edge.weight.zero_()
        if gnn:
            model.lr_interval_node.weight.zero_()
    for value in (1.2, 6.0):
        twin = _plain_twin(model, math.log10(value / floor))
        assert torch.allclose(predict(graph, states, 3, model, lr_interval=value), predict(graph, states, 3, twin), rtol=1e-5, atol=1e-5)
