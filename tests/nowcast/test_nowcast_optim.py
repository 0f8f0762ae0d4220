"""The NiNo optimizer wrapper: schedule, need_grads, resume, NaN guard, LR schedulers, predictors."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from nowcast_testutils import Layered, Recording, regression_data, small_nino
from torch import nn

import neuralgraph as ng
from neuralgraph.examples import mlp
from nowcast import horizon_schedule, Linefit, LinefitPlus, NiNo, NiNoPredictor, WNN, WNNPlus

X, Y = regression_data()


def make_net(seed: int = 0, layered: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    return Layered((4, 8, 8, 3)) if layered else mlp((4, 8, 3))


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Step-dependent minibatches, so that a resumed run must restart at the right step."""
    i = (step * 8) % len(X)
    return X[i : i + 8], Y[i : i + 8]


def train(net: nn.Module, opt, start: int, stop: int, sched=None, skip_backward: bool = True, log: list | None = None) -> None:
    for step in range(start, stop):
        opt.zero_grad()
        if not skip_backward or getattr(opt, "need_grads", True):
            x, y = batch(step)
            nn.functional.mse_loss(net(x), y).backward()
        if log is not None:
            log.append(ng.flatten_params(net))
        opt.step()
        if sched is not None:
            sched.step()


def wrap(net: nn.Module, predictor, lr: float = 1e-2, **kwargs) -> NiNo:
    base = torch.optim.Adam(net.parameters(), lr=lr)
    options = {"period": 10, "ctx": 5, "max_train_steps": 40, **kwargs}
    return NiNo(base, net, predictor, **options)


def test_horizon_schedule() -> None:
    assert horizon_schedule(10_000, 1000) == [40, 33, 26, 21, 16, 11, 8, 5, 3, 1]
    assert horizon_schedule(500, 1000) == [40]
    assert horizon_schedule(1999, 1000) == [40]
    assert horizon_schedule(2000, 1000) == [40, 1]
    assert horizon_schedule(4000, 1000, seq_len=9, power=1) == [9, 6, 4, 1]
    with pytest.raises(ValueError):
        horizon_schedule(0, 1000)


def test_jumps_happen_exactly_at_the_documented_steps() -> None:
    net = make_net()
    predictor = Recording()
    opt = wrap(net, predictor)
    assert opt.k_schedule == horizon_schedule(40, 10) and opt.interval == 2
    flags, snapshots = [], []
    for step in range(55):
        flags.append(opt.need_grads)
        snapshots.append(ng.flatten_params(net))
        opt.zero_grad()
        if opt.need_grads:
            x, y = batch(step)
            nn.functional.mse_loss(net(x), y).backward()
        opt.step()
        if step in (9, 19, 29, 39, 49):
            # the parameters are now the prediction
            assert torch.equal(ng.flatten_params(net), predictor.outputs[-1])
    jump_steps = [9, 19, 29, 39, 49]
    assert [s for s, f in enumerate(flags) if not f] == jump_steps
    assert opt.jumps == 5 and opt.step_count == 55
    # k follows the schedule, then stays at its last value
    assert [k for k, _ in predictor.calls] == opt.k_schedule + [opt.k_schedule[-1]]
    # the states are the parameters after 10j + 1, 3, 5, 7, 9 updates, i.e. at the start of steps 10j + 1, ..., 10j + 9
    for j, (_, states) in enumerate(predictor.calls):
        expected = torch.stack([snapshots[10 * j + t] for t in (1, 3, 5, 7, 9)], dim=1)
        assert torch.equal(states, expected)
    # the base optimizer did not run on jump steps
    first = next(iter(net.parameters()))
    assert int(opt.base.state[first]["step"]) == 55 - 5


def test_resume_mid_period_is_bit_exact() -> None:
    for predictor_factory in (Linefit, lambda: NiNoPredictor(small_nino())):
        net = make_net()
        opt = wrap(net, predictor_factory())
        train(net, opt, 0, 37)
        reference = ng.flatten_params(net)

        net = make_net()
        opt = wrap(net, predictor_factory())
        train(net, opt, 0, 25)  # two states of the third period recorded
        assert opt.num_recorded == 2
        buffer = io.BytesIO()
        torch.save({"model": net.state_dict(), "opt": opt.state_dict()}, buffer)
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=True)

        net = make_net(seed=123)
        opt = wrap(net, predictor_factory())
        net.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        assert opt.step_count == 25 and opt.num_recorded == 2 and opt.jumps == 2
        train(net, opt, 25, 37)
        assert torch.equal(ng.flatten_params(net), reference)


def test_state_dict_is_a_plain_optimizer_state_dict_plus_nowcast_entries() -> None:
    net = make_net()
    opt = wrap(net, Linefit())
    train(net, opt, 0, 3)
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups", "nowcast"}
    assert sd["nowcast"]["step"] == 3 and sd["nowcast"]["history"].shape == (opt.num_params, 1)
    base = torch.optim.Adam(make_net().parameters(), lr=1e-2)
    base.load_state_dict({k: v for k, v in sd.items() if k != "nowcast"})
    other = wrap(make_net(), Linefit())
    with pytest.warns(RuntimeWarning, match="restarts"):
        other.load_state_dict({k: v for k, v in sd.items() if k != "nowcast"})
    bad = opt.state_dict()
    bad["nowcast"]["ctx"] = 4
    with pytest.raises(ValueError, match="ctx=4"):
        other.load_state_dict(bad)


def test_nan_predictions_are_discarded() -> None:
    net = make_net()
    reference_net = make_net()
    opt = wrap(net, Recording(nan=True))
    base = torch.optim.Adam(reference_net.parameters(), lr=1e-2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(net, opt, 0, 25, skip_backward=False)
    train(reference_net, base, 0, 25)
    assert torch.equal(ng.flatten_params(net), ng.flatten_params(reference_net))
    assert opt.jumps == 0 and opt.discarded == 2
    assert sum(issubclass(w.category, RuntimeWarning) and "NaN" in str(w.message) for w in caught) == 2
    # recording restarts after a discarded prediction
    assert opt.num_recorded == 2


def test_cosine_schedule_continues_after_load_state_dict() -> None:
    for hold_base in (False, True):
        def run(start: int, stop: int, net, opt, sched, lrs: list) -> None:
            for step in range(start, stop):
                train(net, opt, step, step + 1)
                sched.step()
                lrs.append(opt.param_groups[0]["lr"])

        def fresh(seed: int = 0):
            net = make_net(seed)
            opt = wrap(net, Linefit())
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt.base if hold_base else opt, T_max=30)
            return net, opt, sched

        net, opt, sched = fresh()
        full: list[float] = []
        run(0, 30, net, opt, sched, full)
        reference = ng.flatten_params(net)

        net, opt, sched = fresh()
        resumed: list[float] = []
        run(0, 13, net, opt, sched, resumed)
        saved = {"model": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
        net, opt, sched = fresh(seed=1)
        net.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        assert opt.param_groups is opt.base.param_groups
        assert sched.optimizer.param_groups is opt.base.param_groups
        run(13, 30, net, opt, sched, resumed)
        assert resumed == full
        assert full[-1] < 1e-6 and opt.param_groups[0]["lr"] == full[-1]
        assert torch.equal(ng.flatten_params(net), reference)


@pytest.mark.parametrize(
    "factory",
    [Linefit, LinefitPlus, lambda: WNN(hid=8), lambda: NiNoPredictor(small_nino()), lambda: WNNPlus(small_nino(gnn=False)),
     small_nino],
    ids=["linefit", "linefit+", "wnn", "nino", "wnn+", "nino-model"],
)
def test_any_predictor_drives_the_wrapper(factory) -> None:
    torch.manual_seed(0)
    predictor = factory()
    net = make_net()
    opt = wrap(net, predictor)
    log: list[torch.Tensor] = []
    train(net, opt, 0, 10, log=log)
    graph = ng.convert(net)
    states = torch.stack([log[t] for t in (1, 3, 5, 7, 9)], dim=1)
    from nowcast import predict

    expected = predict(graph, states, opt.k_schedule[0], predictor)
    assert opt.jumps == 1 and torch.equal(ng.flatten_params(net), expected)
    train(net, opt, 10, 20)
    assert opt.jumps == 2 and torch.isfinite(ng.flatten_params(net)).all()


def test_per_block_mode_matches_whole_graph_mode() -> None:
    for predictor, exact in ((Linefit(), True), (NiNoPredictor(small_nino()), False)):
        results = []
        for per_block in (False, True):
            net = make_net(layered=True)
            opt = wrap(net, predictor, per_block=per_block)
            train(net, opt, 0, 20)
            assert opt.jumps == 2
            results.append(ng.flatten_params(net))
        if exact:
            assert torch.equal(results[0], results[1])
        else:
            torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-6)


def test_reset_base_state_after_jump() -> None:
    for reset in (False, True):
        net = make_net()
        opt = wrap(net, Linefit(), reset_base_state_after_jump=reset)
        train(net, opt, 0, 10)
        first = next(iter(net.parameters()))
        assert (len(opt.base.state[first]) == 0) == reset
        train(net, opt, 10, 11)
        assert int(opt.base.state[first]["step"]) == (1 if reset else 10)


def test_frozen_and_unused_parameters() -> None:
    class WithExtras(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp((4, 8, 3))
            self.unused = nn.Linear(3, 3)  # never gets a gradient

        def forward(self, x):
            return self.net(x)

    torch.manual_seed(0)
    model = WithExtras()
    model.net[0].bias.requires_grad_(False)
    frozen = model.net[0].bias.detach().clone()
    unused = model.unused.weight.detach().clone()
    trainable = [p for p in model.parameters() if p.requires_grad]
    base = torch.optim.Adam(trainable, lr=1e-2)
    predictor = Recording()
    opt = NiNo(base, model, predictor, period=10, ctx=5, max_train_steps=40)
    for step in range(10):
        opt.zero_grad()
        if opt.need_grads:
            x, y = batch(step)
            nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    assert opt.jumps == 1
    assert torch.equal(model.net[0].bias, frozen)  # frozen: recorded, never overwritten
    assert torch.equal(model.unused.weight, unused)  # no gradient: constant history, Linefit keeps it
    assert predictor.calls[0][1].shape == (ng.flatten_params(model).numel(), 5)


def test_wrapper_checks_its_arguments() -> None:
    net = make_net()
    with pytest.raises(ValueError, match="multiple of ctx"):
        wrap(net, Linefit(), period=12)
    with pytest.raises(ValueError, match="ctx=5"):
        wrap(net, WNN(ctx=4))
    with pytest.raises(ValueError, match="not parameters of the model"):
        NiNo(torch.optim.Adam(make_net(1).parameters()), net, Linefit(), max_train_steps=10)
    with pytest.raises(ValueError, match="graph does not describe"):
        wrap(net, Linefit(), graph=ng.convert(mlp((4, 5, 3))), per_block=True)
    with pytest.raises(TypeError):
        NiNo(net, net, Linefit(), max_train_steps=10)
    opt = wrap(net, small_nino())
    assert opt.graph is not None and "NiNo" in repr(opt)


def test_closure_and_return_value() -> None:
    net = make_net()
    opt = wrap(net, Linefit())

    def closure():
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(X), Y)
        loss.backward()
        return loss

    losses = [opt.step(closure) for _ in range(10)]
    assert all(isinstance(v, torch.Tensor) for v in losses[:9]) and losses[9] is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_wrapper_on_cuda() -> None:
    torch.manual_seed(0)
    net = mlp((4, 8, 3)).cuda()
    for predictor in (Linefit(), NiNoPredictor(small_nino().cuda()), NiNoPredictor(small_nino())):
        opt = NiNo(torch.optim.Adam(net.parameters(), lr=1e-2), net, predictor, period=10, max_train_steps=40)
        for step in range(10):
            opt.zero_grad()
            if opt.need_grads:
                x, y = batch(step)
                nn.functional.mse_loss(net(x.cuda()), y.cuda()).backward()
            opt.step()
        assert opt.jumps == 1 and all(p.is_cuda for p in net.parameters())
        assert torch.isfinite(ng.flatten_params(net)).all()
