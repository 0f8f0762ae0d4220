import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import neuralgraph as ng
import neuralgraph.build as ngb
from neuralgraph.params import normalize_specs


@st.composite
def shapes_and_index(draw):
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    index = []
    for size in shape[: draw(st.integers(0, len(shape)))]:
        if draw(st.booleans()):
            index.append(draw(st.integers(-size, size - 1)))
        else:
            a = draw(st.integers(0, size))
            b = draw(st.integers(a, size))
            index.append(slice(a, b, draw(st.integers(1, 3))))
    return shape, tuple(index)


@given(shapes_and_index(), st.integers(0, 7))
def test_view_indexing_matches_torch(case, offset):
    shape, index = case
    flat = torch.arange(offset + math.prod(shape) + 3, dtype=torch.float64)
    spec = normalize_specs([("pad", (offset,)), ("w", shape)])[1]
    view = spec.view()
    tensor = flat[offset : offset + math.prod(shape)].view(shape)
    expect = tensor[index]
    got = view[index]
    assert got.shape == tuple(expect.shape)
    assert torch.equal(got.of(flat), expect)
    assert torch.equal(got.flat_indices().to(torch.float64), expect)
    if got.ndim >= 2:
        assert torch.equal(got.t().of(flat), expect.transpose(0, 1))


def test_view_of_states_is_per_state_view():
    spec = normalize_specs([("a", (2,)), ("w", (3, 4))])[1]
    states = torch.randn(14, 5)
    v = spec.view()[:, 1:3].t()
    got = v.of_states(states)
    for t in range(5):
        assert torch.equal(got[..., t], v.of(states[:, t].contiguous()))


def test_flatten_and_load_roundtrip():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    theta = ng.flatten_params(model)
    assert theta.shape == (3 * 4 + 4 + 4 * 2 + 2,)
    other = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    ng.load_params(other, theta)
    x = torch.randn(5, 3)
    assert torch.equal(model(x), other(x))


def test_tied_parameters_counted_once():
    emb = nn.Embedding(5, 3)
    head = nn.Linear(3, 5, bias=False)
    head.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "head": head})
    assert [s.name for s in ngb.param_specs(model)] == ["emb.weight"]
    assert ng.flatten_params(model).numel() == 15


def test_load_params_wrong_length_says_what_is_needed():
    model = nn.Linear(3, 2)
    before = model.weight.clone()
    with pytest.raises(ng.ParameterMismatchError, match="8 parameters"):
        ng.load_params(model, torch.zeros(7))
    with pytest.raises(ng.ParameterMismatchError, match="1-D vector of length 8"):
        ng.load_params(model, torch.zeros(8, 1))
    assert torch.equal(model.weight, before)


@pytest.mark.parametrize(
    "pairs, message",
    [
        ([("a", (2,)), ("a", (3,))], "appears twice"),
        ([("a", (2, -1))], "negative"),
        ([("a", "xy")], "not a sequence of integers"),
        ([("a",)], "expected a \\(name, shape\\) pair"),
        ([(3, (2,))], "not a non-empty string"),
    ],
)
def test_bad_shape_lists(pairs, message):
    with pytest.raises(ng.ParameterMismatchError, match=message):
        normalize_specs(pairs)


def test_views_of_tensors_with_a_storage_offset():
    spec = normalize_specs([("w", (2, 3))])[0]
    base = torch.arange(20, dtype=torch.float64)
    flat = base[7:13]  # a view starting at storage offset 7
    assert torch.equal(spec.view().of(flat), flat.view(2, 3))
    states = torch.arange(30.0).view(10, 3)[4:]  # [6, 3], offset 12
    assert torch.equal(spec.view().of_states(states), states.view(2, 3, 3))
