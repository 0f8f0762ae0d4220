"""Steps-to-target comparison: medians, reductions, JSON (with resume), plot, the benchmark script."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

import nowcast.bench.comparison as bench
from nowcast.bench.comparison import Comparison, compare, median_steps
from nowcast.bench.training import RunResult

REPO = Path(__file__).resolve().parents[2]


def _run(method, seed, stt, values=(0.1, 0.5, 0.9), jumps=()):
    return RunResult("digits", method, seed, "accuracy", 0.8, True, 100, steps=[0, 50, 100][: len(values)],
                     values=list(values), jump_steps=list(jumps), steps_to_target=stt)


def test_median_counts_misses_as_slowest():
    assert median_steps([100, 300, 200]) == 200
    assert median_steps([100, None, 200]) == 200
    assert median_steps([100, None, None]) is None
    assert median_steps([100, 200]) == 150
    assert median_steps([]) is None


def test_reduction_table_and_json_round_trip(tmp_path):
    c = Comparison("digits", "accuracy", 0.8, True, [_run("adam", 0, 100), _run("adam", 1, 200), _run("nino", 0, 50), _run("nino", 1, None)])
    assert c.median("adam") == 150 and c.median("nino") is None and c.reduction("nino") is None
    c.runs.append(_run("nino", 2, 60))
    assert c.median("nino") == 60 and c.reduction("nino") == pytest.approx(60.0)
    table = c.table()
    assert "+60.0%" in table and "50 - 60" in table
    path = c.save_json(tmp_path / "r.json")
    doc = json.loads(path.read_text())
    assert doc["methods"]["nino"]["steps_to_target"] == [50, None, 60] and doc["methods"]["nino"]["median"] == 60
    assert Comparison.load_json(path).runs == c.runs


def test_merge_joins_comparisons_of_one_task():
    a = Comparison("digits", "accuracy", 0.8, True, [_run("adam", 0, 100), _run("adam", 1, 200)])
    b = Comparison("digits", "accuracy", 0.8, True, [_run("nino@mine", 0, 50), _run("nino@mine", 1, 70)])
    merged = Comparison.merge(a, b)
    assert merged.methods == ["adam", "nino@mine"] and merged.reduction("nino@mine") == pytest.approx(60.0)
    assert "nino@mine" in merged.table()
    with pytest.raises(ValueError, match="more than one"):
        Comparison.merge(a, a)
    with pytest.raises(ValueError, match="cannot merge"):
        Comparison.merge(a, Comparison("digits", "accuracy", 0.9, True, []))


def test_plot_is_written_and_not_blank(tmp_path):
    import matplotlib.image

    c = Comparison("digits", "accuracy", 0.8, True, [_run("adam", 0, 100), _run("nino", 0, 50, jumps=[50])])
    png = c.plot(tmp_path / "curves.png")
    assert png.stat().st_size > 1000 and png.with_suffix(".pdf").stat().st_size > 1000
    assert matplotlib.image.imread(png).std() > 0.01


def test_compare_reuses_stored_runs(tmp_path, monkeypatch):
    calls = []
    real = bench.train

    def counting(*args, **kwargs):
        calls.append(args[1].name)
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "train", counting)
    path = tmp_path / "d.json"
    first = compare("digits", ["adam", "linefit+"], seeds=2, max_steps=40, eval_every=20, period=20, progress=False, json_path=path)
    assert calls == ["adam", "adam", "linefit+", "linefit+"]
    again = compare("digits", ["adam", "linefit+"], seeds=2, max_steps=40, eval_every=20, period=20, progress=False, json_path=path)
    assert len(calls) == 4 and [r.values for r in again.runs] == [r.values for r in first.runs]
    compare("digits", ["adam"], seeds=[0], max_steps=20, eval_every=20, progress=False, json_path=path)
    assert len(calls) == 5  # another planned length is another run


def _script():
    spec = importlib.util.spec_from_file_location("steps_to_target", REPO / "benchmarks" / "steps_to_target.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_script_prints_the_table_and_writes_results(tmp_path, capsys):
    out = tmp_path / "res.json"
    code = _script().main(["--task", "digits", "--methods", "adam,linefit+", "--seeds", "1", "--max-steps", "60", "--json", str(out), "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert "median" in text and "linefit+" in text and str(out) in text
    assert set(json.loads(out.read_text())["methods"]) == {"adam", "linefit+"}
    assert out.with_suffix(".png").is_file()


def test_benchmark_script_reports_bad_methods(tmp_path, capsys):
    code = _script().main(["--task", "digits", "--methods", "adam,sgd", "--json", str(tmp_path / "x.json")])
    assert code == 2 and "unknown method 'sgd'" in capsys.readouterr().err


def test_adam_may_train_longer_than_the_planned_length(tmp_path):
    import dataclasses

    from nowcast.tasks import get_task

    task = dataclasses.replace(get_task("digits"), target=1.01)  # unreachable: every run uses its whole budget
    c = compare(task, ["adam", "linefit+"], seeds=1, max_steps=40, baseline_max_steps=60, eval_every=20, period=20, progress=False)
    budget = {r.method: (r.max_steps, r.steps[-1]) for r in c.runs}
    assert budget == {"adam": (60, 60), "linefit+": (40, 40)}
