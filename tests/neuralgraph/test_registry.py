"""The registry is the test matrix: every registered converter gets these checks."""

import random

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import neuralgraph as ng
import neuralgraph.build as ngb
from neuralgraph import edge_types as et
from neuralgraph.registry import unregister

CONVERTERS = ng.converters()


def test_every_converter_has_an_example():
    for c in CONVERTERS:
        assert c.example is not None, f"converter '{c.name}' registers no example model for the tests"


@pytest.mark.parametrize("converter", CONVERTERS, ids=lambda c: c.name)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 3))
def test_roundtrip_is_exact(converter, seed, steps):
    model = converter.example(random.Random(seed))
    graph = ng.convert(model, arch=converter.name, lpe=0)
    theta = ng.flatten_params(model)
    assert graph.param_names == [n for n, _ in model.named_parameters()]
    states = torch.stack([theta + t for t in range(steps)], dim=1)
    feats = graph.edge_features(states)
    for t in range(steps):
        assert torch.equal(graph.to_params(feats, state=t), states[:, t])
    copy = converter.example(random.Random(seed))
    ng.load_params(copy, graph.to_params(feats, state=0))
    assert torch.equal(ng.flatten_params(copy), theta)


@pytest.mark.parametrize("converter", CONVERTERS, ids=lambda c: c.name)
@given(seed=st.integers(0, 2**32 - 1))
def test_verifier_passes(converter, seed):
    model = converter.example(random.Random(seed))
    report = ng.verify(model, arch=converter.name, trials=3, seed=seed % 1000)
    assert report, str(report)
    assert report.worst_good_deviation <= report.rtol
    if report.good_trials:
        assert all(c.isomorphic for c in report.checks if c.kind == "good")
        assert all(c.isomorphic is False for c in report.checks if c.kind == "bad")


def test_sequential_example_has_no_saturating_one_unit_head():
    # hypothesis once drew seed 2984172: a convnet whose head was Linear(6, 1) -> Tanh -> Linear(1, 3);
    # the saturated Tanh made the model nearly constant and bad permutations undetectable (~1e-13)
    model = ngb.get_converter("sequential").example(random.Random(2984172))
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert all(m.out_features >= 2 for m in heads[:-1])
    assert ng.verify(model, arch="sequential", trials=3, seed=172)


def test_convert_picks_by_class_and_by_arch():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert ng.convert(model).arch == "sequential"
    assert ng.convert(model, arch="mlp").arch == "sequential"
    assert "sequential" in [c.name for c in ng.converters()]


def test_unknown_arch_lists_supported():
    with pytest.raises(ng.UnsupportedModelError, match="no converter is registered as 'resnet9000'.*sequential"):
        ng.convert(nn.Linear(2, 2), arch="resnet9000")


def test_shape_list_needs_arch():
    with pytest.raises(ng.UnsupportedModelError, match="needs arch="):
        ng.convert([("0.weight", (5, 4))])
    with pytest.raises(ng.UnsupportedModelError, match="cannot convert an object of type int"):
        ng.convert(3)


class Scaled(nn.Module):
    """y = W2 (s * relu(W1 x)): a per-unit scale, as a user's own layer."""

    def __init__(self, n_in=3, hidden=4, n_out=2):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(hidden, n_in))
        self.scale = nn.Parameter(torch.randn(hidden))
        self.w2 = nn.Parameter(torch.randn(n_out, hidden))

    def forward(self, x):
        return (torch.relu(x @ self.w1.T) * self.scale) @ self.w2.T


def _scaled_example(rng):
    return Scaled(rng.randint(1, 4), rng.randint(2, 5), rng.randint(1, 3))


def _scaled_inputs(model, graph, generator, batch):
    return (torch.randn(batch, model.w1.shape[1], generator=generator, dtype=torch.float64),)


def _scaled_graph(source, *, naive=False, wrong=None):
    specs = {p.name: p for p in source.params}
    hidden, n_in = specs["w1"].shape
    b = ngb.GraphBuilder(source.params)
    x = b.group("x", n_in, role="input")
    h = b.group("h", hidden, role="hidden")
    s = b.group("s", hidden, role="hidden")
    y = b.group("y", specs["w2"].shape[0], role="output")
    b.dense(b.param("w1"), x, h, et.LINEAR)
    b.diagonal(h, s, et.NORM, view=b.param("scale"))
    w2 = b.param("w2")
    b.dense(w2, s, y, et.LINEAR)
    if wrong == "output":
        b.permutable(h, s)
        b.permutable(y)
    elif wrong == "uncoupled":
        b.permutable(h)
        b.permutable(s)
    else:
        b.permutable(h, s)
    return b


def test_user_converter_is_registered_and_verified():
    ngb.register("scaled", modules=(Scaled,), example=_scaled_example, example_inputs=_scaled_inputs)(_scaled_graph)
    try:
        assert "scaled" in [c.name for c in ng.converters()]
        model = Scaled()
        g = ng.convert(model)
        assert g.arch == "scaled"
        report = ng.verify(model)
        assert report, str(report)
        assert report.bad_trials >= 3  # w1 dst side, scale, w2 src side each left out once
    finally:
        unregister("scaled")


@pytest.mark.parametrize("wrong, group", [("output", "y"), ("uncoupled", "h")])
def test_verifier_catches_a_wrong_converter(wrong, group):
    ngb.register("scaled_wrong", modules=(Scaled,), example=_scaled_example, example_inputs=_scaled_inputs)(
        lambda source, naive=False: _scaled_graph(source, wrong=wrong)
    )
    try:
        report = ng.verify(Scaled(3, 4, 3))
        assert not report
        assert any(group in f.groups and f.kind == "good" for f in report.failures)
        assert "FAIL [good]" in str(report)
    finally:
        unregister("scaled_wrong")


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        ngb.register("mlp")(_scaled_graph)
