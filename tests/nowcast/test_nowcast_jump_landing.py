"""Where jumps land: the task metric of the last state, of the base optimizer's future state and of
each predictor's landing point, at the jumps the optimizer wrapper would make."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from nowcast_testutils import small_nino

import nowcast
from nowcast.jump_error import jump_windows
from nowcast.jump_landing import FUTURE, LAST, jump_landings, load_flat
from nowcast.metatrain import MetaDataset, RunSpec, collect_run
from nowcast.tasks import get_task

SEQ_LEN = 8


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("landings")
    data = get_task("digits").load_data(None)
    for spec in (RunSpec("digits", 0, 1.0, 400, every=20), RunSpec("digits", 1, 0.5, 400, every=20)):
        collect_run(spec, root, data=data)
    return root


class NoChange:
    name, needs_graph = "no change", False

    def predict(self, graph, states, k):
        return states[:, -1].clone()


def test_reference_columns_are_the_recorded_metrics_and_no_change_lands_on_the_last_state(runs):
    dataset = MetaDataset(runs, seq_len=SEQ_LEN)
    result = jump_landings({"stay": NoChange(), "linefit": "linefit", "nino": small_nino(seq_len=SEQ_LEN)}, dataset)
    assert result.metric == "accuracy" and result.higher_is_better
    assert len(result.rows) == len(jump_windows(dataset)) > 0
    for (index, _, k), (run_id, _, _, values) in zip(jump_windows(dataset), result.rows):
        window = dataset.windows[index]
        traj = dataset.trajectories[window.traj]
        recorded = traj.meta["snapshots"]["metric"]
        assert run_id == traj.run_id
        # the same network and validation set as collection: the metrics recorded at those snapshots
        assert values[LAST] == pytest.approx(recorded[window.last], abs=1e-9)
        assert values[FUTURE] == pytest.approx(recorded[window.last + k], abs=1e-9)
        assert values["stay"] == values[LAST]
        assert 0.0 <= values["linefit"] <= 1.0 and 0.0 <= values["nino"] <= 1.0
    assert "stay" in result.table() and "mean" in result.table()


def test_bad_inputs_are_refused(runs, tmp_path):
    dataset = MetaDataset(runs, seq_len=SEQ_LEN)
    with pytest.raises(ValueError, match="reference columns"):
        jump_landings({LAST: "linefit"}, dataset)
    net = get_task("digits").model(seed=0)
    params = dataset.trajectories[0].meta["architecture"]["params"]
    with pytest.raises(ValueError, match="values; the parameter list describes"):
        load_flat(net, torch.zeros(3), params)
    with pytest.raises(ValueError, match="has no parameter"):
        load_flat(net, torch.zeros(4), [["nope.weight", [2, 2]]])


def test_benchmark_script_prints_the_table(runs, tmp_path, capsys):
    nowcast.save(small_nino(seq_len=SEQ_LEN), tmp_path / "tiny")
    path = Path(__file__).parents[2] / "benchmarks" / "jump_landing.py"
    spec = importlib.util.spec_from_file_location("jump_landing_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--trajectories", str(runs), "--runs", "digits_s0_lr1_n400_e20", "--checkpoints", str(tmp_path / "tiny")]) == 0
    out = capsys.readouterr().out
    assert "accuracy where each jump lands" in out and "tiny" in out and "base optimizer" in out
    assert script.main(["--trajectories", str(tmp_path / "none"), "--checkpoints", str(tmp_path / "tiny")]) == 2
