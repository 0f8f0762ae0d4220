"""The jump-error proxy: which windows and horizons the optimizer wrapper would use, and the errors."""

from __future__ import annotations

import pytest
import torch

from nowcast.metatrain.jump_error import JumpScore, jump_errors, jump_windows
from nowcast.metatrain import MetaDataset, RunSpec, collect_run
from nowcast.optim import horizon_schedule
from nowcast.tasks import get_task

SEQ_LEN = 8


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("jumps")
    data = get_task("digits").load_data(None)
    for spec in (RunSpec("digits", 0, 1.0, 400, every=20), RunSpec("digits", 1, 0.5, 400, every=20), RunSpec("digits", 2, 1.0, 200, every=20)):
        collect_run(spec, root, data=data)
    return root


def test_jumps_read_one_period_of_states_and_look_k_ahead(runs):
    dataset = MetaDataset([runs / "digits_s0_lr1_n400_e20"], seq_len=SEQ_LEN)
    pairs = jump_windows(dataset)
    ks = horizon_schedule(400, 5 * 20, SEQ_LEN)  # period = ctx * every
    steps = dataset.trajectories[0].meta["snapshots"]["step"]
    assert [j for _, j, _ in pairs] == [j for j, k in enumerate(ks) if (j + 1) * 5 + k <= 20]
    for index, j, k in pairs:
        w = dataset.windows[index]
        # the states recorded during period j (steps j*100 + 20, ..., (j+1)*100), as the wrapper records them
        assert [steps[r] for r in range(w.start, w.last + 1)] == [j * 100 + 20 * (i + 1) for i in range(5)]
        assert k == ks[j]


def test_errors_of_a_perfect_and_a_no_change_predictor(runs, monkeypatch):
    dataset = MetaDataset([runs / "digits_s0_lr1_n400_e20", runs / "digits_s1_lr0.5_n400_e20"], seq_len=SEQ_LEN)
    items = {}  # the predictors see the graph data only; remember which window it came from
    original = MetaDataset.__getitem__

    def remember(self, i):
        item = original(self, i)
        items[id(item.data)] = item
        return item

    monkeypatch.setattr(MetaDataset, "__getitem__", remember)

    def perfect(data, ks):
        item = items[id(data)]
        e, f = item.slot_mask.shape
        return item.last.unsqueeze(-1) + item.target.view(e, f, SEQ_LEN)[:, :, [k - 1 for k in ks]]

    result = jump_errors({"perfect": perfect, "still": lambda data, ks: items[id(data)].last.unsqueeze(-1)}, dataset)
    assert result.counts[0] == 2 and all(v == 0.0 for v in result.errors["perfect"] if v is not None)
    assert result.errors["still"] == pytest.approx(result.errors["zero"])
    assert result.gain("perfect", 0) == pytest.approx(1.0) and result.gain("still") == pytest.approx(0.0)
    assert result.errors["zero"][0] > 0
    assert "perfect" in result.table() and "first-jump gain" in result.table()
    with pytest.raises(ValueError, match="no-change baseline"):
        jump_errors({"zero": perfect}, dataset)


def test_runs_of_different_lengths_are_tabled_apart_but_scored_together(runs):
    dataset = MetaDataset(runs, seq_len=SEQ_LEN)
    with pytest.raises(ValueError, match="one task's runs at a time"):
        jump_errors({"still": lambda data, ks: torch.zeros(1)}, dataset)
    pairs = jump_windows(dataset)  # each trajectory on its own schedule
    by_traj = {}
    for index, j, k in pairs:
        by_traj.setdefault(dataset.trajectories[dataset.windows[index].traj].run_id, []).append((j, k))
    assert by_traj["digits_s0_lr1_n400_e20"] == [(0, 8), (1, 5), (2, 3)]
    assert "digits_s2_lr1_n200_e20" not in by_traj  # 200 steps: no jump target recorded
    score = JumpScore(dataset)
    assert score.pairs == pairs


def test_benchmark_script_prints_the_table(runs, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    import nowcast
    from nowcast.model import NiNoModel
    from nowcast.model.config import NiNoConfig

    model = NiNoModel(NiNoConfig(hid=8, seq_len=SEQ_LEN, gnn=True, wte_pos_enc=False), edge_chunk=None)
    torch.manual_seed(0)
    nowcast.save(model, tmp_path / "tiny")
    path = Path(__file__).parents[2] / "benchmarks" / "jump_error.py"
    spec = importlib.util.spec_from_file_location("jump_error_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = ["--trajectories", str(runs), "--runs", "digits_s0_lr1_n400_e20,digits_s1_lr0.5_n400_e20", "--checkpoints", str(tmp_path / "tiny")]
    assert script.main(argv) == 0
    out = capsys.readouterr().out
    assert "jump errors on 2 trajectories" in out and "tiny" in out and "zero" in out
    assert script.main(["--trajectories", str(runs), "--checkpoints", str(tmp_path / "tiny")]) == 2
