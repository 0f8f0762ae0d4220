"""``nowcast compare`` / ``nowcast tasks`` on the command line."""

from __future__ import annotations

import json

from nowcast.cli import main


def test_compare_prints_steps_to_target_and_writes_the_plot(tmp_path, capsys):
    code = main(["compare", "--task", "digits", "--methods", "adam,linefit+", "--seeds", "1", "--max-steps", "60",
                 "--out", str(tmp_path), "--no-progress", "--threads", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "adam      seed 0" in out and "linefit+  seed 0" in out and "median" in out
    assert (tmp_path / "digits.png").stat().st_size > 1000 and (tmp_path / "digits.pdf").is_file()
    assert json.loads((tmp_path / "digits.json").read_text())["methods"]["linefit+"]["seeds"] == [0]


def test_compare_reports_a_missing_checkpoint_in_one_line(tmp_path, capsys):
    code = main(["compare", "--methods", "adam,nino", "--nino-checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("nowcast compare: error:") and "none.pt" in err


def test_tasks_lists_recipes_and_targets(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "fm16" in out and "0.895" in out and "validation:" in out
