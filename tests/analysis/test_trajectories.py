"""analysis.trajectories: recording, PCA on the baseline, plots, NiNo graph embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import neuralgraph
import nowcast
from analysis import (
    PCAProjection,
    Trajectory,
    TrajectoryRecorder,
    embedding_trajectory,
    pca_project,
    plot_embeddings,
    plot_trajectories,
)
from neuralgraph.examples import mlp


def assert_real_figure(png, pdf):
    """Both files exist and are non-empty, and the PNG is not blank."""
    import matplotlib.image

    assert png.stat().st_size > 1000 and pdf.stat().st_size > 1000
    assert pdf.read_bytes().startswith(b"%PDF")
    assert matplotlib.image.imread(png)[..., :3].var() > 0


def _train(model, opt, steps, rec, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=gen)
    y = torch.randint(0, 3, (64,), generator=gen)
    rec.record(0, model)
    for step in range(1, steps + 1):
        opt.zero_grad()
        if getattr(opt, "need_grads", True):
            F.cross_entropy(model(x), y).backward()
        opt.step()
        rec(step, model, opt)


# ------------------------------------------------------------------------------------ Trajectory
def test_from_state_dicts_vectors_and_models_agree():
    torch.manual_seed(0)
    models = [mlp() for _ in range(3)]
    by_dict = Trajectory.from_state_dicts([m.state_dict() for m in models], name="a", steps=[0, 10, 20])
    by_vec = Trajectory.from_state_dicts([neuralgraph.flatten_params(m) for m in models], steps=[0, 10, 20])
    by_model = Trajectory.from_state_dicts(models, steps=[0, 10, 20], jump_steps=[10])
    by_array = Trajectory.from_state_dicts([neuralgraph.flatten_params(m).numpy() for m in models])
    assert by_dict.params.dtype == np.float32 and by_dict.params.shape == (3, 4 * 5 + 5 + 5 * 3 + 3)
    np.testing.assert_array_equal(by_dict.params, by_vec.params)
    np.testing.assert_array_equal(by_model.params, by_vec.params)
    np.testing.assert_array_equal(by_array.params, by_vec.params)
    assert by_model.is_jump.tolist() == [False, True, False]
    assert by_array.steps.tolist() == [0, 1, 2]


def test_from_state_dicts_uses_model_parameter_order_and_skips_buffers():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    states = [net.state_dict(), net.state_dict()]
    with_buffers = Trajectory.from_state_dicts(states)
    params_only = Trajectory.from_state_dicts(states, model=net)
    assert params_only.num_params == sum(p.numel() for p in net.parameters())
    assert with_buffers.num_params == params_only.num_params + 8  # running mean and var
    np.testing.assert_array_equal(params_only.params[0], neuralgraph.flatten_params(net).numpy())


def test_trajectory_validation_and_save_load(tmp_path):
    with pytest.raises(ValueError, match="strictly increasing"):
        Trajectory("x", [0, 0], np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\[T, P\]"):
        Trajectory("x", [0, 1, 2], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="different numbers"):
        Trajectory.from_state_dicts([np.zeros(3), np.zeros(4)])
    traj = Trajectory("run", [0, 5, 9], np.arange(12.0).reshape(3, 4), [5], {"loss": [3.0, 2.0, 1.0]})
    back = Trajectory.load(traj.save(tmp_path / "t"))
    assert back.name == "run" and back.steps.tolist() == [0, 5, 9] and back.jump_steps.tolist() == [5]
    np.testing.assert_array_equal(back.params, traj.params)
    np.testing.assert_array_equal(back.metrics["loss"], [3.0, 2.0, 1.0])
    sub = Trajectory("r", np.arange(10), np.zeros((10, 2)), [7]).every(4)
    assert sub.steps.tolist() == [0, 4, 6, 7, 8, 9]  # 6 and 7: before / after the jump; 9: the last


# ------------------------------------------------------------------------------------ recorder
def test_recorder_every_and_metrics():
    torch.manual_seed(0)
    model = mlp()
    initial = neuralgraph.flatten_params(model).numpy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = TrajectoryRecorder("SGD", every=4)
    _train(model, opt, 10, rec)
    traj = rec.trajectory()
    assert traj.steps.tolist() == [0, 4, 8]
    assert traj.jump_steps.size == 0
    np.testing.assert_array_equal(traj.params[0], initial)
    assert not np.array_equal(traj.params[1], initial)
    rec.record(8, model, loss=1.5)  # the same step again replaces the snapshot
    assert len(rec) == 3 and rec.trajectory().metrics["loss"].tolist()[-1] == 1.5
    with pytest.raises(ValueError, match="comes after"):
        rec.record(2, model)


def test_recorder_marks_nino_linefit_plus_jumps():
    torch.manual_seed(0)
    model = mlp()
    base = torch.optim.Adam(model.parameters(), lr=1e-2)
    opt = nowcast.NiNo(base, model, "linefit+", period=10, max_train_steps=40)
    rec = TrajectoryRecorder("Linefit+", every=4)
    _train(model, opt, 40, rec)
    traj = rec.trajectory()
    # the 10th, 20th, ... step() calls jump: with steps counted from 1 those are steps 10, 20, 30, 40
    assert opt.jumps == 4
    assert traj.jump_steps.tolist() == [10, 20, 30, 40]
    assert set(traj.jump_steps.tolist()) <= set(traj.steps.tolist())  # post-jump snapshots always taken
    assert {9, 19, 29, 39} <= set(traj.steps.tolist())  # pre-jump snapshots too
    # the post-jump snapshot is the prediction, far from where the pre-jump one was
    i = int(np.flatnonzero(traj.steps == 10)[0])
    assert np.abs(traj.params[i] - traj.params[i - 1]).max() > 0


def test_recorder_attach_hook_and_mark_jump():
    torch.manual_seed(0)
    model = mlp()
    opt = nowcast.NiNo(torch.optim.Adam(model.parameters(), lr=1e-2), model, "linefit", period=5, max_train_steps=10)
    rec = TrajectoryRecorder("hooked", every=100)
    handle = rec.attach(model, opt)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    for _ in range(10):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    handle.remove()
    assert rec.jump_steps == [5, 10]
    manual = TrajectoryRecorder("manual")
    manual.record(0, torch.zeros(3))
    manual.mark_jump(1)
    manual.record(1, torch.ones(3))
    assert manual.trajectory().is_jump.tolist() == [False, True]


# ------------------------------------------------------------------------------------ PCA
def _synthetic(seed=0, t=30, p=50):
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(p, 4)))[0].T  # 4 orthonormal directions
    s = np.linspace(0, 1, t)[:, None]
    base = 5 * s * basis[0] + 2 * np.sin(3 * s) * basis[1] + 0.01 * rng.normal(size=(t, p))
    # the other run moves mostly along directions the baseline does not use
    other = 20 * s * basis[2] + 10 * s**2 * basis[3]
    return Trajectory("base", np.arange(t), base), Trajectory("other", np.arange(t), other), basis


def test_pca_is_fitted_on_the_baseline_only():
    base, other, basis = _synthetic()
    proj = pca_project([other, base], baseline="base")
    assert isinstance(proj, PCAProjection) and proj.baseline == 1
    # the baseline's projection carries exactly its top-2 principal variances
    centred = base.params.astype(np.float64) - base.params.mean(0)
    eig = np.sort(np.linalg.eigvalsh(centred @ centred.T / (len(base) - 1)))[::-1]
    np.testing.assert_allclose(proj["base"].var(axis=0, ddof=1), eig[:2], rtol=1e-6)
    np.testing.assert_allclose(proj.explained_variance, eig[:2], rtol=1e-6)
    np.testing.assert_allclose(proj.explained_variance_ratio, eig[:2] / eig.sum(), rtol=1e-6)
    # the directions are the baseline's, so the other run (orthogonal motion) barely moves;
    # a PCA fitted on both runs would be dominated by the other run instead
    assert proj["other"].std(axis=0).max() < 0.05 * proj["base"].std(axis=0).max()
    assert abs(proj.components[0] @ basis[0]) > 0.99
    # signs: the baseline ends on the positive side of both axes
    assert (proj["base"][-1] >= 0).all()


def test_pca_errors():
    base, _, _ = _synthetic()
    with pytest.raises(ValueError, match="no trajectory named"):
        pca_project([base], baseline="adam")
    with pytest.raises(ValueError, match="parameters like the baseline"):
        pca_project([base, Trajectory("small", [0, 1], np.zeros((2, 3)))])
    with pytest.raises(ValueError, match="at least 2 snapshots"):
        pca_project([Trajectory("one", [0], np.zeros((1, 3)))])


def test_plot_trajectories_writes_real_figures(tmp_path):
    base, other, _ = _synthetic()
    jumped = Trajectory("nowcast", other.steps, 0.1 * other.params + base.params, [10, 20])
    fig = plot_trajectories([base, jumped], tmp_path / "traj.png", baseline="base")
    assert fig.png == tmp_path / "traj.png" and fig.pdf == tmp_path / "traj.pdf"
    assert_real_figure(fig.png, fig.pdf)
    assert {"base", "nowcast", "start", "end", "nowcast jump"} <= set(fig.legend)
    assert len(fig.info["explained_variance_ratio"]) == 2


# ------------------------------------------------------------------------------------ embeddings
@pytest.fixture(scope="module")
def mlp_run():
    torch.manual_seed(0)
    model = mlp()
    graph = neuralgraph.convert(model)
    opt = nowcast.NiNo(torch.optim.Adam(model.parameters(), lr=1e-2), model, "linefit+", period=10, max_train_steps=30)
    rec = TrajectoryRecorder("Linefit+", every=2)
    _train(model, opt, 30, rec)
    return graph, rec.trajectory()


@pytest.mark.parametrize("gnn", [True, False])
def test_embedding_trajectory_random_model(mlp_run, tmp_path, gnn):
    graph, traj = mlp_run
    torch.manual_seed(0)
    model = nowcast.NiNoModel(nowcast.NiNoConfig(hid=16, layers=2, gnn=gnn, wte_pos_enc=False, mlp_layers=2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    emb = embedding_trajectory(model, graph, traj)
    assert emb.params.shape == (len(traj) - 4, 32 if gnn else 16)
    assert emb.steps.tolist() == traj.steps[4:].tolist()
    assert np.isfinite(emb.params).all() and emb.params.std(0).max() > 0
    assert set(emb.jump_steps.tolist()) == set(traj.jump_steps.tolist())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    single = embedding_trajectory(model, graph, traj, ctx=1, stride=3)
    assert single.steps[0] == traj.steps[0] and single.steps[-1] == traj.steps[-1]
    assert set(traj.jump_steps.tolist()) <= set(single.steps.tolist())  # jumps survive the stride
    fig = plot_embeddings([emb, single], tmp_path / "emb")
    assert_real_figure(fig.png, fig.pdf)


def test_embedding_window_matches_manual_preparation(mlp_run):
    """One window, prepared by hand as nowcast.predict does, gives the same pooled vector."""
    graph, traj = mlp_run
    torch.manual_seed(1)
    model = nowcast.NiNoModel(nowcast.NiNoConfig(hid=16, layers=2, wte_pos_enc=False))
    emb = embedding_trajectory(model, graph, traj, stride=100)
    states = torch.from_numpy(traj.params[:5]).T.contiguous()
    scaled, _ = nowcast.scaling.scale_states(states, graph.params)
    data = graph.to_pyg(scaled)
    with torch.no_grad():
        out = model.embed(data)
    expected = torch.cat([out.nodes.mean(0), out.edges.mean(0)]).numpy()
    np.testing.assert_allclose(emb.params[0], expected, rtol=1e-5, atol=1e-7)


def test_embedding_errors(mlp_run):
    graph, traj = mlp_run
    model = nowcast.NiNoModel(nowcast.NiNoConfig(hid=16, layers=2, wte_pos_enc=False))
    with pytest.raises(ValueError, match="ctx"):
        embedding_trajectory(model, graph, traj, ctx=3)
    with pytest.raises(ValueError, match="parameters"):
        embedding_trajectory(model, neuralgraph.convert(mlp((4, 6, 3))), traj)
    with pytest.raises(TypeError, match="NiNoModel"):
        embedding_trajectory("linefit", graph, traj)
    with pytest.raises(ValueError, match="lpe=0"):
        embedding_trajectory(model, neuralgraph.convert(mlp(), lpe=0), traj)


@pytest.mark.parametrize("name", ["nino_no_posw.pt", "nino_mlp_h32.pt"])
def test_embedding_with_official_checkpoint(mlp_run, shared, name):
    path = shared / "checkpoints" / "official" / name
    if not path.exists():
        pytest.skip(f"official checkpoint {path} not found")
    graph, traj = mlp_run
    model = nowcast.load(path)
    emb = embedding_trajectory(model, graph, traj, stride=4)
    assert emb.params.shape[1] == (2 if model.config.gnn else 1) * model.config.hid
    assert np.isfinite(emb.params).all() and emb.params.std(0).max() > 0
