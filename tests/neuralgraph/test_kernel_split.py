"""Kernels split over parallel edges, and edge features stored at each block's own width."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_graph import build, random_graphs
from torch import nn

import neuralgraph as ng
from neuralgraph.block_features import BlockFeatures


def _states(graph, steps: int) -> torch.Tensor:
    x = torch.randn(graph.num_params, steps, generator=torch.Generator().manual_seed(steps))
    return x[:, 0] if steps == 1 else x


@given(random_graphs(), st.integers(1, 4), st.integers(1, 3))
def test_split_graph_is_an_exact_narrower_copy(spec, max_slots, steps) -> None:
    graph = build(*spec)
    split = graph.split_kernels(max_slots)
    assert split.max_feat_size <= max(max_slots, 1)
    assert split.params == graph.params and split.symmetries == graph.symmetries and split.groups == graph.groups
    assert split.num_edges == sum(b.num_edges * math.ceil(b.feat_size / max_slots) for b in graph.blocks)
    assert split.connections() == graph.connections()  # same positional encodings
    x = _states(graph, steps)
    assert torch.equal(split.to_params(split.edge_features(x)), x)
    # every slot of the original lands on one edge of the split graph, with the same value
    for b in split.blocks:
        if b.view is not None:
            orig = next(o for o in graph.blocks if o.name == b.name.split("[")[0])
            mine = split.edge_features(x)[b.edge_start : b.edge_stop, : b.feat_size * (1 if x.ndim == 1 else steps)]
            theirs = graph.edge_features(x)[orig.edge_start : orig.edge_stop]
            lo = b.slot_offset * (1 if x.ndim == 1 else steps)
            assert torch.equal(mine, theirs[:, lo : lo + mine.shape[1]])


@given(random_graphs(), st.integers(1, 3))
def test_packed_features_follow_the_parameters(spec, steps) -> None:
    graph = build(*spec)
    x = _states(graph, steps)
    packed = graph.edge_features(x, packed=True)
    aux_edges = sum(b.num_edges for b in graph.blocks if b.view is None)
    assert packed.values.numel() == (graph.num_params + aux_edges) * steps
    assert torch.equal(packed.dense(), graph.edge_features(x))
    assert torch.equal(graph.to_params(packed), x)
    if steps > 1:
        assert torch.equal(graph.to_params(packed, state=-1), x[:, -1])
    for i, b in enumerate(graph.blocks):
        assert packed.block(i).shape == (b.num_edges, b.feat_size * steps)


def test_packed_features_are_checked() -> None:
    graph = ng.convert(nn.Sequential(nn.Conv2d(2, 3, 5), nn.ReLU(), nn.Conv2d(3, 2, 1)))
    other = ng.convert(nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 1)))
    packed = graph.edge_features(torch.randn(graph.num_params, 2), packed=True)
    with pytest.raises(ng.ParameterMismatchError, match="another graph"):
        other.to_params(packed)
    with pytest.raises(ng.ParameterMismatchError, match="state 2 out of range: block features of 2 state"):
        graph.to_params(packed, state=2)
    with pytest.raises(ng.ParameterMismatchError, match="flat buffer"):
        BlockFeatures(packed.values[1:], packed.counts, packed.widths, packed.steps)
    with pytest.raises(ValueError, match="narrower than the widest block"):
        packed.dense(4)
    bad = packed.values.clone()
    bad[5] = float("nan")
    with pytest.raises(ng.NonFiniteError, match="to_params"):
        graph.to_params(BlockFeatures(bad, packed.counts, packed.widths, packed.steps))
    with pytest.raises(ValueError, match="positive integer"):
        graph.split_kernels(0)


def test_split_graph_verifies_against_the_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 7, stride=2), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    graph = ng.convert(model)
    split = graph.split_kernels(9)
    assert graph.max_feat_size == 49 and split.max_feat_size == 9
    assert split.split_kernels(9) is split
    assert torch.equal(split.pos, graph.pos)
    report = ng.verify(model, split)
    assert report and report.bad_detected == report.bad_trials > 0, report
