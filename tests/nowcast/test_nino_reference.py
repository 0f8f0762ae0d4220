"""Equivalence with the NiNo authors' implementation (reference data vendored in ``tests/data/reference``;
the published checkpoints from ``../shared/checkpoints/official``, skipped where they are absent).

Inputs and outputs in ``nino_inputs_convnet_fm16.pt`` / ``nino_out_*_convnet_fm16.pt`` were
produced by their code on the FM/16 convnet; our graph of the same network has the same
edge_index and edge_type, so parameters map back through ``fm16_graph.to_params``. Errors are
measured normwise: ``max|ours - ref| / max|ref|`` over the whole tensor (element-wise relative
errors are meaningless for values that are zero up to rounding).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data

import neuralgraph as ng
from neuralgraph.examples import mlp
from nowcast_testutils import official_checkpoint, rel_err
from nowcast import load, NiNoConfig, NiNoModel
from nowcast.scaling import scale_states, unscale

TOL = 1e-5
CHECKPOINTS = ("nino_no_posw", "nino_mlp")


def _data(inputs: dict, with_pos: bool) -> Data:
    return Data(
        edge_index=inputs["edge_index"],
        edge_type=inputs["edge_type"],
        pos=inputs["pos"] if with_pos else None,
        pos_w=inputs["pos_w"],
        edge_attr=inputs["edge_attr_in"],
        num_nodes=inputs["pos_w"].numel(),
    )


def test_graph_matches_reference_inputs(inputs: dict, fm16_graph: ng.NeuralGraph) -> None:
    assert torch.equal(fm16_graph.edge_index, inputs["edge_index"])
    assert torch.equal(fm16_graph.edge_type, inputs["edge_type"])
    assert torch.equal(fm16_graph.pos_w, inputs["pos_w"])
    assert torch.equal(fm16_graph.edge_features(inputs["states_scaled"]), inputs["edge_attr_in"])


def test_scaling_reproduces_reference(inputs: dict, fm16_graph: ng.NeuralGraph) -> None:
    scaled, scales = scale_states(inputs["states_raw"], fm16_graph.params)
    assert rel_err(scaled, inputs["states_scaled"]) < 1e-6
    assert rel_err(scales.as_table(), inputs["scales_mean_std"]) < 1e-6
    torch.testing.assert_close(scales.as_table(), inputs["scales_mean_std"], rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_outputs_match_reference(shared_root: Path, reference: Path, inputs: dict, fm16_graph: ng.NeuralGraph, name: str) -> None:
    model = load(official_checkpoint(shared_root, name))
    ref = torch.load(reference / f"nino_out_{name}_convnet_fm16.pt", weights_only=True)
    data = _data(inputs, with_pos=bool(ref["uses_pos"]))
    _, scales = scale_states(inputs["states_raw"], fm16_graph.params)
    ks = list(ref["ks"])
    assert ks, "the reference file lists no horizons"
    with torch.no_grad():
        together = model(data, ks)
    for i, k in enumerate(ks):
        with torch.no_grad():
            out = model(data, k)
        assert rel_err(together[:, :, i], out) < 1e-6
        expected = ref[f"edge_attr_out_k{k}"][:, :, 0]
        assert out.shape == expected.shape
        assert rel_err(out, expected) < TOL, f"{name} k={k}: edge outputs differ"
        x_scaled = fm16_graph.to_params(out)
        assert rel_err(x_scaled, ref[f"x_pred_scaled_k{k}"]) < TOL, f"{name} k={k}: scaled parameters differ"
        x = unscale(x_scaled, scales)
        assert rel_err(x, ref[f"x_pred_k{k}"]) < TOL, f"{name} k={k}: parameters differ"


def test_state_dict_layout_matches_reference(shared_root: Path, reference: Path) -> None:
    info = torch.load(reference / "nino_checkpoints.pt", weights_only=True)
    for name in ("nino_no_posw", "nino_mlp", "nino_mlp_h32"):
        if name not in info:
            continue
        model = load(official_checkpoint(shared_root, name))
        ours = {key: tuple(t.shape) for key, t in model.state_dict().items()}
        theirs = {key: tuple(shape) for key, shape, _ in info[name]["state_dict_keys_shapes"]}
        assert ours == theirs, name
        attrs = info[name]["resolved_model_attrs"]
        cfg = model.config
        assert (cfg.ctx, cfg.hid, cfg.max_feat_size, cfg.seq_len, cfg.edge_types) == (
            attrs["ctx"], attrs["hid"], attrs["max_feat_size"], attrs["seq_len"], attrs["edge_types"],
        )
        assert cfg.gnn == (not attrs["is_mlp"])
        if cfg.gnn:
            assert cfg.layers == attrs["n_msg_layers"] and cfg.lpe == attrs["lpe"]
            assert cfg.num_edge_updates == attrs["num_edge_update_layers"]
            assert cfg.wte_pos_enc == attrs["wte_pos_enc"]


def test_small_wnn_checkpoint_runs(shared_root: Path, reference: Path, inputs: dict) -> None:
    model = load(official_checkpoint(shared_root, "nino_mlp_h32"))
    assert model.config == NiNoConfig(gnn=False, hid=32)
    with torch.no_grad():
        out = model(_data(inputs, with_pos=False), [1, 40])
    assert out.shape == (inputs["edge_attr_in"].shape[0], 9, 2) and torch.isfinite(out).all()


def test_one_published_model_serves_an_mlp_then_the_convnet(shared_root: Path, reference: Path, inputs: dict) -> None:
    """The authors' model narrows edge_proj in place on small graphs; ours must not."""
    path = official_checkpoint(shared_root, "nino_no_posw")
    model = load(path)
    small = ng.convert(mlp())
    states = torch.randn(small.num_params, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(small.to_pyg(scale_states(states, small.params)[0]), 3)
        out = model(_data(inputs, with_pos=True), 5)
    ref = torch.load(reference / "nino_out_nino_no_posw_convnet_fm16.pt", weights_only=True)
    assert rel_err(out, ref["edge_attr_out_k5"][:, :, 0]) < TOL
    assert isinstance(model, NiNoModel)
