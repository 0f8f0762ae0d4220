"""A file that is not a loadable checkpoint gets the project's error, saying why, and never
torch's advice to retry with ``weights_only=False`` (which would run code from the file)."""

from __future__ import annotations

import os
import pickle
import traceback
from pathlib import Path

import pytest
import torch

import nowcast
from nowcast.errors import CheckpointError
from nowcast.metatrain import CHECKPOINT_FILE, load_result
from nowcast.safe_load import load_torch_file


class Payload:
    """A class a pickle refers to: loading it would need to import and build Python objects."""

    def __init__(self) -> None:
        self.x = 1


class RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def write(path: Path, kind: str) -> Path:
    if kind == "object":
        torch.save({"state_dict": {}, "model_args": Payload()}, path)
    elif kind == "code":
        with open(path, "wb") as f:
            pickle.dump(RunsCode(), f)
    elif kind == "truncated":
        torch.save({"state_dict": {"w": torch.ones(100)}, "model_args": {}}, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "garbage":
        path.write_bytes(bytes(range(256)) * 4)
    return path


KINDS = ["object", "code", "truncated", "empty", "text", "garbage"]


def assert_clear(err: BaseException) -> None:
    message = str(err)
    assert "is not a loadable" in message and "never unpickles code" in message
    assert "weights_only=False" not in message and "trusted source" not in message
    shown = "".join(traceback.format_exception(err))
    assert "weights_only=False" not in shown and "weights_only` set to `False" not in shown  # no chained advice


@pytest.mark.parametrize("kind", KINDS)
def test_load_says_the_file_is_not_a_loadable_checkpoint(tmp_path: Path, kind: str) -> None:
    path = write(tmp_path / "model.pt", kind)
    with pytest.raises(CheckpointError) as info:
        nowcast.load(path)
    assert_clear(info.value)
    assert str(path) in str(info.value) and "NiNo checkpoint" in str(info.value)


def test_the_reason_names_what_is_in_the_way(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"holds a pickled Python object \(.*Payload\)"):
        nowcast.load(write(tmp_path / "a.pt", "object"))
    with pytest.raises(CheckpointError, match="damaged: truncated or changed after it was saved"):
        nowcast.load(write(tmp_path / "b.pt", "truncated"))
    with pytest.raises(CheckpointError, match="empty or cut short"):
        nowcast.load(write(tmp_path / "c.pt", "empty"))
    with pytest.raises(FileNotFoundError):
        nowcast.load(tmp_path / "missing.pt")


def test_other_readers_use_the_same_loader(tmp_path: Path) -> None:
    work = tmp_path / "run"
    work.mkdir()
    write(work / CHECKPOINT_FILE, "code")
    with pytest.raises(CheckpointError) as info:
        load_result(work)
    assert_clear(info.value)
    assert "meta-training checkpoint" in str(info.value)

    class StatesError(ValueError):
        pass

    with pytest.raises(StatesError) as info:
        load_torch_file(write(tmp_path / "s.pt", "garbage"), "states file", StatesError)
    assert_clear(info.value)
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(3)}, good)
    assert torch.equal(load_torch_file(good)["w"], torch.arange(3))
