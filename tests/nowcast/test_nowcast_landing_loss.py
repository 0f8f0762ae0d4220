"""The landing term: the task loss of the network a prediction lands on, against an independent
evaluation of the same network, its gradient, and meta-training with it (selection, exact resume)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nowcast_testutils import interrupt_at

import neuralgraph as ng
from nowcast.jump_error import jump_windows
from nowcast.jump_landing import load_flat
from nowcast.landing_loss import LandingLoss, LandingScore, param_slots
from nowcast.metatrain import MetaDataset, MetaTrainConfig, RunSpec, collect_run, export, load_result, metatrain
from nowcast.metatrain.dataset import _slot_mask
from nowcast.tasks import get_task

SEQ_LEN = 8


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data = get_task("digits").load_data(None)
    train, val = tmp_path_factory.mktemp("train"), tmp_path_factory.mktemp("val")
    for spec in (RunSpec("digits", 0, 1.0, 160, every=20), RunSpec("digits", 1, 0.5, 160, every=20)):
        collect_run(spec, train, data=data)
    collect_run(RunSpec("digits", 3, 1.0, 400, every=20), val, data=data)  # long enough for 3 of the wrapper's jumps
    dataset = MetaDataset(train, seq_len=SEQ_LEN)
    return dataset, MetaDataset(val, seq_len=SEQ_LEN, graphs=dataset.graphs)


def small(**changes) -> MetaTrainConfig:
    base = dict(hid=8, seq_len=SEQ_LEN, steps=12, batch=2, lr=3e-3, warmup=2, checkpoint_every=4, eval_every=4,
                eval_windows=2, val_windows=3, log_every=4, landing_weight=1.0, select="val_landing")
    base.update(changes)
    return MetaTrainConfig(**base)


@pytest.mark.parametrize("task", ["digits", "shakespeare-3-24", "shakespeare-2-32"])
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_param_slots_read_every_parameter_back_out_of_the_edges(task, seed):
    graph = ng.convert(get_task(task).model(0), lpe=0)
    flat = torch.randn(graph.num_params, generator=torch.Generator().manual_seed(seed))
    slots = param_slots(graph, _slot_mask(graph))
    assert torch.equal(graph.edge_features(flat).reshape(-1)[slots], flat)
    assert slots.unique().numel() == graph.num_params


def test_the_excess_is_the_task_loss_of_the_loaded_network_minus_the_recorded_one(runs):
    dataset, _ = runs
    landing = LandingLoss(seed=3)
    data = get_task("digits").load_data(None)
    network = get_task("digits").model(0)
    for index in (0, len(dataset) // 2):
        item = dataset[index]
        meta = dataset.trajectories[item.window.traj].meta
        inputs, futures, _ = dataset.window_states(index)
        e, f = item.slot_mask.shape
        k = int(torch.nonzero(item.horizon_mask).max()) + 1
        recorded = item.last + item.target.view(e, f, SEQ_LEN)[:, :, k - 1]
        assert float(landing(item, recorded, meta, horizon=k, key=7)) == 0.0
        # staying at the last state, measured independently: load the raw states into a real network
        batch = landing.batch("digits", 7)

        def loss_of(flat):
            load_flat(network, flat, meta["architecture"]["params"])
            with torch.no_grad():
                return float(data.loss(network, batch))

        expected = loss_of(inputs[:, -1]) - loss_of(futures[:, k - 1])
        assert float(landing(item, item.last, meta, horizon=k, key=7)) == pytest.approx(expected, abs=1e-4)
        assert expected != 0.0
    with pytest.raises(ValueError, match="no recorded state"):
        landing(item, item.last, meta, horizon=SEQ_LEN + 1, key=0)
    with pytest.raises(ValueError, match="shape"):
        landing(item, item.last[:, :1], meta, horizon=1, key=0)


def test_the_gradient_is_the_derivative_of_the_task_loss(runs):
    dataset, _ = runs
    landing = LandingLoss()
    item = dataset[1]
    meta = dataset.trajectories[item.window.traj].meta
    point = item.last + 0.3 * torch.randn(item.last.shape, generator=torch.Generator().manual_seed(0))
    point.requires_grad_(True)
    loss = landing(item, point, meta, horizon=2, key=1)
    (grad,) = torch.autograd.grad(loss, point)
    assert float(grad[~item.slot_mask].abs().max()) == 0.0  # slots that carry no parameter do not matter
    assert float(grad.abs().max()) > 0.0
    direction = torch.randn(point.shape, generator=torch.Generator().manual_seed(1)) * item.slot_mask
    eps = 1e-3
    with torch.no_grad():
        up = float(landing(item, point + eps * direction, meta, horizon=2, key=1))
        down = float(landing(item, point - eps * direction, meta, horizon=2, key=1))
    assert (up - down) / (2 * eps) == pytest.approx(float((grad * direction).sum()), rel=2e-2)


def test_meta_training_with_the_landing_term_selects_and_resumes_exactly(runs, tmp_path):
    dataset, val = runs
    cfg = small()
    whole = metatrain(dataset, tmp_path / "whole", cfg, progress=False, val_dataset=val)
    landed = whole.evals["val_landing"]
    assert len(landed) == len(whole.evals["step"]) and all(math.isfinite(v) for v in landed)
    best = min(range(len(landed)), key=landed.__getitem__)
    assert whole.best["step"] == whole.evals["step"][best] and whole.best["val_landing"] == landed[best]
    assert len(whole.history["landing"]) == cfg.steps
    # the recorded score is the selected model's
    score = LandingScore(val, LandingLoss(seed=cfg.seed))
    assert len(score.pairs) == len(jump_windows(val)) > 0
    assert score(whole.selected_model()) == pytest.approx(landed[best], rel=1e-5)
    # the term changes training: the same run without it ends elsewhere
    plain = metatrain(dataset, tmp_path / "plain", small(landing_weight=0.0, select="val_loss"), progress=False, val_dataset=val)
    assert "val_landing" not in plain.evals and "landing" not in plain.history
    assert not all(torch.equal(plain.model.state_dict()[k], v) for k, v in whole.model.state_dict().items())

    with pytest.raises(KeyboardInterrupt):
        metatrain(dataset, tmp_path / "split", cfg, progress=False, val_dataset=val, step_callback=interrupt_at(6))
    resumed = metatrain(dataset, tmp_path / "split", cfg, progress=False, val_dataset=val)
    assert resumed.evals == whole.evals and resumed.history == whole.history and resumed.best == whole.best
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load_result(tmp_path / "split").config.landing_weight == 1.0
    card = (export(whole, tmp_path / "ckpt") / "MODEL_CARD.md").read_text()
    assert "landing term (weight 1)" in card and "the lowest `val_landing`" in card
    # another weight is another recipe: refused on resume
    with pytest.raises(ValueError, match="landing_weight"):
        metatrain(dataset, tmp_path / "split", small(landing_weight=2.0), progress=False, val_dataset=val)


def test_bad_landing_settings_are_refused():
    with pytest.raises(ValueError, match="landing_weight"):
        small(landing_weight=-1.0)
    with pytest.raises(ValueError, match="landing_weight"):
        small(landing_weight=float("nan"))
    with pytest.raises(ValueError, match="val_landing"):
        small(landing_weight=0.0)
