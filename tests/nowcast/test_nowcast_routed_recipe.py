"""Routed recipes (``Recipe.route``): one collection, each expert recipe meta-trained on its own
runs among it, one :class:`nowcast.RegimeRouter` checkpoint with a card for both."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import nowcast
from nowcast.cli import main
from nowcast.metatrain import RECIPES, Recipe, Route, get_recipe


@pytest.fixture
def tiny_routed(monkeypatch):
    """digits-tiny below lr_interval 0.05; above, a second expert meta-trained on one of its runs (other seed)."""
    base = get_recipe("digits-tiny")
    other = dataclasses.replace(base, name="digits-tiny-one", runs=base.runs[:1], metatrain={**base.metatrain, "seed": 1, "steps": 20})
    routed = Recipe(
        name="digits-tiny-routed", description="test", runs=base.runs, val_runs=base.val_runs, workers=1,
        route=Route(below="digits-tiny", above="digits-tiny-one", split=0.05),
    )
    monkeypatch.setitem(RECIPES, other.name, other)
    monkeypatch.setitem(RECIPES, routed.name, routed)
    return routed


def _weights(model: nowcast.NiNoModel) -> list[torch.Tensor]:
    return list(model.state_dict().values())


def test_a_routed_recipe_builds_one_router_from_both_experts(tiny_routed, tmp_path, capsys):
    argv = ["build-checkpoint", "--recipe", tiny_routed.name, "--out", str(tmp_path / "ckpt"), "--work", str(tmp_path / "work"), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "stage 2/3: meta-training digits-tiny, the model below" in out and "stage 2/3: meta-training digits-tiny-one, the model above" in out
    router = nowcast.RegimeRouter.load(tmp_path / "ckpt")
    assert router.split == 0.05
    # the experts are exactly what each recipe builds on its own
    alone = tmp_path / "alone"
    assert main(["build-checkpoint", "--recipe", "digits-tiny", "--out", str(alone), "--work", str(tmp_path / "w2"), "--no-progress"]) == 0
    assert all(torch.equal(a, b) for a, b in zip(_weights(router.below.model), _weights(nowcast.load(alone))))
    assert not all(torch.equal(a, b) for a, b in zip(_weights(router.below.model), _weights(router.above.model)))
    # one collection: the experts' work folders hold no trajectories of their own
    assert sorted(p.name for p in (tmp_path / "work" / "trajectories").iterdir()) == sorted(r.run_id for r in tiny_routed.all_runs)
    assert not (tmp_path / "work" / "experts" / "digits-tiny" / "trajectories").exists()
    # the card describes both experts and shows both training curves
    card = (tmp_path / "ckpt" / "MODEL_CARD.md").read_text()
    assert "digits-tiny-routed" in card and "`digits-tiny`" in card and "`digits-tiny-one`" in card
    for side in ("below", "above"):
        assert f"(training_curve_{side}.png)" in card and (tmp_path / "ckpt" / f"training_curve_{side}.png").is_file()
    assert json.loads((tmp_path / "work" / "recipe.json").read_text())["route"]["split"] == 0.05
    # rerunning continues with nothing left to do and writes the same weights
    before = (tmp_path / "ckpt" / "model.safetensors").read_bytes()
    assert main(argv) == 0
    assert (tmp_path / "ckpt" / "model.safetensors").read_bytes() == before
    # with two workers the experts meta-train at once, in two processes, to the same weights
    par = ["build-checkpoint", "--recipe", tiny_routed.name, "--out", str(tmp_path / "par"), "--work", str(tmp_path / "wpar"), "--no-progress", "--workers", "2"]
    assert main(par) == 0
    assert (tmp_path / "par" / "model.safetensors").read_bytes() == before


def test_routed_recipes_are_planned_checked_and_not_meta_trained_directly(tiny_routed, tmp_path, capsys):
    assert main(["build-checkpoint", "--recipe", "nino-cpu-routed", "--out", str(tmp_path / "c"), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "below 0.2 (nino-cpu-mixed), meta-training: 6000 steps" in plan and "above 0.2 (nino-cpu), meta-training" in plan
    assert "meta-train at once, one process each (--workers 2)" in plan
    assert not (tmp_path / "c").exists()
    assert main(["metatrain", "--recipe", tiny_routed.name, "--out", str(tmp_path / "m"), "--work", str(tmp_path / "w")]) == 2
    assert "build-checkpoint --recipe digits-tiny-routed" in capsys.readouterr().err
    short = dataclasses.replace(tiny_routed, runs=tiny_routed.runs[1:])
    with pytest.raises(ValueError, match="lack 1 run"):
        short.experts()
    with pytest.raises(ValueError, match="is not routed"):
        get_recipe("digits-tiny").experts()
