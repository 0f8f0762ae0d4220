"""Meta-training: the loss, exact resumption, NaN recovery, learning, export and the command line."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from nowcast_testutils import interrupt_at

import nowcast
from nowcast.bench.comparison import Comparison
from nowcast.metatrain import (
    MetaDataset,
    MetaTrainConfig,
    RunSpec,
    append_evaluation,
    baseline_losses,
    collect_run,
    export,
    load_result,
    lr_at,
    metatrain,
    window_loss,
)
from nowcast.metatrain.model_card import EVAL_PLACEHOLDER
from nowcast.tasks import get_task
from nowcast.bench.training import RunResult

SEQ_LEN = 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("trajectories")
    data = get_task("digits").load_data(None)
    for spec in (RunSpec("digits", 0, 1.0, 160, every=20), RunSpec("digits", 1, 0.5, 160, every=20)):
        collect_run(spec, root, data=data)
    return MetaDataset(root, seq_len=SEQ_LEN)


def small(**changes) -> MetaTrainConfig:
    base = dict(hid=8, seq_len=SEQ_LEN, steps=12, batch=2, lr=3e-3, warmup=2, checkpoint_every=4, eval_every=6,
                eval_windows=2, log_every=4)
    base.update(changes)
    return MetaTrainConfig(**base)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_window_loss_is_zero_for_the_true_changes_and_masks_padding(dataset):
    item = dataset[len(dataset) - 1]  # one valid horizon
    e, f = item.slot_mask.shape
    target = item.target.view(e, f, SEQ_LEN)

    def perfect(data, ks):
        idx = torch.tensor(ks) - 1
        out = item.last.unsqueeze(-1) + target[:, :, idx]
        out[~item.slot_mask] = 123.0  # anything on auxiliary edges and padded slots is ignored
        return out

    assert float(window_loss(perfect, item)) == 0.0

    def zero_change(data, ks):
        return item.last.unsqueeze(-1).expand(e, f, len(ks)).clone()

    expected = target[:, :, 0][item.slot_mask].abs().mean()
    assert float(window_loss(zero_change, item)) == pytest.approx(float(expected), rel=1e-6)
    assert baseline_losses(item)["zero"] == pytest.approx(float(expected), rel=1e-6)


def test_schedule_warms_up_then_decays():
    cfg = MetaTrainConfig(steps=100, warmup=10, min_lr_ratio=0.1)
    factors = [lr_at(s, cfg) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[-1] == pytest.approx(0.1, abs=1e-3)


def test_interrupted_training_resumes_exactly(dataset, tmp_path):
    whole = metatrain(dataset, tmp_path / "whole", small(), progress=False)

    with pytest.raises(KeyboardInterrupt):
        metatrain(dataset, tmp_path / "split", small(), progress=False, step_callback=interrupt_at(10))
    assert load_result(tmp_path / "split").step == 8  # the last checkpoint before the interruption
    resumed = metatrain(dataset, tmp_path / "split", small(), progress=False)
    assert resumed.step == whole.step == 12
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert whole.history == resumed.history and whole.evals["loss"] == resumed.evals["loss"]
    # bookkeeping fields may change on resumption; the recipe may not
    with pytest.raises(ValueError, match="another meta-training config"):
        metatrain(dataset, tmp_path / "split", small(lr=1e-2), progress=False)
    metatrain(dataset, tmp_path / "split", small(checkpoint_every=3), progress=False)


def test_nan_batches_are_skipped_then_rolled_back(dataset, tmp_path, caplog):
    bad = {2, 6, 7, 8}

    def inject(step, loss):
        return loss * float("nan") if step in bad else loss

    with caplog.at_level(logging.WARNING, logger="nowcast.metatrain"):
        result = metatrain(dataset, tmp_path, small(max_bad_steps=3), progress=False, loss_hook=inject)
    assert result.nan_skips == 4 and result.rollbacks == 1 and result.lr_scale == 0.5
    assert result.step == 12 and len(result.history["step"]) == 12 - 4
    assert "not finite" in caplog.text and "reloaded the last good checkpoint" in caplog.text
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert all(math.isfinite(v) for v in result.history["loss"])
    # the rollback state was checkpointed: resuming keeps the reduced learning rate
    assert load_result(tmp_path).lr_scale == 0.5


def test_a_collapse_to_no_change_is_reported(dataset, tmp_path, caplog):
    """A model that stops predicting (its output layer dead) scores the no-change loss: warned
    after warm-up; a normal run is not."""
    def kill_output(step, model):
        with torch.no_grad():
            model.edge_out.fc[-1].weight.zero_()
            model.edge_out.fc[-1].bias.zero_()

    cfg = small(eval_every=4, eval_windows=len(dataset))
    with caplog.at_level(logging.WARNING, logger="nowcast.metatrain"):
        metatrain(dataset, tmp_path / "normal", cfg, progress=False)
    assert "collapsed" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="nowcast.metatrain"):
        result = metatrain(dataset, tmp_path / "dead", cfg, progress=False, step_callback=kill_output)
    assert result.evals["loss"][-1] == pytest.approx(result.baselines["zero"], rel=1e-3)
    assert "it has collapsed" in caplog.text and "lower learning rate" in caplog.text


def test_meta_training_reduces_the_loss(dataset, tmp_path):
    cfg = small(hid=16, steps=100, lr=1e-2, warmup=5, eval_every=100, eval_windows=len(dataset), checkpoint_every=100)
    result = metatrain(dataset, tmp_path, cfg, progress=False)
    first, last = result.evals["loss"][0], result.evals["loss"][-1]
    assert result.evals["step"] == [0, 100]
    assert first == pytest.approx(result.baselines["zero"], rel=0.02)  # a fresh model predicts ~no change
    assert last < 0.95 * first


def test_export_load_and_model_card(dataset, tmp_path):
    result = metatrain(dataset, tmp_path / "work", small(), progress=False)
    out = export(result, tmp_path / "ckpt", recipe={"name": "unit", "description": "two digits runs"})
    names = sorted(p.name for p in out.iterdir())
    assert names == ["MODEL_CARD.md", "config.json", "model.safetensors", "training_curve.png"]
    loaded = nowcast.load(out)
    state = result.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in loaded.state_dict().items())
    predictor = nowcast.NiNoPredictor.load(out)
    item = dataset[0]
    inputs, _, _ = dataset.window_states(0)
    assert torch.isfinite(predictor.predict(item.graph, inputs, 3)).all()
    card = (out / "MODEL_CARD.md").read_text()
    for heading in ("## Training data", "## Recipe", "## Training curve", "## Evaluation: steps to target"):
        assert heading in card
    assert "digits_s0_lr1_n160_e20" in card and EVAL_PLACEHOLDER in card

    runs = [
        RunResult("digits", m, s, "accuracy", 0.9, True, 100, steps=[0, 50], values=[0.1, 0.95], steps_to_target=st)
        for m, s, st in (("adam", 0, 50), ("adam", 1, 60), ("nino", 0, 30), ("nino", 1, None))
    ]
    comparison = Comparison("digits", "accuracy", 0.9, True, runs)
    append_evaluation(out / "MODEL_CARD.md", comparison)
    path = comparison.save_json(tmp_path / "digits.json")
    append_evaluation(out / "MODEL_CARD.md", path)
    card = (out / "MODEL_CARD.md").read_text()
    assert EVAL_PLACEHOLDER not in card
    assert card.count("### digits: steps to accuracy >= 0.9") == 2
    # the command line takes several files, after one --append or several
    from nowcast.cli import main

    assert main(["model-card", str(out), "--append", str(path), str(path), "--append", str(path)]) == 0
    assert (out / "MODEL_CARD.md").read_text().count("### digits: steps to accuracy >= 0.9") == 5
    assert "| adam | 50 60 | 55 |" in card and "| nino | 30 - | - | - |" in card


def test_fine_tuning_starts_from_the_given_weights(dataset, tmp_path):
    """A run started from a trained model predicts exactly what that model predicts before its
    first update; a model of another architecture is refused."""
    base = metatrain(dataset, tmp_path / "base", small(), progress=False).model
    with torch.no_grad():
        expected = base(dataset[0].data, [1, 4])
    tuned = metatrain(dataset, tmp_path / "tuned", small(steps=1), progress=False, init_model=base)
    assert tuned.step == 1
    start = nowcast.NiNoModel(small().nino_config())
    from nowcast.metatrain.training import _start_from

    _start_from(start, base)
    with torch.no_grad():
        assert torch.equal(start(dataset[0].data, [1, 4]), expected)
    assert not all(torch.equal(a, b) for a, b in zip(tuned.model.state_dict().values(), base.state_dict().values()))
    with pytest.raises(ValueError, match="cannot start meta-training from"):
        metatrain(dataset, tmp_path / "bad", small(hid=16), progress=False, init_model=base)


def test_settings_of_retired_experiments_load_when_off_and_are_refused_when_on():
    """Work folders and checkpoints written before the regime and landing experiments were retired
    still load; a configuration that used them is refused with a message, not half-read."""
    old = {**small().to_dict(), "lr_interval_input": False, "lr_interval_ceiling": None, "regime_adapter": False,
           "trainable": "all", "landing_weight": 0.0}
    assert MetaTrainConfig.from_dict(old) == small()
    for key, value in (("lr_interval_input", True), ("landing_weight", 2.0), ("trainable", "regime")):
        with pytest.raises(ValueError, match=f"retired experiment \\({key}="):
            MetaTrainConfig.from_dict({**old, key: value})
    cfg = {**nowcast.NiNoConfig().to_dict(), "lr_interval_input": False, "lr_interval_floor": None}
    assert nowcast.NiNoConfig.from_dict(cfg) == nowcast.NiNoConfig()
    with pytest.raises(ValueError, match="retired experiment"):
        nowcast.NiNoConfig.from_dict({**cfg, "lr_interval_floor": 0.6})
    with pytest.raises(ValueError, match="unknown MetaTrainConfig fields: landing"):
        MetaTrainConfig.from_dict({**old, "landing": 1})


def test_command_line_builds_a_checkpoint_end_to_end(tmp_path, capsys):
    from nowcast.cli import main

    argv = ["build-checkpoint", "--recipe", "digits-tiny", "--out", str(tmp_path / "ckpt"), "--work", str(tmp_path / "work"), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "stage 1/3" in out and "wrote" in out
    assert "(+ 1 for validation)" in out and "lowest val_loss" in out
    for name in ("config.json", "model.safetensors", "MODEL_CARD.md", "training_curve.png"):
        assert (tmp_path / "ckpt" / name).is_file()
    assert nowcast.load(tmp_path / "ckpt").config.hid == 16
    # rerunning continues (nothing left to do) and gives the same weights
    before = (tmp_path / "ckpt" / "model.safetensors").read_bytes()
    assert main(argv) == 0
    assert (tmp_path / "ckpt" / "model.safetensors").read_bytes() == before
    # another recipe in the same work folder is refused
    assert main(["build-checkpoint", "--recipe", "tiny", "--out", str(tmp_path / "x"), "--work", str(tmp_path / "work")]) == 2
    assert "another recipe" in capsys.readouterr().err


def test_dry_run_plans_without_doing_anything(tmp_path, capsys):
    import dataclasses

    from nowcast.cli import main
    from nowcast.metatrain import Recipe, get_recipe
    from nowcast.cli.metatrain import _plan

    assert main(["build-checkpoint", "--recipe", "nino-cpu", "--out", str(tmp_path / "c"), "--work", str(tmp_path / "w"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "fm16" in out and "meta-training: " in out and "total: about" in out
    assert not (tmp_path / "w").exists() and not (tmp_path / "c").exists()

    def collection_minutes(every: int) -> float:
        plan = _plan(Recipe("r", "one run", (RunSpec("fm16", 0, 1.0, 10_000, every),)), workers=1)
        return float(plan.split("collection: ")[1].split(" core-min")[0])

    # saving states every 40 steps validates 5 times as often as every 200 steps, and costs it
    assert collection_minutes(40) > collection_minutes(200) + 3
    # a recipe that starts from a checkpoint says which one it needs
    base = get_recipe("nino-cpu")
    tuned = dataclasses.replace(base, name="tuned", init_from="checkpoints/nino-cpu")
    assert "starts from the checkpoint checkpoints/nino-cpu" in _plan(tuned, workers=2)
    assert "starts from the checkpoint" not in _plan(base, workers=2)

    def meta_minutes(recipe) -> float:
        return float(_plan(recipe, workers=2).split("on one free core")[0].rsplit("about ", 1)[1].split(" min")[0])

    # twice the steps, twice the estimate
    longer = dataclasses.replace(base, metatrain={**base.metatrain, "steps": 2 * base.metatrain["steps"]})
    assert meta_minutes(longer) == pytest.approx(2 * meta_minutes(base), rel=0.05)


def test_recipe_file_keeps_runs_when_only_metatraining_changes(tmp_path, capsys):
    import dataclasses
    import json

    from nowcast.metatrain import get_recipe
    from nowcast.cli.metatrain import _check_recipe_file

    recipe = get_recipe("digits-tiny")
    _check_recipe_file(tmp_path, recipe)
    changed = dataclasses.replace(recipe, metatrain={**recipe.metatrain, "steps": 7})
    _check_recipe_file(tmp_path, changed)
    assert "collected runs" in capsys.readouterr().out
    assert json.loads((tmp_path / "recipe.json").read_text())["metatrain"]["steps"] == 7
    # a recipe that grew keeps what was collected; one that lost or changed runs is another recipe
    grown = dataclasses.replace(changed, runs=changed.runs + (RunSpec("digits", 109, 1.0, 200, every=20),))
    _check_recipe_file(tmp_path, grown)
    assert "1 run(s) more" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "recipe.json").read_text())["runs"]) == len(recipe.runs) + 1
    for other in (dataclasses.replace(recipe, runs=recipe.runs[:1]), dataclasses.replace(grown, name="other")):
        with pytest.raises(ValueError, match="another recipe's runs"):
            _check_recipe_file(tmp_path, other)


@pytest.fixture(scope="module")
def val_dataset(tmp_path_factory, dataset):
    root = tmp_path_factory.mktemp("validation")
    collect_run(RunSpec("digits", 2, 1.0, 160, every=20), root, data=get_task("digits").load_data(None))
    return MetaDataset(root, seq_len=SEQ_LEN, graphs=dataset.graphs)


@pytest.fixture(scope="module")
def val_long(tmp_path_factory, dataset):
    """A validation run long enough for three of the wrapper's jumps to be measured."""
    root = tmp_path_factory.mktemp("validation_long")
    collect_run(RunSpec("digits", 3, 1.0, 400, every=20), root, data=get_task("digits").load_data(None))
    return MetaDataset(root, seq_len=SEQ_LEN, graphs=dataset.graphs)


def test_target_weighting_keeps_the_share_of_far_horizons(dataset):
    four = MetaDataset(dataset.trajectories, seq_len=4, graphs=dataset.graphs)
    full = four[0]  # every horizon inside the trajectory
    short = four[len(four) - 1]  # one horizon left
    assert bool(full.horizon_mask.all()) and int(short.horizon_mask.sum()) == 1

    def zero_change(item):
        e, f = item.slot_mask.shape
        return lambda data, ks: item.last.unsqueeze(-1).expand(e, f, len(ks)).clone()

    assert float(window_loss(zero_change(full), full, "target")) == pytest.approx(float(window_loss(zero_change(full), full)), rel=1e-6)
    per_window = float(window_loss(zero_change(short), short, "window"))
    assert float(window_loss(zero_change(short), short, "target")) == pytest.approx(per_window / 4, rel=1e-6)
    with pytest.raises(ValueError, match="weighting"):
        window_loss(zero_change(short), short, "horizon")
    with pytest.raises(ValueError, match="horizon_weighting"):
        small(horizon_weighting="mean")


def test_validation_selects_the_weights_with_the_lowest_validation_loss(dataset, val_dataset, tmp_path):
    cfg = small(steps=24, lr=1e-2, eval_every=4, val_windows=len(val_dataset))
    seen: dict[int, dict[str, torch.Tensor]] = {}
    result = metatrain(dataset, tmp_path / "work", cfg, progress=False, val_dataset=val_dataset,
                       step_callback=lambda step, model: seen.__setitem__(step, _weights(model)))
    val = result.evals["val_loss"]
    assert result.evals["step"] == [0, 4, 8, 12, 16, 20, 24] and len(val) == len(result.evals["loss"])
    best = min(range(len(val)), key=val.__getitem__)
    assert result.best == {"step": result.evals["step"][best], "val_loss": val[best], "val_jump": result.evals["val_jump"][best]}
    # on these runs the unseen trajectory is fitted best early on: the selection is not the end point
    assert 0 < result.best["step"] < 24
    selected = result.selected_model()
    assert all(torch.equal(seen[result.best["step"]][k], v) for k, v in selected.state_dict().items())
    assert not all(torch.equal(seen[24][k], v) for k, v in selected.state_dict().items())
    # the recorded validation loss is the selected model's loss on all validation windows
    with torch.no_grad():
        again = sum(float(window_loss(selected, val_dataset[i])) for i in range(len(val_dataset))) / len(val_dataset)
    assert again == pytest.approx(result.best["val_loss"], rel=1e-5)
    # exported and reloaded: the selected weights, not the last ones; the card says so
    out = export(load_result(tmp_path / "work"), tmp_path / "ckpt")
    loaded = nowcast.load(out).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in selected.state_dict().items())
    card = (out / "MODEL_CARD.md").read_text()
    assert f"step {result.best['step']}" in card
    assert "digits_s2_lr1_n160_e20" in card


def test_selection_by_jump_error(dataset, val_dataset, val_long, tmp_path):
    from nowcast.metatrain.jump_error import JumpScore

    cfg = small(steps=16, lr=1e-2, eval_every=4, select="val_jump")
    with pytest.raises(ValueError, match="val_jump"):  # the short run has no measurable jump
        metatrain(dataset, tmp_path / "short", cfg, progress=False, val_dataset=val_dataset)
    result = metatrain(dataset, tmp_path / "long", cfg, progress=False, val_dataset=val_long)
    jumps = result.evals["val_jump"]
    assert all(math.isfinite(v) for v in jumps)
    assert jumps[0] == pytest.approx(1.0, abs=0.05)  # a fresh model predicts about no change
    best = min(range(len(jumps)), key=jumps.__getitem__)
    assert result.best["step"] == result.evals["step"][best]
    assert JumpScore(val_long)(result.selected_model()) == pytest.approx(jumps[best], rel=1e-5)


def test_resumed_training_with_validation_is_exact(dataset, val_long, tmp_path):
    val_dataset = val_long
    cfg = small(eval_every=4, val_windows=3)
    whole = metatrain(dataset, tmp_path / "whole", cfg, progress=False, val_dataset=val_dataset)

    with pytest.raises(KeyboardInterrupt):
        metatrain(dataset, tmp_path / "split", cfg, progress=False, val_dataset=val_dataset, step_callback=interrupt_at(10))
    resumed = metatrain(dataset, tmp_path / "split", cfg, progress=False, val_dataset=val_dataset)
    assert resumed.evals == whole.evals and resumed.best == whole.best
    assert all(torch.equal(whole.best_state[k], v) for k, v in resumed.best_state.items())
    with pytest.raises(ValueError, match="validated on"):
        metatrain(dataset, tmp_path / "split", cfg, progress=False)
