import dataclasses

import pytest
import torch
from torch import nn

import neuralgraph as ng
from neuralgraph import edge_types as et
from neuralgraph.arch.sequential import register_unitwise, UNITWISE
from neuralgraph.examples import fm16, fm32, mlp


def test_fm16_graph():
    g = ng.convert(fm16())
    assert (g.num_nodes, g.num_edges, g.num_params, g.max_feat_size) == (95, 2057, 14378, 9)
    assert [grp.name for grp in g.groups if grp.role != "bias"] == ["input", "fc.0", "fc.2", "fc.4", "fc.8"]
    assert g.edge_type_counts() == {et.LINEAR: 320, et.BIAS: 90, et.CONV: 1552, et.SELF_LOOP: 95}
    assert [s.groups for s in g.symmetries] == [("fc.0",), ("fc.2",), ("fc.4",)]
    # a conv edge carries its 3x3 kernel row-major in slots 0..8
    model = fm16()
    feats = g.edge_features(ng.flatten_params(model))
    blk = g.block("fc.2.weight")
    w = model.fc[2].weight.detach()  # (32, 16, 3, 3)
    s, d = 5, 7
    assert torch.equal(feats[blk.edge_start + s * 32 + d], w[d, s].reshape(-1))


def test_fm32_verifies():
    report = ng.verify(fm32(), trials=2)
    assert report, str(report)


@pytest.mark.parametrize("model", [fm16(), mlp((4, 5, 3)), mlp((3, 7, 7, 2))], ids=["fm16", "mlp", "mlp3"])
def test_shape_list_gives_the_same_graph(model):
    g = ng.convert(model)
    h = ng.convert([(n, tuple(p.shape)) for n, p in model.named_parameters()], arch="sequential")
    assert torch.equal(g.edge_index, h.edge_index) and torch.equal(g.edge_type, h.edge_type)
    theta = ng.flatten_params(model)
    assert torch.equal(g.edge_features(theta), h.edge_features(theta))
    assert torch.allclose(g.pos, h.pos)


def test_flatten_with_spatial_positions_is_rejected():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    with pytest.raises(ng.UnsupportedModelError, match=r"linear layer '3' .* 676 spatial positions.*spatial size > 1"):
        ng.convert(model)
    specs = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    with pytest.raises(ng.UnsupportedModelError, match="spatial size > 1"):
        ng.convert(specs, arch="convnet")


def test_flatten_after_pooling_is_accepted():
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.Linear(4, 3))
    assert ng.verify(model)


def test_unsupported_layer_is_named():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Sequential(nn.GRU(4, 4)))
    with pytest.raises(ng.UnsupportedModelError, match=r"(?s)'2.0' \(GRU\) with parameter '2.0.weight_ih_l0'.*Supported:.*sequential"):
        ng.convert(model, arch="sequential")
    # left to choose, convert reads the GRU off the forward instead
    graph = ng.convert(model, example_inputs=torch.randn(5, 3), lpe=0)
    assert graph.meta["converter"] == "traced"


def test_unknown_parameter_free_module_and_registration():
    class Square(nn.Module):
        def forward(self, x):
            return x * x

    model = nn.Sequential(nn.Linear(3, 4), Square(), nn.Linear(4, 2))
    with pytest.raises(ng.UnsupportedModelError, match=r"'1' \(Square\) is not known to act unit-wise.*register_unitwise"):
        ng.convert(model, arch="sequential")
    assert ng.verify(model)  # left to choose, convert reads x * x off the forward
    register_unitwise(Square)
    try:
        assert ng.verify(model)
    finally:
        UNITWISE.discard(Square)


def test_other_unsupported_structures():
    with pytest.raises(ng.UnsupportedModelError, match="groups=2"):
        ng.convert(arch="sequential", model=nn.Sequential(nn.Conv2d(2, 4, 3, groups=2)))
    with pytest.raises(ng.UnsupportedModelError, match="without Flatten"):
        ng.convert(arch="sequential", model=nn.Sequential(nn.Conv2d(2, 4, 3), nn.Linear(4, 3)))
    with pytest.raises(ng.UnsupportedModelError, match="no Linear or Conv layer"):
        ng.convert(arch="sequential", model=nn.Sequential(nn.LayerNorm(3)))
    with pytest.raises(ng.UnsupportedModelError, match="pool across units"):
        ng.convert(arch="sequential", model=nn.Sequential(nn.Linear(3, 4), nn.MaxPool1d(2), nn.Linear(2, 1)))
    with pytest.raises(ng.ParameterMismatchError, match="'1' expects 5 inputs but the previous layer has 4"):
        ng.convert(arch="sequential", model=nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2)))


def test_shape_list_errors():
    with pytest.raises(ng.ParameterMismatchError, match="'0.bias' has shape \\(4,\\) but its layer has 5 units"):
        ng.convert([("0.weight", (5, 4)), ("0.bias", (4,))], arch="mlp")
    with pytest.raises(ng.ParameterMismatchError, match="'1' expects 6 inputs"):
        ng.convert([("0.weight", (5, 4)), ("1.weight", (2, 6))], arch="mlp")
    with pytest.raises(ng.UnsupportedModelError, match="'0.gamma' is not a weight or bias"):
        ng.convert([("0.weight", (5, 4)), ("0.gamma", (5,))], arch="mlp")


def test_batchnorm_statistics_move_with_their_channels():
    model = nn.Sequential(nn.Conv2d(2, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(5, 3))
    g = ng.convert(model)
    assert [b.name for b in g.buffers] == ["1.running_mean", "1.running_var"]
    assert ng.verify(model, g)
    # a graph that forgot the statistics is caught by the verifier
    assert not ng.verify(model, dataclasses.replace(g, buffers=()))


def test_registration_order_mistake_is_caught_by_verifier():
    class Swapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.second = nn.Linear(4, 4)  # registered first, runs last
            self.first = nn.Linear(4, 4)

        def forward(self, x):
            return self.second(torch.tanh(self.first(x)))

    model = Swapped()
    # forced to read registration order, the graph is wrong, and the verifier says which symmetry failed
    report = ng.verify(model, arch="sequential")
    assert not report and any(f.kind == "good" for f in report.failures)
    assert str(report).startswith("verify sequential: FAILED — the declared symmetry")
    # left to choose, convert sees that the forward is not that chain and returns the traced graph
    graph = ng.convert(model, lpe=0)
    assert graph.meta["converter"] == "traced"
    assert ng.verify(model, graph)
