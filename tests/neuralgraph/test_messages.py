"""Errors that say what is wrong and what to do: non-finite values, edge-feature shapes, tied
weights, empty models and an ``arch=`` the model does not fit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import neuralgraph as ng
from neuralgraph.errors import NonFiniteError
from neuralgraph.params import check_finite, locate, param_specs


def convnet() -> tuple[nn.Module, ng.NeuralGraph]:
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))
    return model, ng.convert(model, example_inputs=torch.randn(1, 2, 6, 6))


# ------------------------------------------------------------------ locating a flat position
def test_locate_maps_a_flat_position_to_its_parameter() -> None:
    specs = param_specs(nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 5)))  # 6, 2, 10, 5 values
    assert [(s.name, i) for s, i in (locate(specs, k) for k in (0, 5, 6, 7, 8, 17, 22))] == [
        ("0.weight", 0), ("0.weight", 5), ("0.bias", 0), ("0.bias", 1), ("1.weight", 0), ("1.weight", 9), ("1.bias", 4)
    ]
    with pytest.raises(IndexError, match="outside a flat vector of 23"):
        locate(specs, 23)


def test_check_finite_names_parameter_index_and_state() -> None:
    specs = param_specs(nn.Linear(3, 2))
    check_finite(torch.zeros(8, 4), specs, "states")  # finite: nothing
    stack = torch.zeros(8, 4)
    stack[6, 3] = float("inf")
    stack[4, 1] = float("nan")  # earlier state wins over a lower row
    with pytest.raises(NonFiniteError, match=r"states: parameter 'weight' is nan at flat index 4, element \(1, 1\) "
                                             r"of shape \(2, 3\) in state 1 of 4.*2 non-finite values") as info:
        check_finite(stack, specs, "states")
    assert (info.value.name, info.value.index, info.value.state) == ("weight", 4, 1)
    assert isinstance(info.value, ValueError)
    with pytest.raises(NonFiniteError, match="row 7 of the flat vector is -inf"):
        check_finite(torch.tensor([0.0] * 7 + [float("-inf")]), None, "vector")


# ------------------------------------------------------------------ graph: non-finite values
def test_edge_features_name_the_non_finite_parameter() -> None:
    model, g = convnet()
    theta = ng.flatten_params(model)
    bad = theta.clone()
    bad[57 + 5] = float("nan")  # 0.weight (54), 0.bias (3), then 4.weight: element 5 = (1, 2)
    with pytest.raises(NonFiniteError, match=r"edge_features: parameter '4.weight' is nan at flat index 5, element \(1, 2\)") as info:
        g.edge_features(bad)
    assert info.value.state is None
    stack = torch.stack([theta, theta, bad], dim=1)
    with pytest.raises(ValueError, match=r"'4.weight' is nan at flat index 5.*in state 2 of 3"):
        g.edge_features(stack)
    assert torch.isnan(g.edge_features(stack, check=False)).any()


def test_to_params_maps_a_non_finite_feature_back_to_its_parameter() -> None:
    model, g = convnet()
    theta = ng.flatten_params(model)
    feats = g.edge_features(theta)
    # edge 4 is input channel 1 (node 1) -> output channel 1 (node 3 + 1) of the 3x3 convolution;
    # slot 7 is kernel position (2, 1): element (1, 1, 2, 1) of the (3, 2, 3, 3) weight, flat 1*18 + 1*9 + 2*3 + 1 = 34
    assert g.edge_index[:, 4].tolist() == [1, g.group("0").start + 1] and g.block("0.weight").edge_start == 0
    feats[4, 7] = float("inf")
    with pytest.raises(NonFiniteError, match=r"to_params: parameter '0.weight' is inf at flat index 34, "
                                             r"element \(1, 1, 2, 1\).*edge 4, feature slot 7, column 7") as info:
        g.to_params(feats)
    assert (info.value.name, info.value.index) == ("0.weight", 34)
    assert torch.isinf(g.to_params(feats, check=False)).any()
    # in a stack of two states, column f * 2 + t holds slot f of state t
    pair = g.edge_features(torch.stack([theta, theta], dim=1))
    pair[4, 7 * 2 + 1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"'0.weight' is nan at flat index 34.* in state 1 of 2.*column 15") as info:
        g.to_params(pair)
    assert info.value.state == 1
    assert torch.equal(g.to_params(pair, state=0), theta)
    with pytest.raises(NonFiniteError, match=r"column 15, state 1 of 2") as info:
        g.to_params(pair, state=1)
    assert info.value.state == 1


def test_non_finite_values_outside_the_parameters_are_not_read() -> None:
    model, g = convnet()
    theta = ng.flatten_params(model)
    feats = g.edge_features(theta)
    linear = g.block("4.weight")  # one slot per edge; slots 1.. of its rows are padding
    feats[linear.edge_start, 1] = float("nan")
    assert torch.equal(g.to_params(feats), theta)


# ------------------------------------------------------------------ graph: stacks and shapes
def test_to_params_returns_the_whole_stack_or_one_state() -> None:
    model, g = convnet()
    stack = torch.randn(g.num_params, 3)
    feats = g.edge_features(stack)
    assert torch.equal(g.to_params(feats), stack)  # the inverse of edge_features, not state 0
    for t in range(3):
        assert torch.equal(g.to_params(feats, state=t), stack[:, t])
    assert torch.equal(g.to_params(feats, state=-1), stack[:, 2])
    theta = stack[:, 0].contiguous()
    assert torch.equal(g.to_params(g.edge_features(theta)), theta)
    assert g.to_params(g.edge_features(theta)).shape == (g.num_params,)


def test_to_params_rejects_wrong_shapes_saying_what_it_expects() -> None:
    model, g = convnet()
    E, F, P = g.num_edges, g.max_feat_size, g.num_params
    with pytest.raises(ng.ParameterMismatchError, match=rf"expected edge features of shape \[{E}, {F}\*T\].*got \({P}, 3\).*edge_features first"):
        g.to_params(torch.zeros(P, 3))
    with pytest.raises(ng.ParameterMismatchError, match=rf"got \({E}, {F + 1}\)"):
        g.to_params(torch.zeros(E, F + 1))
    with pytest.raises(ValueError, match=r"state 3 out of range: edge features of shape .* hold 3 state"):
        g.to_params(torch.zeros(E, 3 * F), state=3)
    with pytest.raises(ValueError, match="state must be an integer or None"):
        g.to_params(torch.zeros(E, F), state=0.5)


# ------------------------------------------------------------------ convert: messages
class TiedLinears(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(6, 6)
        self.decoder = nn.Linear(6, 6)
        self.decoder.weight = self.encoder.weight  # one Parameter, two modules

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.relu(self.encoder(x)))

    def example_inputs(self) -> tuple:
        return (torch.randn(2, 6),)


class TiedLM(nn.Module):
    """A language model whose output head is tied to its embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(12, 8)
        self.fc = nn.Linear(8, 8)
        self.lm_head = nn.Linear(8, 12, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(torch.relu(self.fc(self.wte(ids))))


def test_tied_weights_are_named_as_tied() -> None:
    with pytest.raises(ng.NeuralGraphError) as info:
        ng.convert(TiedLinears(), arch="sequential")
    message = str(info.value)
    assert "'decoder.weight' is a tied (shared) weight" in message
    assert "'encoder.weight', 'decoder.weight' are one nn.Parameter" in message
    assert "arch=None" in message and "its own nn.Parameter" in message
    # without arch=, the traced converter places the shared weight
    assert ng.convert(TiedLinears()).num_params == 6 * 6 + 6 + 6
    # a tied language-model head converts as well (the head reads the embedding's parameter)
    assert ng.convert(TiedLM(), example_inputs=torch.randint(0, 12, (2, 5))).num_params == 12 * 8 + 8 * 8 + 8


@pytest.mark.parametrize("model", [nn.Sequential(), nn.ModuleList()], ids=["Sequential", "ModuleList"])
def test_empty_model_says_it_has_no_layers(model: nn.Module) -> None:
    with pytest.raises(ng.UnsupportedModelError, match=rf"{type(model).__name__} is empty: it has no layers and so no "
                                                       "parameters.*nothing to convert") as info:
        ng.convert(model)
    assert "example_inputs" not in str(info.value) and "register_unitwise" not in str(info.value)


def test_parameter_free_model_says_so() -> None:
    with pytest.raises(ng.UnsupportedModelError, match=r"Sequential has no parameters \(its layers ReLU, Tanh hold no weights\)"):
        ng.convert(nn.Sequential(nn.ReLU(), nn.Tanh()))
    with pytest.raises(ng.UnsupportedModelError, match="the shape list is empty"):
        ng.convert([], arch="sequential")


class SmallConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


@pytest.mark.parametrize(
    ("model", "arch", "expected"),
    [
        (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), "gpt2", "config.model_type 'gpt2'"),
        (SmallConv(), "llama", "config.model_type 'llama' / 'mistral' / 'qwen2'"),
        (SmallConv(), "nanogpt", "an instance of GPT"),
    ],
    ids=["mlp-as-gpt2", "convnet-as-llama", "convnet-as-nanogpt"],
)
def test_wrong_arch_says_the_model_does_not_match(model: nn.Module, arch: str, expected: str) -> None:
    with pytest.raises(ng.UnsupportedModelError) as info:
        ng.convert(model, arch=arch)
    message = str(info.value)
    assert message.startswith(f"arch='{arch}': {type(model).__name__} does not have the structure")
    assert expected in message
    assert "no Hugging Face config.model_type" in message
    names = [n for n, _ in model.named_parameters()]
    assert ", ".join(names) in message  # what the model has
    assert "what the converter found missing" in message  # what it lacks
    assert "Pass arch=None" in message
    ng.convert(model, example_inputs=torch.randn(1, 3, 6, 6) if isinstance(model, SmallConv) else None)


def test_shape_lists_keep_the_converter_message() -> None:
    specs = [(n, tuple(p.shape)) for n, p in nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)).named_parameters()]
    with pytest.raises(ng.UnsupportedModelError, match="^the number of attention heads is not known"):
        ng.convert(specs, arch="gpt2")
