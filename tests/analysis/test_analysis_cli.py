"""The ``analysis`` command line: symmetry, draw, pca."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.cli import main


def assert_real_figure(png, pdf):
    """Both files exist and are non-empty, and the PNG is not blank."""
    import matplotlib.image

    assert png.stat().st_size > 1000 and pdf.stat().st_size > 1000
    assert pdf.read_bytes().startswith(b"%PDF")
    assert matplotlib.image.imread(png)[..., :3].var() > 0


def written(out: str) -> list[Path]:
    return [Path(p) for p in re.findall(r"^wrote (.+)$", out, flags=re.M)]


@pytest.mark.parametrize("kind", ["adjacency", "lpe", "graph"])
def test_draw(kind, tmp_path, capsys):
    if kind == "graph" and shutil.which("dot") is None:
        pytest.skip("graphviz's 'dot' is not installed (apt-get install graphviz)")
    assert main(["draw", "mlp", "--kind", kind, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    paths = written(out)
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert paths[0].parent == tmp_path and paths[0].stem == f"mlp_{kind}"
    assert_real_figure(*paths)
    assert "edge type" in out and "linear" in out and "self_loop" in out


def test_draw_registered_attention_example(tmp_path, capsys):
    pytest.importorskip("transformers")
    assert main(["draw", "gpt2", "--kind", "adjacency", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "gpt2 graph" in out and "attn_query" in out
    assert_real_figure(*written(out))


def test_draw_errors_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    assert main(["draw", "resnet9000", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("analysis draw: error: ") and "resnet9000" in err and err.count("\n") == 1
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["draw", "mlp", "--kind", "graph", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "graphviz" in err and "apt-get install graphviz" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as info:  # argparse: bad choice
        main(["draw", "mlp", "--kind", "pie"])
    assert info.value.code == 2


def test_pca_demo_tiny(tmp_path, capsys):
    code = main(["pca", "--steps", "40", "--period", "10", "--every", "5", "--batch", "32", "--embed",
                 "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    paths = written(out)
    assert [p.name for p in paths] == ["pca_trajectories.png", "pca_trajectories.pdf",
                                       "pca_embeddings.png", "pca_embeddings.pdf"]
    assert_real_figure(*paths[:2])
    assert_real_figure(*paths[2:])
    # columns after the run name: snapshots, jumps, last loss, val acc
    adam = next(line for line in out.splitlines() if line.startswith("Adam  ")).split()[1:]
    nowcast = next(line for line in out.splitlines() if line.startswith("Adam + linefit+")).split()[3:]
    assert adam[:2] == ["9", "0"]  # steps 0, 5, ..., 40; no jumps
    assert nowcast[1] == "4"  # 40 steps, period 10: four jumps
    assert int(nowcast[0]) > 9  # plus the snapshots just before each jump
    assert "PCA fitted on Adam" in out


def test_pca_bad_period(tmp_path, capsys):
    assert main(["pca", "--period", "12", "--out", str(tmp_path)]) == 2
    assert "multiple of ctx" in capsys.readouterr().err


def test_symmetry(tmp_path, capsys):
    pytest.importorskip("analysis.symmetry")
    pytest.importorskip("transformers")
    code = main(["symmetry", "--arch", "gpt2", "--width", "8", "--heads", "2", "--n", "24", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "correct" in out and "naive" in out
    paths = written(out)
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_symmetry_error_exit_2(tmp_path, capsys):
    pytest.importorskip("analysis.symmetry")
    assert main(["symmetry", "--arch", "sequential", "--n", "10", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("analysis symmetry: error: ")


def test_python_m_analysis_help():
    run = subprocess.run([sys.executable, "-m", "analysis", "--help"], capture_output=True, text=True, check=True)
    assert "symmetry" in run.stdout and "draw" in run.stdout and "pca" in run.stdout
