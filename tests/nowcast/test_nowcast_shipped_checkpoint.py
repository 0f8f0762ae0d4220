"""The NiNo checkpoints shipped in ``checkpoints/`` (trained with ``nowcast build-checkpoint``):
``nino-cpu``, the default, and ``nino-cpu-mixed``, the recipe with a second FM/16 regime."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import neuralgraph as ng
import nowcast
from neuralgraph.examples import fm16
from nowcast.methods import SHIPPED_CHECKPOINT, default_checkpoint
from nowcast.model_card import EVAL_HEADING, EVAL_PLACEHOLDER

SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints" / SHIPPED_CHECKPOINT
ALL_SHIPPED = [SHIPPED, SHIPPED.with_name("nino-cpu-mixed")]
each_checkpoint = pytest.mark.parametrize("checkpoint", ALL_SHIPPED, ids=lambda p: p.name)


@each_checkpoint
def test_shipped_checkpoint_files_are_small_and_load_without_pickle(checkpoint):
    names = sorted(p.name for p in checkpoint.iterdir())
    for name in ("config.json", "model.safetensors", "MODEL_CARD.md", "training_curve.png"):
        assert name in names, f"{checkpoint} lacks {name}"
    assert not any(n.endswith((".pt", ".pth", ".pkl")) for n in names), "only safetensors weights are shipped"
    assert (checkpoint / "model.safetensors").stat().st_size < 5 * 2**20
    model = nowcast.load(checkpoint)
    meta = json.loads((checkpoint / "config.json").read_text())
    assert model.config == nowcast.NiNoConfig.from_dict(meta["config"])  # fields added later take defaults
    assert model.config.gnn and not model.config.wte_pos_enc
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_shipped_checkpoint_is_the_default_nino():
    found = default_checkpoint("nino")
    assert found is not None and Path(found).resolve() == SHIPPED


@each_checkpoint
def test_shipped_checkpoint_continues_a_straight_trajectory(checkpoint):
    """A trained nowcaster extrapolates parameters that move along a line in the line's direction,
    further for larger horizons (a random or collapsed model does neither)."""
    graph = ng.convert(fm16())
    g = torch.Generator().manual_seed(0)
    start = torch.randn(graph.num_params, generator=g) * 0.1
    direction = torch.randn(graph.num_params, generator=g) * 0.01
    states = start[:, None] + direction[:, None] * torch.arange(5.0)[None, :]
    predictor = nowcast.NiNoPredictor.load(checkpoint)
    moves = []
    for k in (1, 10, 40):
        with torch.no_grad():
            delta = predictor.predict(graph, states, k) - states[:, -1]
        assert torch.isfinite(delta).all()
        cos = torch.nn.functional.cosine_similarity(delta, direction, dim=0).item()
        assert cos > 0.5, f"k={k}: prediction not along the trajectory (cosine {cos:.3f})"
        moves.append(delta.norm().item())
    assert moves[0] < moves[1] < moves[2]


@each_checkpoint
def test_model_card_reports_the_held_out_evaluation(checkpoint):
    card = (checkpoint / "MODEL_CARD.md").read_text()
    assert card.startswith(f"# NiNo checkpoint `{checkpoint.name}`")
    assert EVAL_HEADING in card and EVAL_PLACEHOLDER not in card
    for task in ("digits", "fm32", "wikitext2-3-64"):
        assert f"### {task}: steps to" in card, f"the card has no {task} evaluation"
    assert "nino@nino-cpu" in card and "nino@nino_no_posw" in card
    # the weights were selected on validation runs, which the card lists apart from the training runs
    assert "Validation (not trained on" in card and "(**the shipped weights**)" in card


@pytest.mark.parametrize("name", ["digits", "fm32", "wikitext2-3-64"])
def test_held_out_results_are_kept_raw(name):
    from nowcast.benchmark import Comparison

    path = Path(__file__).resolve().parents[2] / "docs" / "results" / "heldout" / f"{name}.json"
    comparison = Comparison.load_json(path)
    assert {"adam", "nino@nino-cpu", "nino@nino_no_posw", "nino@nino-cpu-mixed"} <= set(comparison.methods)
    for run in comparison.runs:
        assert run.steps and len(run.steps) == len(run.values)
