"""Layer-wise scaling of parameter histories (``nowcast.scaling``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import neuralgraph as ng
from neuralgraph.examples import mlp
from nowcast.scaling import LayerScales, param_sizes, scale_states, unscale


def _loop_reference(states: torch.Tensor, sizes: list[int], eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition, one tensor at a time, in float64."""
    x = states.double()
    out, table, offset = torch.empty_like(x), [], 0
    for n in sizes:
        w = x[offset : offset + n]
        mean, std = w.mean(), w.std()
        out[offset : offset + n] = (w - mean) / (std + eps)
        table.append((mean, std))
        offset += n
    return out, torch.tensor(table, dtype=torch.float64)


@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=8),
    ctx=st.integers(2, 6),
    seed=st.integers(0, 2**16),
    offset=st.floats(-5, 5),
)
def test_matches_per_tensor_definition(sizes: list[int], ctx: int, seed: int, offset: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    states = torch.randn(sum(sizes), ctx, generator=gen) * 0.05 + offset
    scaled, scales = scale_states(states, sizes)
    expected, table = _loop_reference(states, sizes)
    assert scaled.dtype == states.dtype and scaled.shape == states.shape
    torch.testing.assert_close(scales.as_table().double(), table, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(scaled.double(), expected, rtol=1e-4, atol=1e-4)


def test_round_trip_without_eps() -> None:
    graph = ng.convert(mlp())
    states = torch.randn(graph.num_params, 5, dtype=torch.float64)
    scaled, scales = scale_states(states, graph.params, eps=0.0)
    assert torch.equal(scales.sizes, torch.tensor([p.numel for p in graph.params]))
    torch.testing.assert_close(unscale(scaled, scales), states)
    torch.testing.assert_close(unscale(scaled[:, -1], scales), states[:, -1])


def test_single_state_and_single_value() -> None:
    scaled, scales = scale_states(torch.tensor([3.0, 1.0, 2.0]), [1, 2])
    assert scales.std[0] == 0 and scaled[0] == 0  # one value: no spread, scaled to 0
    torch.testing.assert_close(scales.mean, torch.tensor([3.0, 1.5]))
    assert scaled.shape == (3,)


def test_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="add up"):
        scale_states(torch.zeros(5, 2), [2, 2])
    with pytest.raises(ValueError, match="positive"):
        scale_states(torch.zeros(2, 2), [2, 0])
    scales = LayerScales(torch.zeros(1), torch.ones(1), torch.tensor([3]))
    with pytest.raises(ValueError, match=r"\[3\]"):
        unscale(torch.zeros(4), scales)


def test_param_sizes_accepts_specs_tensors_and_ints() -> None:
    graph = ng.convert(mlp())
    expected = [p.numel for p in graph.params]
    assert param_sizes(graph.params).tolist() == expected
    assert param_sizes([torch.zeros(2, 3), torch.Size([4]), 5]).tolist() == [6, 4, 5]
