"""compare_graphs: one graph in two numberings is equal; two wirings of the same parameters are not."""

import torch
from torch import nn

import neuralgraph as ng
from neuralgraph.compare import compare_graphs


class TwoSquare(nn.Module):
    def __init__(self, a_first: bool) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.a_first = a_first

    def forward(self, x):
        first, second = (self.a, self.b) if self.a_first else (self.b, self.a)
        return second(torch.relu(first(x)))


def test_same_model_by_two_converters_is_one_graph():
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    x = torch.randn(2, 5)
    result = compare_graphs(ng.convert(model, arch="sequential", lpe=0),
                            ng.convert(model, arch="traced", example_inputs=x, lpe=0))
    assert result, result.reason


def test_same_parameters_wired_in_another_order_differ():
    torch.manual_seed(0)
    x = torch.randn(2, 4)
    ab = ng.convert(TwoSquare(True), example_inputs=x, lpe=0)
    ba = ng.convert(TwoSquare(False), example_inputs=x, lpe=0)
    assert compare_graphs(ab, ab)
    result = compare_graphs(ab, ba)
    assert not result
    assert "correspond" in result.reason
