"""The training regime (``lr_interval``: the base learning rate times the steps between two
states): the optimizer wrapper hands a regime-routed predictor the same number
:func:`nowcast.predict` takes."""

from __future__ import annotations

import pytest
import torch
from nowcast_testutils import small_nino
from torch import nn

import neuralgraph as ng
from neuralgraph.examples import mlp
from nowcast import NiNo, predict, RegimeRouter


def _history(graph: ng.NeuralGraph, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    start = torch.randn(graph.num_params, 1, generator=gen)
    return start + 0.05 * torch.randn(graph.num_params, 5, generator=gen).cumsum(1)


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


def test_the_wrapper_drives_a_routed_checkpoint_like_predict() -> None:
    torch.manual_seed(0)
    net = mlp((4, 8, 3))
    router = RegimeRouter(small_nino(seed=0), small_nino(seed=1), 0.05)
    opt = NiNo(torch.optim.Adam(net.parameters(), lr=0.01), net, router, period=10, ctx=5, max_train_steps=40)
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
    graph, states, k = ng.convert(net), torch.stack(history, 1), opt.k_schedule[0]
    expected = predict(graph, states, k, router, lr_interval=0.01 * 2)  # 0.02 < 0.05: the first expert
    assert opt.jumps == 1 and torch.equal(ng.flatten_params(net), expected)
    assert torch.equal(expected, predict(graph, states, k, router.below.model))
