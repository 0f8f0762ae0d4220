"""``nowcast.RegimeRouter``: two NiNo models in one checkpoint, each predicting in its own regime.

Every prediction must be bit for bit one expert's (the one on its side of the split), through
:func:`nowcast.predict`, per-block prediction and the optimizer wrapper; the directory format
round-trips without pickle and is found by every loader that takes a checkpoint path."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nowcast_testutils import small_nino
from torch import nn

import neuralgraph as ng
import nowcast
from neuralgraph.examples import mlp
from nowcast import NiNo, predict, RegimeRouter
from nowcast.errors import CheckpointError
from nowcast.bench.methods import resolve_method

SPLIT = 0.2


def _history(graph: ng.NeuralGraph, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    start = torch.randn(graph.num_params, 1, generator=gen)
    return start + 0.05 * torch.randn(graph.num_params, 5, generator=gen).cumsum(1)


@pytest.fixture(scope="module")
def experts():
    """Two different random models."""
    return small_nino(seed=0), small_nino(seed=1)


@pytest.fixture(scope="module")
def graph():
    return ng.convert(mlp((4, 8, 3)))


@settings(max_examples=20, deadline=None)
@given(lr_interval=st.floats(min_value=1e-4, max_value=10.0), k=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_each_prediction_is_exactly_the_expert_of_its_side(experts, graph, lr_interval, k, seed):
    below, above = experts
    router = RegimeRouter(below, above, SPLIT)
    states = _history(graph, seed)
    got = predict(graph, states, k, router, lr_interval=lr_interval)
    from_below = predict(graph, states, k, below)
    from_above = predict(graph, states, k, above)
    assert not torch.equal(from_below, from_above)  # the experts differ, so routing is visible
    assert torch.equal(got, from_below if lr_interval < SPLIT else from_above)


def test_the_split_itself_belongs_to_the_upper_expert_and_per_block_routes_too(experts, graph):
    below, above = experts
    router = RegimeRouter(below, above, SPLIT)
    states = _history(graph)
    assert router.expert(SPLIT) is router.above and router.expert(torch.tensor(0.199)) is router.below
    for lr_interval, expert in ((0.04, below), (1.2, above)):
        got = predict(graph, states, 7, router, per_block=True, lr_interval=lr_interval)
        assert torch.equal(got, predict(graph, states, 7, expert, per_block=True))
    assert router.context_hops == max(router.below.context_hops, router.above.context_hops)


def test_save_and_load_round_trip_and_every_loader_finds_it(experts, graph, tmp_path):
    router = RegimeRouter(*experts, SPLIT)
    router.save(tmp_path / "routed")
    meta = json.loads((tmp_path / "routed" / "config.json").read_text())
    assert meta["format"] == "nowcast.RegimeRouter" and meta["split"] == SPLIT
    assert meta["above"] == experts[1].config.to_dict() and meta["below"] == experts[0].config.to_dict()
    states = _history(graph)
    for loaded in (
        RegimeRouter.load(tmp_path / "routed"),
        nowcast.load(tmp_path / "routed"),
        nowcast.resolve(str(tmp_path / "routed")),
        resolve_method(f"nino@{tmp_path / 'routed'}").predictor,
    ):
        assert isinstance(loaded, RegimeRouter) and loaded.split == SPLIT
        for lr_interval in (0.04, 1.2):
            assert torch.equal(loaded.predict(graph, states, 5, lr_interval=lr_interval), router.predict(graph, states, 5, lr_interval=lr_interval))


def test_the_wrapper_routes_by_its_learning_rate(experts):
    """Adam at lr 0.01 with states every 2 steps (period 10, ctx 5): lr_interval 0.02 < split -> below;
    at lr 0.2 (0.4) -> above; either way the jump lands exactly where that expert alone sends it."""
    below, above = experts
    x, y = torch.randn(16, 4, generator=torch.Generator().manual_seed(0)), torch.randn(16, 3, generator=torch.Generator().manual_seed(1))

    def run(predictor, lr):
        torch.manual_seed(0)
        net = mlp((4, 8, 3))
        opt = NiNo(torch.optim.Adam(net.parameters(), lr=lr), net, predictor, period=10, ctx=5, max_train_steps=40)
        for _ in range(10):
            opt.zero_grad()
            nn.functional.mse_loss(net(x), y).backward()
            opt.step()
        assert opt.jumps == 1
        return ng.flatten_params(net)

    router = RegimeRouter(below, above, SPLIT)
    assert torch.equal(run(router, 0.01), run(nowcast.NiNoPredictor(below), 0.01))
    assert torch.equal(run(router, 0.2), run(nowcast.NiNoPredictor(above), 0.2))
    assert not torch.equal(run(router, 0.01), run(nowcast.NiNoPredictor(above), 0.01))


def test_bad_input_is_refused_with_what_to_do(experts, graph, tmp_path):
    below, above = experts
    router = RegimeRouter(below, above, SPLIT)
    states = _history(graph)
    with pytest.raises(ValueError, match="pass lr_interval="):
        router.predict(graph, states, 3)
    for bad in (0.0, -1.0, float("nan"), float("inf"), True, "0.1", torch.ones(2)):
        with pytest.raises(ValueError, match="lr_interval must be a positive number"):
            router.predict(graph, states, 3, lr_interval=bad)
    for bad in (0, -0.5, float("nan"), True, "0.2"):
        with pytest.raises(ValueError, match="split must be a positive number"):
            RegimeRouter(below, above, bad)
    with pytest.raises(ValueError, match=r"differ in \(ctx, seq_len\)"):
        RegimeRouter(below, small_nino(seq_len=8), SPLIT)
    with pytest.raises(TypeError, match="above= must be"):
        RegimeRouter(below, "linefit", SPLIT)

    router.save(tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "config.json").read_text())
    del meta["above"]
    (tmp_path / "r" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="no 'above' expert config"):
        RegimeRouter.load(tmp_path / "r")
    router.save(tmp_path / "r2")
    RegimeRouter(small_nino(seed=2, hid=24), small_nino(seed=3, hid=24), SPLIT).save(tmp_path / "swapped")  # weights of other shapes
    (tmp_path / "r2" / "model.safetensors").write_bytes((tmp_path / "swapped" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="below expert"):
        RegimeRouter.load(tmp_path / "r2")
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "config.json").write_text(json.dumps({"format": "nowcast.RegimeRouter"}))
        RegimeRouter.load(tmp_path / "empty")
