"""The scripts in examples/ run end to end (tiny settings; the measured runs are in docs/results/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_hf_trainer_example_runs_both_and_writes_curves(shared_root, tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    data = shared_root / "data" / "tinyshakespeare" / "input.txt"
    if not data.is_file():
        pytest.skip(f"Tiny Shakespeare not found at {data}")
    command = [
        sys.executable, str(REPO / "examples" / "hf_trainer.py"), "--data", str(data), "--out", str(tmp_path),
        "--predictor", "linefit+", "--steps", "20", "--period", "10", "--eval-every", "10", "--layers", "1",
        "--width", "16", "--heads", "2", "--target", "3.5",
    ]
    done = subprocess.run(command, cwd=tmp_path, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "hf_trainer.json").read_text())
    plain, nino = record["runs"]
    assert plain["steps"] == nino["steps"] == [0, 10, 20]
    assert [int(j["step"]) for j in nino["jumps"]] == [10, 20]
    assert plain["val_loss"][0] == nino["val_loss"][0] and plain["val_loss"][-1] != nino["val_loss"][-1]
    assert (tmp_path / "hf_trainer.png").stat().st_size > 0
    assert "steps to target" in done.stdout


def test_hf_trainer_example_refuses_a_missing_data_path(tmp_path):
    pytest.importorskip("transformers")
    command = [sys.executable, str(REPO / "examples" / "hf_trainer.py"), "--data", str(tmp_path / "none.txt")]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "--data" in done.stderr and "no Tiny Shakespeare" in done.stderr
