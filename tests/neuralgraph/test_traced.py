"""The traced converter: hand-written models, the fuzzing grammar, and agreement with every
hand-written converter (isomorphic graphs, parameters on corresponding edges, no smaller symmetry group)."""

import os
import random
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import neuralgraph as ng
import neuralgraph.build as ngb
from neuralgraph.compare import compare_graphs, symmetry_order
from neuralgraph.trace.grammar import sample_traced_model

sys.path.insert(0, str(Path(__file__).parent))
from traced_models import ZOO  # noqa: E402

REFUSED = {"unused": "never uses"}
# the grammar fuzz: 25 models in the default run, 500 under HYPOTHESIS_PROFILE=thorough
FUZZ_EXAMPLES = 500 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 25


@pytest.mark.parametrize("name", sorted(ZOO))
def test_hand_written_models_convert_and_verify_or_are_refused(name):
    cls, inputs = ZOO[name]
    torch.manual_seed(0)
    model = cls()
    if name in REFUSED:
        with pytest.raises(ng.NeuralGraphError, match=REFUSED[name]):
            ng.convert(model, example_inputs=inputs, lpe=0)
        return
    graph = ng.convert(model, example_inputs=inputs, lpe=0)
    assert graph.symmetries, f"{name}: no symmetry declared"  # each of these models has hidden permutations
    report = ng.verify(model, graph, trials=3)
    assert report, str(report)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_grammar_models_are_never_silently_wrong(seed):
    model = sample_traced_model(random.Random(seed))
    try:
        graph = ng.convert(model, arch="traced", lpe=0)
    except ng.NeuralGraphError:
        return  # a clear refusal is allowed
    report = ng.verify(model, graph, trials=3, seed=seed % 1000)
    assert report, str(report)


HAND_WRITTEN = [c.name for c in ng.converters() if c.name not in ("traced", "modded_nanogpt")]
# modded_nanogpt draws its scalar lambdas as gate nodes and places a lambda the forward never reads:
# the traced converter refuses unused parameters, so the two cannot agree there


@pytest.mark.parametrize("name", HAND_WRITTEN)
@pytest.mark.parametrize("seed", range(3))
def test_traced_graph_equals_the_hand_written_one(name, seed):
    converter = ngb.get_converter(name)
    model = converter.example(random.Random(seed))
    hand = ng.convert(model, arch=name, lpe=0)
    inputs = converter.example_inputs(model, hand, torch.Generator().manual_seed(0), 2)
    try:
        traced = ng.convert(model, arch="traced", example_inputs=inputs, lpe=0)
    except ng.NeuralGraphError as err:
        assert "never uses" in str(err)  # e.g. BertForMaskedLM's unread cls.predictions.bias
        return
    result = compare_graphs(hand, traced)
    assert result, result.reason
    assert symmetry_order(traced) >= symmetry_order(hand) - 1e-9


def test_plain_module_without_inputs_gets_a_clear_error():
    class NoHint(torch.nn.Module):
        def forward(self, x):
            return x * self.scale

        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(3))

    with pytest.raises(ng.NeuralGraphError, match="example_inputs"):
        ng.convert(NoHint())
