"""NaN / Inf in states or parameters raise an error naming where they are; a NaN *prediction*
is still discarded with a warning, leaving the model as it was."""

from __future__ import annotations

import warnings

import pytest
import torch
from nowcast_testutils import Layered, small_nino
from torch import nn

import neuralgraph as ng
from neuralgraph.errors import NonFiniteError
from nowcast import Linefit, NiNo, predict


def history(graph: ng.NeuralGraph, ctx: int = 5, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    start = torch.randn(graph.num_params, 1, generator=gen)
    return start + 0.01 * torch.arange(ctx).float() * torch.randn(graph.num_params, 1, generator=gen)


def offset(graph: ng.NeuralGraph, name: str) -> int:
    return graph.param_slices()[name].start


# ------------------------------------------------------------------ predict
@pytest.mark.parametrize("predictor", ["linefit", "nino", "wnn+"])
@pytest.mark.parametrize("per_block", [False, True])
def test_predict_names_the_non_finite_state(predictor: str, per_block: bool) -> None:
    graph = ng.convert(Layered())
    model = {"linefit": Linefit(), "nino": small_nino(gnn=True), "wnn+": small_nino(gnn=False)}[predictor]
    states = history(graph)
    states[offset(graph, "layers.2.weight") + 9, 3] = float("nan")
    with pytest.raises(NonFiniteError, match=r"states: parameter 'layers.2.weight' is nan at flat index 9, "
                                             r"element \(1, 1\) of shape \(8, 8\) in state 3 of 5 \(0 = oldest\)") as info:
        predict(graph, states, 2, model, per_block=per_block)
    assert (info.value.name, info.value.index, info.value.state) == ("layers.2.weight", 9, 3)
    assert isinstance(info.value, ValueError)


def test_predict_without_a_graph_names_the_row() -> None:
    states = torch.zeros(20, 5)
    states[17, 0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"row 17 of the flat vector is inf in state 0 of 5"):
        predict(None, states, 1, "linefit")
    with pytest.raises(NonFiniteError, match="row 17"):
        Linefit().predict(None, states, 1)  # the baselines check their input too


def test_finite_states_predict_as_before() -> None:
    graph = ng.convert(Layered())
    states = history(graph)
    out = predict(graph, states, 2, small_nino())
    assert out.shape == (graph.num_params,) and bool(torch.isfinite(out).all())


# ------------------------------------------------------------------ the optimizer wrapper
def make(predictor) -> tuple[nn.Module, NiNo]:
    torch.manual_seed(0)
    net = Layered()
    base = torch.optim.SGD(net.parameters(), lr=0.05)
    return net, NiNo(base, net, predictor, period=10, ctx=5, max_train_steps=100)


def train(net: nn.Module, opt: NiNo, steps: int) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        opt.zero_grad()
        net(torch.randn(4, 4, generator=gen)).pow(2).mean().backward()
        opt.step()


def test_recording_non_finite_parameters_raises_naming_them() -> None:
    net, opt = make("linefit")
    train(net, opt, 5)  # a state every 2 steps: recorded at steps 1 and 3; step 5 records the third
    assert opt.num_recorded == 2
    with torch.no_grad():
        net.layers[4].bias[2] = float("inf")
    opt.zero_grad()
    with pytest.raises(NonFiniteError, match=r"NiNo step 5: the parameters to record as state 3 of 5 are not finite.*"
                                             r"parameter 'layers.4.bias' is inf at flat index 2") as info:
        opt.step()
    assert (info.value.name, info.value.index) == ("layers.4.bias", 2)
    assert opt.num_recorded == 2  # the bad state was not counted


def test_non_finite_prediction_is_still_discarded_with_a_warning() -> None:
    nino = small_nino()
    with torch.no_grad():
        next(nino.parameters()).fill_(float("nan"))  # every prediction is NaN
    net, opt = make(nino)
    train(net, opt, 9)
    before = ng.flatten_params(net)
    with pytest.warns(RuntimeWarning, match="NaN/Inf value"):
        opt.zero_grad()
        opt.step()  # the 10th step jumps: its NaN prediction is discarded
    assert opt.jumps == 0 and opt.discarded == 1
    assert bool(torch.isfinite(ng.flatten_params(net)).all())
    assert torch.equal(ng.flatten_params(net), before)  # no gradients: the base step changed nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(net, opt, 3)  # training goes on
