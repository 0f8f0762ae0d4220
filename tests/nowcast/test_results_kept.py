"""Nothing stored is lost: result files and checkpoint folders are written in one step, reruns
merge into result files instead of writing over them, and a killed comparison resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import nowcast.bench.comparison as bench
from nowcast.atomic import atomic_directory, recover_directory, write_text_atomic
from nowcast.nowcasters.baselines import LinefitPlus
from nowcast.bench.comparison import Comparison, compare
from nowcast.bench.methods import Method

FAST = dict(max_steps=20, eval_every=10, period=10, progress=False)


def _doc(path: Path) -> dict:
    return json.loads(path.read_text())


def _stored(path: Path, key: str = "runs") -> set[tuple[str, int]]:
    return {(r["method"], r["seed"]) for r in _doc(path)[key]}


def _counting(monkeypatch) -> list[tuple[str, int]]:
    calls: list[tuple[str, int]] = []
    real = bench.train

    def counting(task, method, **kwargs):
        calls.append((method.name, kwargs["seed"]))
        return real(task, method, **kwargs)

    monkeypatch.setattr(bench, "train", counting)
    return calls


def _no_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------------- atomic writes
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = write_text_atomic(tmp_path / "r.json", "old")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(path, "new")
    assert path.read_text() == "old" and _no_leftovers(tmp_path) == []


def test_a_folder_appears_complete_or_not_at_all(tmp_path):
    target = tmp_path / "ckpt"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "config.json").write_text("{}")
            raise RuntimeError("killed half-way")
    assert not target.exists() and _no_leftovers(tmp_path) == []

    with atomic_directory(target) as tmp:
        (tmp / "config.json").write_text("1")
    (target / "NOTES.md").write_text("added by hand")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "config.json").write_text("2")
            raise RuntimeError("killed half-way")
    assert (target / "config.json").read_text() == "1"
    with atomic_directory(target) as tmp:
        (tmp / "config.json").write_text("3")
    assert (target / "config.json").read_text() == "3" and (target / "NOTES.md").read_text() == "added by hand"
    assert _no_leftovers(tmp_path) == []


def test_a_crash_between_the_two_renames_is_undone(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_directory(target) as tmp:
        (tmp / "config.json").write_text("old")
    # what a writer killed after moving the old folder aside (process 999999999 is gone) leaves
    os.replace(target, tmp_path / ".ckpt.old-999999999-abcd")
    (tmp_path / ".ckpt.partial-999999999-abcd").mkdir()
    assert recover_directory(target)
    assert (target / "config.json").read_text() == "old" and _no_leftovers(tmp_path) == []


def test_a_checkpoint_that_fails_to_write_never_appears(tmp_path):
    from nowcast.model.files import write_directory

    with pytest.raises(TypeError):
        write_directory(tmp_path / "ckpt", {"bad": object()}, {"w": torch.zeros(2)})  # weights written, then config fails
    assert not (tmp_path / "ckpt").exists() and _no_leftovers(tmp_path) == []


def test_meta_training_export_is_all_or_nothing(tmp_path, monkeypatch):
    import nowcast.metatrain.outputs
    from nowcast.metatrain import MetaTrainConfig, MetaTrainResult, export
    from nowcast.model import NiNoModel

    config = MetaTrainConfig(hid=8, layers=1, lpe=2, seq_len=4)
    result = MetaTrainResult(
        model=NiNoModel(config.nino_config()), config=config, step=0, history={"step": [], "loss": [], "lr": []},
        evals={"step": [], "loss": []}, baselines={}, nan_skips=0, rollbacks=0, lr_scale=1.0, wall_s=0.0, dataset=[],
        work_dir=tmp_path,
    )

    def broken(*args, **kwargs):
        raise RuntimeError("killed while writing the card")

    monkeypatch.setattr(nowcast.metatrain.outputs, "write_model_card", broken)
    with pytest.raises(RuntimeError):
        export(result, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists() and _no_leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------ merged results
def test_a_rerun_without_resume_keeps_the_other_seeds(tmp_path, monkeypatch):
    calls = _counting(monkeypatch)
    path = tmp_path / "digits.json"
    compare("digits", ["adam"], seeds=3, json_path=path, resume=False, **FAST)
    before = {r["seed"]: r for r in _doc(path)["runs"]}
    again = compare("digits", ["adam"], seeds=1, json_path=path, resume=False, **FAST)
    assert calls == [("adam", 0), ("adam", 1), ("adam", 2), ("adam", 0)]  # seed 0 recomputed
    assert [r.seed for r in again.runs] == [0] and {r.seed for r in again.other_runs} == {1, 2}
    assert again.summary()["adam"]["seeds"] == [0]  # the table shows what was asked for
    after = {r["seed"]: r for r in _doc(path)["runs"]}
    assert set(after) == {0, 1, 2} and after[1] == before[1] and after[2] == before[2]
    assert after[0]["wall_s"] != before[0]["wall_s"]  # replaced by the new run, not duplicated
    assert _doc(path)["methods"]["adam"]["seeds"] == [0, 1, 2]


def test_resume_with_fewer_seeds_reuses_and_keeps_everything(tmp_path, monkeypatch):
    calls = _counting(monkeypatch)
    path = tmp_path / "digits.json"
    compare("digits", ["adam", "linefit+"], seeds=3, json_path=path, **FAST)
    stored = _doc(path)["runs"]
    c = compare("digits", ["linefit+"], seeds=[1], json_path=path, resume=True, **FAST)
    assert len(calls) == 6 and [(r.method, r.seed) for r in c.runs] == [("linefit+", 1)]
    assert _doc(path)["runs"] == stored


def test_another_checkpoint_is_kept_apart_not_reused(tmp_path, monkeypatch):
    calls = _counting(monkeypatch)
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    first.write_bytes(b"checkpoint A")
    second.write_bytes(b"checkpoint B")
    path = tmp_path / "digits.json"
    compare("digits", [Method("nino", LinefitPlus(), str(first))], seeds=2, json_path=path, **FAST)
    a_runs = _doc(path)["runs"]
    c = compare("digits", [Method("nino", LinefitPlus(), str(second))], seeds=1, json_path=path, resume=True, **FAST)
    assert calls == [("nino", 0), ("nino", 1), ("nino", 0)]  # not reused from checkpoint A
    assert [r.checkpoint for r in c.runs] == [str(second)]
    doc = _doc(path)
    assert [r["identity"]["checkpoint"] for r in doc["runs"]] == [str(second.resolve())]
    assert doc["methods"]["nino"]["seeds"] == [0]  # A's runs are not summarised as B's
    assert sorted(doc["other_runs"], key=lambda r: r["seed"]) == a_runs  # ... but kept
    # the same path with other contents (re-exported in place) is another checkpoint too
    first.write_bytes(b"checkpoint A, retrained")
    compare("digits", [Method("nino", LinefitPlus(), str(first))], seeds=1, json_path=path, resume=True, **FAST)
    assert len(calls) == 4 and len(_doc(path)["other_runs"]) == 3
    # going back to B reuses its run
    compare("digits", [Method("nino", LinefitPlus(), str(second))], seeds=1, json_path=path, resume=True, **FAST)
    assert len(calls) == 4


def test_other_settings_are_other_runs(tmp_path, monkeypatch):
    calls = _counting(monkeypatch)
    path = tmp_path / "digits.json"
    compare("digits", ["linefit+"], seeds=1, json_path=path, **FAST)
    compare("digits", ["linefit+"], seeds=1, json_path=path, **{**FAST, "period": 5})
    compare("digits", ["linefit+"], seeds=1, json_path=path, **{**FAST, "max_steps": 30})
    assert len(calls) == 3 and len(_doc(path)["runs"]) == 1 and len(_doc(path)["other_runs"]) == 2
    compare("digits", ["linefit+"], seeds=1, json_path=path, **{**FAST, "period": 5})
    assert len(calls) == 3


def test_files_from_before_identities_still_load_and_resume(tmp_path, monkeypatch):
    path = tmp_path / "digits.json"
    compare("digits", ["adam"], seeds=2, json_path=path, max_steps=20, progress=False)
    doc = _doc(path)
    for key in ("version", "other_runs"):
        doc.pop(key)
    for run in doc["runs"]:
        run.pop("identity")
    path.write_text(json.dumps(doc))
    old = Comparison.load_json(path)
    assert [r.seed for r in old.runs] == [0, 1] and old.other_runs == []
    calls = _counting(monkeypatch)
    c = compare("digits", ["adam"], seeds=3, json_path=path, max_steps=20, progress=False)
    assert calls == [("adam", 2)] and [r.values for r in c.runs[:2]] == [r.values for r in old.runs]
    assert _doc(path)["methods"]["adam"]["seeds"] == [0, 1, 2]


def test_a_file_that_is_not_a_result_is_refused_not_overwritten(tmp_path):
    path = tmp_path / "digits.json"
    path.write_text('{"something": "else"}')
    with pytest.raises(ValueError, match="not a readable comparison result"):
        compare("digits", ["adam"], seeds=1, json_path=path, **FAST)
    assert path.read_text() == '{"something": "else"}'
    other = tmp_path / "fm16.json"
    Comparison("fm16", "accuracy", 0.9, True).save_json(other)
    with pytest.raises(ValueError, match="holds results of task fm16"):
        compare("digits", ["adam"], seeds=1, json_path=other, **FAST)


# ------------------------------------------------------------------------------------- killed runs
_PAUSING_CLI = """
import pathlib, sys, time
import nowcast.bench.comparison as bench
real, started = bench.train, []

def train(task, method, **kwargs):
    started.append(method.name)
    if len(started) == 3:  # pause inside the third run, so that it is killed half-way
        def pause(step, model, optimizer):
            if step == 5:
                pathlib.Path(sys.argv[1]).write_text("paused")
                time.sleep(600)
        kwargs["callback"] = pause
    return real(task, method, **kwargs)

bench.train = train
from nowcast.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _compare_args(out: Path, max_steps: int) -> list[str]:
    return ["compare", "--task", "digits", "--methods", "adam,linefit+", "--seeds", "2", "--max-steps", str(max_steps),
            "--no-progress", "--threads", "1", "--out", str(out)]


def _kill_and_resume(tmp_path, monkeypatch, proc: subprocess.Popen, stopped, max_steps: int) -> None:
    from nowcast.cli import main

    path = tmp_path / "out" / "digits.json"
    deadline = time.monotonic() + 120
    while not stopped() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.fail(f"the comparison ended (code {proc.returncode}) before it could be killed: {proc.stderr.read()}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    finished = {(r["method"], r["seed"]): r for r in _doc(path)["runs"]}
    assert finished and len(finished) < 4
    calls = _counting(monkeypatch)
    assert main(_compare_args(tmp_path / "out", max_steps) + ["--resume"]) == 0
    after = {(r["method"], r["seed"]): r for r in _doc(path)["runs"]}
    assert set(after) == {("adam", 0), ("adam", 1), ("linefit+", 0), ("linefit+", 1)}
    assert all(after[k] == run for k, run in finished.items())  # kept and reused as they were
    assert set(calls) == set(after) - set(finished)


def test_a_killed_comparison_resumes_with_every_finished_run(tmp_path, monkeypatch):
    marker = tmp_path / "paused"
    args = [sys.executable, "-c", _PAUSING_CLI, str(marker), *_compare_args(tmp_path / "out", 30)]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _kill_and_resume(tmp_path, monkeypatch, proc, marker.exists, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(_stored(tmp_path / "out" / "digits.json")) == 4


@pytest.mark.slow
def test_the_plain_command_killed_after_its_first_run_resumes(tmp_path, monkeypatch):
    path = tmp_path / "out" / "digits.json"

    def one_run_stored() -> bool:
        try:
            return len(_doc(path)["runs"]) >= 1
        except (OSError, ValueError):
            return False

    args = [sys.executable, "-m", "nowcast", *_compare_args(tmp_path / "out", 400)]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _kill_and_resume(tmp_path, monkeypatch, proc, one_run_stored, 400)
    finally:
        if proc.poll() is None:
            proc.kill()
