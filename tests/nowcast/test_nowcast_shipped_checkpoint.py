"""The NiNo checkpoints shipped in ``checkpoints/`` (trained with ``nowcast build-checkpoint``):
``nino-cpu-routed``, the default, a regime router of ``nino-cpu-mixed`` (short regimes) and
``nino-cpu`` (long ones), both also shipped on their own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import neuralgraph as ng
import nowcast
from neuralgraph.examples import fm16
from nowcast.bench.methods import SHIPPED_CHECKPOINT, default_checkpoint
from nowcast.nowcasters.regime_router import RegimeRouter

CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"
SHIPPED = CHECKPOINTS / SHIPPED_CHECKPOINT
EXPERTS = {"below": CHECKPOINTS / "nino-cpu-mixed", "above": CHECKPOINTS / "nino-cpu"}
ALL_SHIPPED = [SHIPPED, *EXPERTS.values()]
each_checkpoint = pytest.mark.parametrize("checkpoint", ALL_SHIPPED, ids=lambda p: p.name)


def _models(checkpoint: Path) -> list[nowcast.NiNoModel]:
    if checkpoint == SHIPPED:
        router = RegimeRouter.load(checkpoint)
        return [router.below.model, router.above.model]
    return [nowcast.load(checkpoint)]


@each_checkpoint
def test_shipped_checkpoint_files_are_small_and_load_without_pickle(checkpoint):
    names = sorted(p.name for p in checkpoint.iterdir())
    for name in ("config.json", "model.safetensors", "MODEL_CARD.md"):
        assert name in names, f"{checkpoint} lacks {name}"
    assert any(n.startswith("training_curve") and n.endswith(".png") for n in names)
    assert not any(n.endswith((".pt", ".pth", ".pkl")) for n in names), "only safetensors weights are shipped"
    assert (checkpoint / "model.safetensors").stat().st_size < 5 * 2**20
    meta = json.loads((checkpoint / "config.json").read_text())
    configs = [meta["below"], meta["above"]] if checkpoint == SHIPPED else [meta["config"]]
    for model, config in zip(_models(checkpoint), configs):
        assert model.config == nowcast.NiNoConfig.from_dict(config)  # fields added later take defaults
        assert model.config.gnn and not model.config.wte_pos_enc
        assert all(torch.isfinite(p).all() for p in model.parameters())


def test_shipped_checkpoint_is_the_default_nino_and_routes_to_the_shipped_experts():
    found = default_checkpoint("nino")
    assert found is not None and Path(found).resolve() == SHIPPED
    router = nowcast.bench.resolve_method("nino").predictor
    assert isinstance(router, RegimeRouter) and router.split == 0.2
    for side, folder in EXPERTS.items():
        expert = nowcast.load(folder)
        ours = getattr(router, side).model
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), expert.state_dict().values()))


@each_checkpoint
@pytest.mark.parametrize("lr_interval", [0.04, 1.2])
def test_shipped_checkpoint_continues_a_straight_trajectory(checkpoint, lr_interval):
    """A trained nowcaster extrapolates parameters that move along a line in the line's direction,
    further for larger horizons (a random or collapsed model does neither), in either regime."""
    graph = ng.convert(fm16())
    g = torch.Generator().manual_seed(0)
    start = torch.randn(graph.num_params, generator=g) * 0.1
    direction = torch.randn(graph.num_params, generator=g) * 0.01
    states = start[:, None] + direction[:, None] * torch.arange(5.0)[None, :]
    predictor = nowcast.resolve(str(checkpoint))
    moves = []
    for k in (1, 10, 40):
        with torch.no_grad():
            delta = nowcast.predict(graph, states, k, predictor, lr_interval=lr_interval) - states[:, -1]
        assert torch.isfinite(delta).all()
        cos = torch.nn.functional.cosine_similarity(delta, direction, dim=0).item()
        assert cos > 0.5, f"k={k}: prediction not along the trajectory (cosine {cos:.3f})"
        moves.append(delta.norm().item())
    assert moves[0] < moves[1] < moves[2]


@pytest.mark.parametrize("name", ["digits", "fm32", "wikitext2-3-64"])
def test_held_out_results_are_kept_raw(name):
    from nowcast.bench.comparison import Comparison

    path = Path(__file__).resolve().parents[2] / "docs" / "results" / "heldout" / f"{name}.json"
    comparison = Comparison.load_json(path)
    assert {"adam", "nino@nino-cpu", "nino@nino_no_posw", "nino@nino-cpu-mixed", "nino@nino-cpu-routed"} <= set(comparison.methods)
    for run in comparison.runs:
        assert run.steps and len(run.steps) == len(run.values)
