"""``nowcast.resolve``: the one reader of predictor specs (method names, nino@PATH, checkpoint files and
folders, routed folders, models and nowcaster objects), and the entry points that go through it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import neuralgraph as ng
import nowcast
from neuralgraph.examples import mlp
from nowcast import Linefit, LinefitPlus, NiNoPredictor, RegimeRouter, WNNPlus
from nowcast.errors import CheckpointError
from nowcast.nowcasters.resolver import ACCEPTED, resolve_spec
from nowcast_testutils import Layered, small_nino

REPO = Path(__file__).resolve().parents[2]
CHECKPOINTS = sorted(p for p in (REPO / "checkpoints").iterdir() if (p / "config.json").is_file())
OFFICIAL_DIR = REPO.parent / "shared" / "checkpoints" / "official"
OFFICIAL = sorted(OFFICIAL_DIR.glob("*.pt")) if OFFICIAL_DIR.is_dir() else []


def _history(graph: ng.NeuralGraph) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    start = torch.randn(graph.num_params, generator=g) * 0.1
    direction = torch.randn(graph.num_params, generator=g) * 0.01
    return start[:, None] + direction[:, None] * torch.arange(5.0)[None, :]


def test_every_shipped_checkpoint_resolves_and_loads():
    assert {p.name for p in CHECKPOINTS} >= {"nino-cpu", "nino-cpu-mixed", "nino-cpu-routed"}
    graph = ng.convert(Layered())
    states = _history(graph)
    for folder in CHECKPOINTS:
        for spec in (folder, str(folder), f"nino@{folder}"):
            predictor = nowcast.resolve(spec)
            assert isinstance(predictor, (NiNoPredictor, RegimeRouter)), (spec, predictor)
            out = nowcast.predict(graph, states, 3, predictor, lr_interval=0.5)
            assert out.shape == (graph.num_params,) and torch.isfinite(out).all()
        assert resolve_spec(str(folder)).name == f"nino@{folder.name}"


def test_load_of_the_routed_default_gives_its_router():
    routed = REPO / "checkpoints" / "nino-cpu-routed"
    loaded = nowcast.load(routed)
    assert isinstance(loaded, RegimeRouter) and loaded.split == 0.2
    mixed = nowcast.load(REPO / "checkpoints" / "nino-cpu-mixed")
    assert all(torch.equal(a, b) for a, b in zip(loaded.below.model.state_dict().values(), mixed.state_dict().values()))
    # the router predicts bit for bit as resolve's and as its expert in that regime
    graph = ng.convert(Layered())
    states = _history(graph)
    a = nowcast.predict(graph, states, 4, loaded, lr_interval=0.05)
    assert torch.equal(a, nowcast.predict(graph, states, 4, nowcast.resolve(str(routed)), lr_interval=0.05))
    assert torch.equal(a, nowcast.predict(graph, states, 4, mixed))
    with pytest.raises(CheckpointError, match="regime router"):
        NiNoPredictor.load(routed)


@pytest.mark.skipif(not OFFICIAL, reason="no published checkpoints in ../shared/checkpoints/official")
@pytest.mark.parametrize("path", OFFICIAL, ids=lambda p: p.name)
def test_published_checkpoints_resolve(path):
    model = nowcast.load(path)
    predictor = nowcast.resolve(path)
    assert type(predictor) is (NiNoPredictor if model.config.gnn else WNNPlus)
    kind = "nino" if model.config.gnn else "wnn+"
    assert resolve_spec(str(path)).name == f"{kind}@{path.stem}"
    assert resolve_spec(f"{kind}@{path}").checkpoint == str(path)
    other = "wnn+" if kind == "nino" else "nino"
    with pytest.raises(ValueError, match=re.escape(f"cannot serve as '{other}'")):
        nowcast.resolve(f"{other}@{path}")


def test_method_names(tmp_path):
    assert isinstance(nowcast.resolve("linefit"), Linefit)
    assert isinstance(nowcast.resolve(" Linefit+ "), LinefitPlus)
    assert resolve_spec("adam") == ("adam", None, None) and resolve_spec("AdamW").name == "adam"
    with pytest.raises(ValueError, match="base optimizer alone"):
        nowcast.resolve("adam")
    small_nino().save(tmp_path / "mine")
    small_nino(gnn=False).save(tmp_path / "wnn")
    got = resolve_spec("nino", nino_checkpoint=tmp_path / "mine")
    assert got.name == "nino" and isinstance(got.predictor, NiNoPredictor) and got.checkpoint == str(tmp_path / "mine")
    assert isinstance(resolve_spec("wnn+", wnn_checkpoint=tmp_path / "wnn").predictor, WNNPlus)
    default = nowcast.bench.methods.default_checkpoint("nino")
    if default is not None:  # the shipped routed folder, found from the checkout
        assert resolve_spec("nino").checkpoint == str(default)


def test_kind_at_path(tmp_path):
    small_nino().save(tmp_path / "mine")
    got = resolve_spec(f"nino@{tmp_path / 'mine'}")
    assert got.name == "nino@mine" and isinstance(got.predictor, NiNoPredictor)
    with pytest.raises(ValueError, match="cannot serve as 'wnn\\+'"):
        nowcast.resolve(f"wnn+@{tmp_path / 'mine'}")
    with pytest.raises(ValueError, match="only nino@PATH"):
        nowcast.resolve(f"linefit@{tmp_path / 'mine'}")
    with pytest.raises(FileNotFoundError, match="accepted:"):
        nowcast.resolve(f"nino@{tmp_path / 'absent'}")
    # an '@' after something that is no method name is part of a path
    small_nino().save(tmp_path / "run@2")
    assert isinstance(nowcast.resolve(str(tmp_path / "run@2")), NiNoPredictor)


def test_objects_are_returned_or_wrapped():
    for nowcaster in (Linefit(), LinefitPlus(), NiNoPredictor(small_nino())):
        assert nowcast.resolve(nowcaster) is nowcaster
        assert nowcast.resolve(nowcaster) is nowcaster
    model = small_nino()
    wrapped = nowcast.resolve(model)
    assert isinstance(wrapped, NiNoPredictor) and wrapped.model is model
    assert isinstance(nowcast.resolve(small_nino(gnn=False)), WNNPlus)


@pytest.mark.parametrize(
    ("spec", "error", "says"),
    [
        ("sgd", ValueError, "unknown method 'sgd'"),
        ("missing/folder", FileNotFoundError, "no checkpoint at"),
        ("nino.pt", FileNotFoundError, "neither"),
        (Path("/nonexistent/nino"), FileNotFoundError, "no NiNo checkpoint"),
        (42, TypeError, "cannot use a int"),
        (None, TypeError, "cannot use a NoneType"),
    ],
)
def test_bad_specs_name_every_accepted_form(spec, error, says):
    with pytest.raises(error) as info:
        nowcast.resolve(spec)
    text = str(info.value)
    assert says in text and ACCEPTED in text and "\n" not in text
    for form in ("linefit+", "nino@PATH", ".pt", "nowcast.save", "regime-router", "NiNoModel", "predict(graph, states, k)"):
        assert form in ACCEPTED


def test_a_file_that_is_no_checkpoint(tmp_path):
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        nowcast.resolve(str(tmp_path / "bad.pt"))


def test_entry_points_go_through_resolve(monkeypatch, tmp_path):
    import nowcast.nowcasters.resolver as resolver

    seen = []
    original = resolver.resolve_spec

    def spy(spec, **options):
        seen.append(spec)
        return original(spec, **options)

    import nowcast.bench.methods as methods

    monkeypatch.setattr(resolver, "resolve_spec", spy)
    monkeypatch.setattr(methods, "resolve_spec", spy)
    small_nino().save(tmp_path / "mine")
    net = Layered()
    opt = nowcast.NiNo(torch.optim.Adam(net.parameters(), lr=1e-3), net, "linefit+", period=10, max_train_steps=100)
    assert opt.predictor.name == "Linefit+"
    graph = ng.convert(net)
    nowcast.predict(graph, _history(graph), 2, str(tmp_path / "mine"))
    nowcast.bench.resolve_method(f"nino@{tmp_path / 'mine'}")
    assert nowcast.load(tmp_path / "mine").config.gnn
    assert seen[:2] == ["linefit+", str(tmp_path / "mine")] and seen[-1] == f"nino@{tmp_path / 'mine'}"


def test_step_command_reads_names_and_routed_folders(tmp_path):
    from nowcast.cli import main

    graph = ng.convert(mlp((4, 6, 3)))
    params = [[p.name, list(p.shape)] for p in graph.params]
    torch.save({"states": _history(graph), "params": params, "arch": "sequential"}, tmp_path / "s.pt")
    routed = str(REPO / "checkpoints" / "nino-cpu-routed")
    for predictor, extra in (("linefit+", []), (routed, ["--lr-interval", "0.05"]), (f"nino@{routed}", ["--lr-interval", "0.05"])):
        out = tmp_path / f"o{len(extra)}{predictor[:4]}.pt"
        assert main(["step", str(tmp_path / "s.pt"), "--predictor", predictor, "--k", "2", "--out", str(out), *extra]) == 0
    assert main(["step", str(tmp_path / "s.pt"), "--predictor", "adam", "--k", "2", "--out", str(tmp_path / "x.pt")]) == 2


def test_analysis_pca_checks_its_checkpoint_before_training(tmp_path, monkeypatch, capsys):
    import analysis.cli

    def no_training(*args, **kwargs):
        raise AssertionError("training started before the checkpoint was checked")

    monkeypatch.setattr(analysis.cli, "_train", no_training)
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    for bad in (tmp_path / "bad.pt", REPO / "README.md", tmp_path):
        code = analysis.cli.main(["pca", "--steps", "10", "--period", "10", "--embed", "--checkpoint", str(bad),
                                  "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 2 and "error" in err and "training started" not in err, err


def test_analysis_pca_embeds_with_the_routed_default(tmp_path, capsys):
    import analysis.cli

    routed = str(REPO / "checkpoints" / "nino-cpu-routed")
    code = analysis.cli.main(["pca", "--steps", "40", "--period", "10", "--every", "5", "--batch", "16", "--embed",
                              "--checkpoint", routed, "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "pca_embeddings.png").is_file()


def test_a_loaded_predictor_follows_the_trained_networks_device(tmp_path):
    small_nino().save(tmp_path / "mine")
    spec = str(tmp_path / "mine")
    loaded = nowcast.resolve(spec)
    assert nowcast.nowcasters.follow_device(loaded, spec, torch.device("meta")) is loaded
    assert all(p.device.type == "meta" for p in loaded.model.parameters())  # what it loaded itself moves
    given = NiNoPredictor(small_nino())
    nowcast.nowcasters.follow_device(given, given, torch.device("meta"))
    assert all(p.device.type == "cpu" for p in given.model.parameters())  # an object passed in never moves
    for cpu in (None, "cpu"):
        kept = nowcast.resolve(spec)
        nowcast.nowcasters.follow_device(kept, spec, cpu)
        assert all(p.device.type == "cpu" for p in kept.model.parameters())
    linefit = nowcast.resolve("linefit")  # nothing to move
    assert nowcast.nowcasters.follow_device(linefit, "linefit", torch.device("meta")) is linefit


def test_the_wrapper_places_its_predictor_by_the_parameters(tmp_path, monkeypatch):
    import nowcast.optim

    small_nino().save(tmp_path / "mine")
    seen = []
    monkeypatch.setattr(nowcast.optim, "follow_device", lambda nowcaster, spec, device: seen.append((spec, device)))
    net = Layered()
    nowcast.NiNo(torch.optim.SGD(net.parameters(), lr=0.1), net, str(tmp_path / "mine"), period=5, ctx=5,
                 max_train_steps=10)
    assert seen == [(str(tmp_path / "mine"), next(net.parameters()).device)]
