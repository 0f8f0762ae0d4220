"""``python -m nowcast.cli step``: save_pretrained sequences and stacked-states files, offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from nowcast_testutils import small_nino

import neuralgraph as ng
from neuralgraph.examples import mlp
from nowcast import Linefit, predict, RegimeRouter
from nowcast.cli import main

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

CONFIG = dict(n_embd=8, n_layer=2, n_head=2, vocab_size=11, n_positions=6, bos_token_id=0, eos_token_id=0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """Six checkpoints on an exactly linear trajectory, saved at steps 2, 4, ..., 12 (names sort wrongly as text)."""
    root = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**CONFIG))
    start = ng.flatten_params(model)
    delta = 1e-2 * torch.randn(start.shape, generator=torch.Generator().manual_seed(1))
    for i, step in enumerate(range(2, 14, 2)):
        ng.load_params(model, start + i * delta)
        model.save_pretrained(root / f"checkpoint-{step}")
    return root, start, delta


def _params(directory: Path) -> torch.Tensor:
    return ng.flatten_params(transformers.GPT2LMHeadModel.from_pretrained(directory, local_files_only=True))


def test_linefit_round_trip_on_save_pretrained_checkpoints(run_dir, tmp_path: Path, capsys) -> None:
    root, start, delta = run_dir
    out = tmp_path / "predicted"
    assert main(["step", str(root), "--predictor", "linefit", "--k", "3", "--out", str(out)]) == 0
    assert "Linefit k=3" in capsys.readouterr().out
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    # the last five of six checkpoints (steps 4..12, i = 1..5) -> i = 5 + 3
    torch.testing.assert_close(_params(out), start + 8 * delta, rtol=0, atol=1e-6)
    assert json.loads((out / "config.json").read_text())["n_embd"] == 8


def test_nino_checkpoint_and_schedule(run_dir, tmp_path: Path) -> None:
    root, _, _ = run_dir
    model = small_nino()
    model.save(tmp_path / "nino")
    dirs = [root / f"checkpoint-{s}" for s in (2, 4, 6, 8, 10)]
    out = tmp_path / "out"
    args = ["step", *map(str, dirs), "--predictor", str(tmp_path / "nino"), "--out", str(out)]
    assert main([*args, "--step", "3000", "--max-train-steps", "10000"]) == 0  # k = 21
    states = torch.stack([_params(d) for d in dirs], dim=1)
    net = transformers.GPT2LMHeadModel.from_pretrained(dirs[0], local_files_only=True)
    expected = predict(ng.convert(net), states, 21, model)
    torch.testing.assert_close(_params(out), expected, rtol=0, atol=1e-6)
    assert main([*args, "--k", "21", "--per-block", "--overwrite"]) == 0
    torch.testing.assert_close(_params(out), expected, rtol=1e-5, atol=1e-6)


def test_states_files(tmp_path: Path) -> None:
    net = mlp((4, 6, 3))
    graph = ng.convert(net)
    states = torch.randn(graph.num_params, 7).cumsum(1)
    params = [[p.name, list(p.shape)] for p in graph.params]
    torch.save({"states": states, "params": params, "arch": "sequential", "note": "kept"}, tmp_path / "s.pt")
    assert main(["step", str(tmp_path / "s.pt"), "--predictor", "linefit+", "--k", "2", "--out", str(tmp_path / "o.pt")]) == 0
    out = torch.load(tmp_path / "o.pt", weights_only=True)
    assert out["note"] == "kept" and out["nowcast"]["k"] == 2 and out["states"].shape == (graph.num_params, 1)
    torch.testing.assert_close(out["states"][:, 0], predict(None, states[:, -5:], 2, "linefit+"))

    model = small_nino()
    model.save(tmp_path / "nino")
    from safetensors.torch import load_file, save_file

    save_file({"states": states}, str(tmp_path / "s.safetensors"), metadata={"params": json.dumps(params), "arch": "sequential"})
    target = tmp_path / "o.safetensors"
    assert main(["step", str(tmp_path / "s.safetensors"), "--predictor", str(tmp_path / "nino"), "--k", "4", "--out", str(target)]) == 0
    expected = predict(graph, states[:, -5:], 4, model)
    torch.testing.assert_close(load_file(str(target))["states"][:, 0], expected, rtol=0, atol=1e-6)

    # a routed checkpoint needs the regime: learning rate x steps between the inputs
    routed = RegimeRouter(small_nino(seed=0), small_nino(seed=1), 0.1)
    routed.save(tmp_path / "regime")
    args = ["step", str(tmp_path / "s.safetensors"), "--predictor", str(tmp_path / "regime"), "--k", "4", "--overwrite"]
    assert main([*args, "--out", str(target)]) == 2
    assert main([*args, "--lr-interval", "0.2", "--out", str(target)]) == 0
    expected = predict(graph, states[:, -5:], 4, routed.above.model)
    torch.testing.assert_close(load_file(str(target))["states"][:, 0], expected, rtol=0, atol=1e-6)
    assert main([*args, "--lr-interval", "-1", "--out", str(target)]) == 2

    # a graph-free predictor needs nothing but the states
    torch.save(states, tmp_path / "bare.pt")
    assert main(["step", str(tmp_path / "bare.pt"), "--predictor", "linefit", "--k", "1", "--out", str(tmp_path / "b.pt")]) == 0
    torch.testing.assert_close(torch.load(tmp_path / "b.pt", weights_only=True)["states"][:, 0], Linefit().predict(None, states[:, -5:], 1))


def test_states_file_described_by_a_hugging_face_config(run_dir, tmp_path: Path) -> None:
    root, _, _ = run_dir
    net = transformers.GPT2LMHeadModel.from_pretrained(root / "checkpoint-2", local_files_only=True)
    graph = ng.convert(net)
    states = ng.flatten_params(net).unsqueeze(1) + 1e-3 * torch.randn(graph.num_params, 5).cumsum(1)
    torch.save({"states": states}, tmp_path / "s.pt")
    model = small_nino()
    model.save(tmp_path / "nino")
    args = ["step", str(tmp_path / "s.pt"), "--predictor", str(tmp_path / "nino"), "--k", "2"]
    assert main([*args, "--config", str(root / "checkpoint-2"), "--out", str(tmp_path / "o.pt")]) == 0
    out = torch.load(tmp_path / "o.pt", weights_only=True)["states"][:, 0]
    torch.testing.assert_close(out, predict(graph, states, 2, model), rtol=0, atol=1e-6)


def test_clear_errors(run_dir, tmp_path: Path, capsys) -> None:
    root, _, _ = run_dir

    def error(*args: str) -> str:
        assert main(["step", *args]) == 2
        return capsys.readouterr().err

    out = ["--out", str(tmp_path / "x")]
    assert "does not exist" in error(str(tmp_path / "missing"), "--predictor", "linefit", "--k", "1", *out)
    assert "at least ctx=5" in error(*(str(root / f"checkpoint-{s}") for s in (2, 4)), "--predictor", "linefit", "--k", "1", *out)
    assert "--k" in error(str(root), "--predictor", "linefit", *out)
    assert "neither" in error(str(root), "--predictor", "nino.pt", "--k", "1", *out)
    (tmp_path / "empty").mkdir()
    assert "holds no checkpoints" in error(str(tmp_path / "empty"), "--predictor", "linefit", "--k", "1", *out)
    # an incompatible checkpoint in the sequence
    mixed = tmp_path / "mixed"
    for s in (2, 4, 6, 8):
        (mixed / f"c{s}").parent.mkdir(exist_ok=True)
        transformers.GPT2LMHeadModel.from_pretrained(root / f"checkpoint-{s}").save_pretrained(mixed / f"c{s}")
    transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**CONFIG, "n_embd": 12})).save_pretrained(mixed / "c10")
    assert "incompatible" in error(str(mixed), "--predictor", "linefit", "--k", "1", *out)
    (mixed / "c10" / "model.safetensors").unlink()
    assert "has no weights" in error(str(mixed), "--predictor", "linefit", "--k", "1", *out)
    # a states file without what the graph needs
    torch.save({"states": torch.randn(43, 5)}, tmp_path / "s.pt")
    model = small_nino()
    model.save(tmp_path / "nino")
    assert "needs the network's graph" in error(str(tmp_path / "s.pt"), "--predictor", str(tmp_path / "nino"), "--k", "1", "--out", str(tmp_path / "o.pt"))
    torch.save({"states": torch.randn(43, 3)}, tmp_path / "short.pt")
    assert "at least ctx=5" in error(str(tmp_path / "short.pt"), "--predictor", "linefit", "--k", "1", "--out", str(tmp_path / "o.pt"))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "f").write_text("x")
    assert "exists" in error(str(root), "--predictor", "linefit", "--k", "1", "--out", str(tmp_path / "taken"))


def test_module_entry_point() -> None:
    done = subprocess.run([sys.executable, "-m", "nowcast.cli", "step", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--predictor" in done.stdout
