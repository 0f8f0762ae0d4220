"""Trajectory collection: file formats, exact resumption, agreement with the training loop."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import neuralgraph as ng
from nowcast.metatrain import RECIPES, RunSpec, collect, collect_run, get_recipe, load_trajectory
from nowcast.tasks import get_task
from nowcast.bench.training import train


@pytest.fixture(scope="module")
def digits():
    return get_task("digits").load_data(None)


class Interrupt(Exception):
    pass


def _stop_at(step: int):
    def callback(s, model):
        if s == step:
            raise Interrupt(f"killed at step {s}")

    return callback


def test_files_and_metadata(tmp_path, digits):
    spec = RunSpec("digits", seed=3, lr_mult=0.5, steps=60, every=20)
    run_dir = collect_run(spec, tmp_path, data=digits)
    assert run_dir == tmp_path / spec.run_id == tmp_path / "digits_s3_lr0.5_n60_e20"
    assert not (run_dir / "resume.pt").exists()  # removed once the run is finished
    traj = load_trajectory(run_dir)
    meta = traj.meta
    assert meta["status"] == "complete" and traj.complete and traj.n_snapshots == 4
    assert traj.params.shape == (4, 14378) and traj.params.dtype == np.float32
    assert meta["snapshots"]["step"] == [0, 20, 40, 60]
    assert meta["snapshots"]["loss"][0] is None and all(v > 0 for v in meta["snapshots"]["loss"][1:])
    assert all(0 <= v <= 1 for v in meta["snapshots"]["metric"]) and meta["metric_name"] == "accuracy"
    task = get_task("digits")
    base_lr = task.make_optimizer(task.model(0)).param_groups[0]["lr"]
    assert meta["optimizer"]["name"] == "Adam" and meta["optimizer"]["lr"] == pytest.approx(0.5 * base_lr)
    assert meta["optimizer"]["settings"]["betas"] == [0.9, 0.999]
    model = task.model(3)
    arch = meta["architecture"]
    assert arch["params"] == [[n, list(p.shape)] for n, p in model.named_parameters()]
    assert arch["model_class"] == "neuralgraph.examples.FMConvNet" and arch["converter"] == "sequential"
    # step 0 is the seeded initialisation; the graph can be rebuilt from the stored spec alone
    assert torch.equal(traj.states([0])[:, 0], ng.flatten_params(model))
    graph = ng.convert([(n, tuple(s)) for n, s in arch["params"]], arch=arch["converter"], config=arch["converter_config"])
    assert graph.num_params == traj.params.shape[1]
    json.dumps(meta, allow_nan=False)  # strict JSON (no NaN)


def test_interrupted_run_resumes_bit_identically(tmp_path, digits):
    spec = RunSpec("digits", seed=1, lr_mult=1.0, steps=100, every=20)
    whole = collect_run(spec, tmp_path / "whole", data=digits)
    with pytest.raises(Interrupt):
        collect_run(spec, tmp_path / "split", data=digits, callback=_stop_at(53))
    part = tmp_path / "split" / spec.run_id
    assert (part / "resume.pt").is_file()
    meta = json.loads((part / "meta.json").read_text())
    assert meta["status"] == "running" and meta["snapshots"]["step"] == [0, 20, 40]
    seen: list[int] = []
    collect_run(spec, tmp_path / "split", data=digits, callback=lambda s, m: seen.append(s))
    assert seen[0] == 41 and seen[-1] == 100  # continued from the last snapshot
    assert (whole / "params.npy").read_bytes() == (part / "params.npy").read_bytes()
    a, b = load_trajectory(whole).meta, load_trajectory(part).meta
    assert a["snapshots"] == b["snapshots"] and b["status"] == "complete"


def test_trajectory_equals_the_training_loop(tmp_path, digits):
    spec = RunSpec("digits", seed=2, steps=40, every=20)
    traj = load_trajectory(collect_run(spec, tmp_path, data=digits))
    captured = {}
    train("digits", "adam", seed=2, max_steps=40, eval_every=20, data=digits, stop_at_target=False, progress=False,
          callback=lambda s, m, o: captured.__setitem__(s, ng.flatten_params(m).clone()))
    assert torch.equal(traj.states([1, 2]), torch.stack([captured[20], captured[40]], dim=1))


def test_finished_runs_are_not_redone(tmp_path, digits, monkeypatch):
    runs = [RunSpec("digits", 0, 1.0, 20, every=20), RunSpec("digits", 1, 2.0, 20, every=20)]
    dirs = collect(runs, tmp_path, progress=False)
    stamps = [(d / "params.npy").stat().st_mtime_ns for d in dirs]
    import nowcast.metatrain.collection as collect_mod

    def fail(*args, **kwargs):
        raise AssertionError("a finished run was collected again")

    monkeypatch.setattr(collect_mod, "collect_run", fail)
    assert collect(runs, tmp_path, progress=False) == dirs
    assert [(d / "params.npy").stat().st_mtime_ns for d in dirs] == stamps


def test_diverging_run_stops_and_keeps_valid_snapshots(tmp_path, digits):
    class Exploding(type(digits)):
        def loss(self, model, batch):
            loss = super().loss(model, batch)
            self.calls = getattr(self, "calls", 0) + 1
            return loss * float("nan") if self.calls > 25 else loss

    data = Exploding(digits.train_x, digits.train_y, digits.val_x, digits.val_y, batch_size=128)
    traj = load_trajectory(collect_run(RunSpec("digits", 0, 1.0, 60, every=20), tmp_path, data=data))
    assert traj.meta["status"] == "diverged" and traj.complete and traj.n_snapshots == 2
    assert np.isfinite(traj.params[:2]).all()


def test_specs_and_recipes():
    with pytest.raises(ValueError, match="multiple"):
        RunSpec("digits", steps=30, every=20)
    with pytest.raises(ValueError, match="lr_mult"):
        RunSpec("digits", lr_mult=0)
    assert RunSpec("fm16").resolved_steps() == 10_000
    spec = RunSpec("fm16", 4, 1.5, 400)
    assert RunSpec.from_dict(spec.to_dict()) == spec
    assert set(RECIPES) >= {"nino-cpu", "tiny", "digits-tiny"}
    recipe = get_recipe("nino-cpu")
    tasks = {r.task for r in recipe.runs}
    assert tasks == {"fm16", "shakespeare-3-24", "shakespeare-2-32"}
    assert len({r.run_id for r in recipe.runs}) == len(recipe.runs)
    assert min(r.seed for r in recipe.all_runs) >= 100  # never the benchmark seeds
    # one validation run per task, none of them trained on
    assert sorted(r.task for r in recipe.val_runs) == sorted(tasks)
    assert not {r.run_id for r in recipe.val_runs} & {r.run_id for r in recipe.runs}
    assert recipe.to_dict()["val_runs"] == [r.to_dict() for r in recipe.val_runs]
    with pytest.raises(ValueError, match="must not also be a training run"):
        dataclasses.replace(recipe, val_runs=recipe.runs[:1])
    with pytest.raises(KeyError, match="unknown recipe"):
        get_recipe("nope")


def test_mixed_recipe_adds_the_low_learning_rate_regime_to_nino_cpu():
    base, mixed = get_recipe("nino-cpu"), get_recipe("nino-cpu-mixed")
    assert mixed.runs[: len(base.runs)] == base.runs and mixed.val_runs[: len(base.val_runs)] == base.val_runs
    extra = mixed.all_runs[len(base.runs) : len(mixed.runs)] + mixed.val_runs[len(base.val_runs) :]
    assert {(r.task, r.every, r.resolved_steps()) for r in extra} == {("fm16", 40, 2000)}
    # the digits task's regime: Adam lr 1e-3 is FM/16's 6e-3 times ~1/6
    assert min(r.lr_mult for r in extra) < 1 / 6 < max(r.lr_mult for r in extra) < 0.5
    assert dict(mixed.metatrain) == dict(base.metatrain)
    assert min(r.seed for r in mixed.all_runs) >= 100


@pytest.mark.slow
def test_parallel_collection_equals_sequential(tmp_path, digits):
    runs = [RunSpec("digits", 0, 1.0, 40, every=20), RunSpec("digits", 1, 0.5, 40, every=20)]
    seq = collect(runs, tmp_path / "seq", progress=False, workers=1, threads=1)
    par = collect(runs, tmp_path / "par", progress=False, workers=2, threads=1)
    for a, b in zip(seq, par):
        assert (a / "params.npy").read_bytes() == (b / "params.npy").read_bytes()


def test_two_processes_never_write_one_run(tmp_path, digits):
    from nowcast.metatrain.collection import _RunLock

    spec = RunSpec("digits", 0, 1.0, 20, every=20)
    run_dir = tmp_path / spec.run_id
    run_dir.mkdir()
    with _RunLock(run_dir):  # as if another process were collecting it
        with pytest.raises(RuntimeError, match="another process"):
            collect_run(spec, tmp_path, data=digits)
    assert load_trajectory(collect_run(spec, tmp_path, data=digits)).complete
