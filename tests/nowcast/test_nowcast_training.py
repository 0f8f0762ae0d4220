"""The training loop: curves, jumps, stopping, reproducibility."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from nowcast.bench.methods import Method, resolve_method
from nowcast.tasks import get_task
from nowcast.bench.training import RunResult, train


@pytest.fixture(scope="module")
def digits():
    return get_task("digits").load_data(None)


def test_curve_is_evaluated_on_schedule_and_reproducible(digits):
    a = train("digits", "adam", seed=3, max_steps=60, eval_every=20, data=digits, stop_at_target=False, progress=False)
    b = train("digits", "adam", seed=3, max_steps=60, eval_every=20, data=digits, stop_at_target=False, progress=False)
    assert a.steps == [0, 20, 40, 60]
    assert a.values == b.values and a.losses == b.losses
    assert all(0.0 <= v <= 1.0 for v in a.values)
    assert a.values[-1] > a.values[0] + 0.3  # it learns
    assert a.jump_steps == [] and a.stopped == "max_steps"
    c = train("digits", "adam", seed=4, max_steps=20, eval_every=20, data=digits, stop_at_target=False, progress=False)
    assert c.values[1] != a.values[1]


def test_nowcasting_jumps_every_period_and_skips_the_backward(digits, monkeypatch):
    calls = []
    loss = type(digits).loss
    monkeypatch.setattr(type(digits), "loss", lambda self, m, b: calls.append(1) or loss(self, m, b))
    r = train("digits", "linefit+", seed=0, max_steps=60, period=20, eval_every=20, data=digits, stop_at_target=False, progress=False)
    assert r.method == "linefit+" and r.jump_steps == [20, 40, 60]
    assert len(calls) == 60 - 3  # no loss (and no backward) on the jump steps


def test_stops_at_the_target_and_counts_steps(digits):
    task = dataclasses.replace(get_task("digits"), target=0.5)
    r = train(task, "adam", seed=0, max_steps=200, eval_every=10, data=digits, progress=False)
    assert r.stopped == "target" and r.steps_to_target == r.steps[-1]
    assert r.values[-1] >= 0.5 and all(v < 0.5 for v in r.values[:-1])
    assert r.reached and RunResult.from_dict(r.to_dict()) == r


def test_a_diverging_run_stops_and_is_reported(digits):
    class Exploding(type(digits)):
        def loss(self, model, batch):
            return super().loss(model, batch) * float("nan")

    data = Exploding(digits.train_x, digits.train_y, digits.val_x, digits.val_y, batch_size=128)
    r = train("digits", "adam", max_steps=50, data=data, progress=False)
    assert r.stopped == "diverged" and r.steps_to_target is None


def test_callback_sees_every_step(digits):
    seen = []
    train("digits", Method("adam"), max_steps=5, eval_every=5, data=digits, progress=False, stop_at_target=False,
          callback=lambda step, model, opt: seen.append((step, isinstance(model, torch.nn.Module), hasattr(opt, "step"))))
    assert seen == [(s, True, True) for s in range(1, 6)]


def test_method_names_resolve_with_clear_errors(tmp_path):
    assert resolve_method("adam").predictor is None
    assert resolve_method("Linefit+").name == "linefit+"
    with pytest.raises(ValueError, match="unknown method 'sgd'.*nino"):
        resolve_method("sgd")
    with pytest.raises((FileNotFoundError, ValueError)):
        resolve_method("nino", nino_checkpoint=tmp_path / "missing.pt")


def test_progress_bar_and_bad_arguments(digits, capsys):
    r = train("digits", "adam", max_steps=3, eval_every=1, data=digits, progress=True, stop_at_target=False)
    assert r.steps == [0, 1, 2, 3] and not math.isnan(r.best)
    with pytest.raises(ValueError, match="positive"):
        train("digits", "adam", max_steps=0, data=digits, progress=False)


def test_method_names_a_checkpoint_with_at(tmp_path):
    from nowcast.model import save_model as save
    from nowcast_testutils import small_nino

    save(small_nino(), tmp_path / "mine")
    method = resolve_method(f"nino@{tmp_path / 'mine'}")
    assert method.name == "nino@mine" and method.nowcasts and method.checkpoint == str(tmp_path / "mine")
    with pytest.raises(ValueError, match="only nino@PATH"):
        resolve_method(f"adam@{tmp_path / 'mine'}")
    with pytest.raises((FileNotFoundError, ValueError)):
        resolve_method(f"nino@{tmp_path / 'absent'}")
