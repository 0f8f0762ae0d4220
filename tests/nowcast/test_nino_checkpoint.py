"""Reading and writing NiNo checkpoints (``nowcast.model.checkpoint``, ``nowcast.load``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import neuralgraph as ng
from neuralgraph.examples import mlp
from nowcast import CheckpointError, load, NiNoConfig, NiNoModel
from nowcast.scaling import scale_states

SMALL = NiNoConfig(hid=8, layers=2, vocab_size=10)


def _model(config: NiNoConfig = SMALL, seed: int = 0) -> NiNoModel:
    torch.manual_seed(seed)
    return NiNoModel(config).eval()


def _data():
    graph = ng.convert(mlp())
    return graph.to_pyg(scale_states(torch.randn(graph.num_params, 5), graph.params)[0])


@pytest.mark.parametrize("config", [SMALL, NiNoConfig(gnn=False, hid=8)])
def test_round_trip_of_our_format(tmp_path: Path, config: NiNoConfig) -> None:
    model = _model(config)
    model.edge_chunk = 5
    written = model.save(tmp_path / "ckpt")
    assert sorted(p.name for p in written.iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((written / "config.json").read_text())
    assert meta["config"] == config.to_dict()
    loaded = load(written, edge_chunk=5)
    assert loaded.config == config and not loaded.training
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    data = _data()
    with torch.no_grad():
        assert torch.equal(loaded(data, [1, 3]), model(data, [1, 3]))


def test_official_format_written_by_hand(tmp_path: Path) -> None:
    model = _model(NiNoConfig(gnn=False, hid=8))
    path = tmp_path / "wnn.pt"
    torch.save({"state_dict": model.state_dict(), "model_args": {"gnn": False, "hid": 8, "chunk_size": 10}}, path)
    loaded = load(path)
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_published_checkpoint_round_trips(shared: Path, tmp_path: Path) -> None:
    path = shared / "checkpoints" / "official" / "nino_mlp_h32.pt"
    if not path.is_file():
        pytest.skip(f"official checkpoint {path} not found")
    model = load(path)
    again = load(model.save(tmp_path / "h32"))
    raw = torch.load(path, weights_only=True)["state_dict"]
    for key, value in raw.items():
        assert torch.equal(again.state_dict()[key], value), key


def test_mismatching_official_checkpoint_names_every_problem(tmp_path: Path) -> None:
    state = _model().state_dict()
    state.pop("gnn.convs.1.lin.bias")
    state["edge_out.fc.2.weight"] = torch.zeros(3, 8)
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save({"state_dict": state, "model_args": {"hid": 8, "layers": 2, "vocab_size": 10}}, path)
    with pytest.raises(CheckpointError) as info:
        load(path)
    message = str(info.value)
    assert "missing parameters: gnn.convs.1.lin.bias" in message
    assert "unexpected parameters: extra.weight" in message
    assert "edge_out.fc.2.weight: checkpoint (3, 8) vs model (360, 8)" in message


def test_published_weights_with_wrong_arguments(shared: Path, tmp_path: Path) -> None:
    path = shared / "checkpoints" / "official" / "nino_mlp_h32.pt"
    if not path.is_file():
        pytest.skip(f"official checkpoint {path} not found")
    blob = torch.load(path, weights_only=True)
    blob["model_args"] = {"gnn": False}  # forgets hid=32
    bad = tmp_path / "h32_wrong_args.pt"
    torch.save(blob, bad)
    with pytest.raises(CheckpointError, match=r"layer_embed.weight: checkpoint \(15, 32\) vs model \(15, 128\)"):
        load(bad)


def test_mismatching_directory_checkpoint(tmp_path: Path) -> None:
    directory = _model().save(tmp_path / "ckpt")
    weights = load_file(str(directory / "model.safetensors"))
    weights.pop("layer_embed.weight")
    save_file(weights, str(directory / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing parameters: layer_embed.weight"):
        load(directory)


def test_unsupported_or_unknown_model_args(tmp_path: Path) -> None:
    state = _model(NiNoConfig(gnn=False, hid=8)).state_dict()
    for args, pattern in (({"gnn": False, "hid": 8, "dms": False}, "dms=False"), ({"gnn": False, "hid": 8, "foo": 1}, "foo")):
        path = tmp_path / "args.pt"
        torch.save({"state_dict": state, "model_args": args}, path)
        with pytest.raises(CheckpointError, match=pattern):
            load(path)


def test_missing_and_unreadable_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no NiNo checkpoint"):
        load(tmp_path / "nope.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load(tmp_path / "empty")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load(junk)
    notdict = tmp_path / "list.pt"
    torch.save([1, 2], notdict)
    with pytest.raises(CheckpointError, match="state_dict"):
        load(notdict)


def test_bad_config_json(tmp_path: Path) -> None:
    directory = _model().save(tmp_path / "ckpt")
    meta = json.loads((directory / "config.json").read_text())
    meta["config"]["colour"] = "blue"
    (directory / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="colour"):
        load(directory)
    (directory / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="not a nowcast.NiNoModel config"):
        load(directory)


class _Payload:
    """Unpickling this would run code (it calls a function with a side effect)."""

    def __reduce__(self):
        return (_touch, ("/tmp/neuralgraph-pickle-ran",))


def _touch(path):  # pragma: no cover - must never run
    open(path, "w").close()
    return {}


def test_pickle_that_would_execute_code_is_refused(tmp_path):
    import os

    import nowcast

    marker = "/tmp/neuralgraph-pickle-ran"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "model_args": _Payload()}, path)
    with pytest.raises(nowcast.CheckpointError, match="cannot read"):
        nowcast.load(path)
    assert not os.path.exists(marker)
