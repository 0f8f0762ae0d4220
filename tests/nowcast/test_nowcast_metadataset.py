"""Meta-training windows: the dataset path feeds the model exactly what inference feeds it."""

from __future__ import annotations

import json

import pytest
import torch

from nowcast import NiNoConfig, NiNoModel, predict
from nowcast.scaling import scale_states, unscale
from nowcast.metatrain import GraphCache, MetaDataset, RunSpec, arch_key, collect_run
from nowcast.tasks import get_task

SEQ_LEN = 8


@pytest.fixture(scope="module")
def traj_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("trajectories")
    data = get_task("digits").load_data(None)
    runs = [RunSpec("digits", 0, 1.0, 180, every=20), RunSpec("digits", 1, 0.5, 140, every=20)]
    for r in runs:
        collect_run(r, root, data=data)
    return root


@pytest.fixture(scope="module")
def dataset(traj_dir):
    return MetaDataset(traj_dir, seq_len=SEQ_LEN)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = NiNoModel(NiNoConfig(hid=16, seq_len=SEQ_LEN, wte_pos_enc=False))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.2)  # predictions that move parameters noticeably
    return m.eval()


def test_windows_and_masks(dataset):
    # 10 and 8 snapshots; ctx 5 -> windows while at least one future snapshot exists
    assert [t.n_snapshots for t in dataset.trajectories] == [10, 8]
    assert len(dataset) == 5 + 3
    item = dataset[0]
    assert item.window.start == 0 and item.window.last == 4
    assert item.horizon_mask.tolist() == [True] * 5 + [False] * 3
    g = item.graph
    assert item.data.edge_attr.shape == (g.num_edges, 9 * 5)
    assert item.target.shape == item.mask.shape == (g.num_edges, 9 * SEQ_LEN)
    assert item.slot_mask.sum() == g.num_params  # exactly one slot per parameter element
    assert not item.target[~item.mask].any()
    last = dataset[len(dataset) - 1]
    assert last.horizon_mask.tolist() == [True] + [False] * (SEQ_LEN - 1)
    assert item.num_targets == g.num_params * 5


def test_dataset_path_equals_predict(dataset, model):
    """Train/infer consistency: same inputs -> the same numbers through both paths."""
    for i in (0, 3, len(dataset) - 1):
        item = dataset[i]
        inputs, futures, _ = dataset.window_states(i)
        graph = item.graph
        scaled, scales = scale_states(inputs, graph.params)
        assert torch.equal(item.data.edge_attr, graph.edge_features(scaled))
        assert torch.equal(item.data.edge_type, graph.edge_type) and torch.equal(item.data.edge_index, graph.edge_index)
        assert torch.equal(item.data.pos, graph.pos) and torch.equal(item.data.pos_w, graph.pos_w)
        for k in (1, 3, SEQ_LEN):
            with torch.no_grad():
                ours = unscale(graph.to_params(model(item.data, k)), item.scales)
            assert torch.equal(ours, predict(graph, inputs, k, model))


def test_windows_carry_the_regime_of_their_run(traj_dir, dataset):
    """lr x steps between window states, from each run's metadata (what a regime router splits on)."""
    for t, traj in enumerate(dataset.trajectories):
        assert dataset.lr_interval(t) == pytest.approx(traj.meta["optimizer"]["lr"] * 20)
    wide = MetaDataset(traj_dir, seq_len=SEQ_LEN, spacing=2)
    assert wide.lr_interval(0) == pytest.approx(2 * dataset.lr_interval(0))
    assert dataset.lr_interval(0) == pytest.approx(2 * dataset.lr_interval(1))  # lr x1 vs x0.5
    assert dataset[6].data.lr_interval == dataset.lr_interval(1)  # a window of the second run


def test_targets_reconstruct_the_future(dataset):
    for i in (0, 4, 6):
        item = dataset[i]
        _, futures, valid = dataset.window_states(i)
        e, f = item.slot_mask.shape
        target = item.target.view(e, f, SEQ_LEN)
        for k in torch.nonzero(valid).flatten().tolist():
            # a perfect model output (last scaled state + true change) unscales to the true future state
            out = item.last + target[:, :, k]
            mean, std = item.scales.per_row()
            scaled_future = (futures[:, k] - mean) / (std + 1e-6)
            assert torch.allclose(item.graph.to_params(out), scaled_future, atol=1e-5)
            # unscale (x * std + mean, no eps, as inference) recovers it up to the eps of the scaling
            theta = unscale(item.graph.to_params(out), item.scales)
            assert torch.allclose(theta, futures[:, k], rtol=1e-4, atol=1e-5)
    # the future rows are the snapshots k intervals after the window's last one
    traj = dataset.trajectories[0]
    _, futures, _ = dataset.window_states(1)
    assert torch.equal(futures[:, 0], traj.states([6])[:, 0])


def test_graphs_are_cached_per_architecture(traj_dir, tmp_path):
    cache = GraphCache(tmp_path / "graphs")
    ds = MetaDataset(traj_dir, seq_len=SEQ_LEN, graphs=cache)
    assert len(cache) == 1 and ds[0].graph is ds[len(ds) - 1].graph
    files = list((tmp_path / "graphs").glob("graph-*.pt"))
    assert len(files) == 1
    # a fresh cache reads the positional encodings back from disk
    other = MetaDataset(traj_dir, seq_len=SEQ_LEN, cache_dir=tmp_path / "graphs")
    assert torch.equal(other[0].graph.pos, ds[0].graph.pos)
    meta = ds.trajectories[0].meta
    assert files[0].name == f"graph-{arch_key(meta['architecture'])}.pt"


def test_unfinished_runs_are_skipped_unless_asked(traj_dir, tmp_path):
    import shutil

    run = sorted(p for p in traj_dir.iterdir() if p.is_dir())[0]
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["status"], meta["n_snapshots"] = "running", 6
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(FileNotFoundError):
        MetaDataset(tmp_path / "nothing-here", seq_len=SEQ_LEN)
    assert len(MetaDataset([copy], seq_len=SEQ_LEN)) == 0
    assert len(MetaDataset([copy], seq_len=SEQ_LEN, include_unfinished=True)) == 1


def test_describe_lists_the_runs(dataset):
    rows = dataset.describe()
    assert [r["windows"] for r in rows] == [5, 3]
    assert rows[0]["task"] == "digits" and rows[1]["lr_mult"] == 0.5 and rows[0]["every"] == 20
