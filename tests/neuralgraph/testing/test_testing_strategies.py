"""neuralgraph.testing.strategies: every family's drawn models keep their function under good
permutations and lose it under bad ones; permutations shrink to a single swap; a converter a user
registers is a family; hypothesis stays optional."""

import subprocess
import sys

import pytest
import torch
from hypothesis import find, given
from hypothesis import strategies as st
from torch import nn

import neuralgraph as ng
import neuralgraph.build as ngb
from neuralgraph import edge_types as et
from neuralgraph.examples import mlp
from neuralgraph.registry import unregister
from neuralgraph.testing import Permutation, assert_equivariant, assert_function_invariant, assert_invariant, families
from neuralgraph.testing.strategies import examples, models, permutations

FAMILIES = families()


def test_every_builtin_family_is_there():
    assert {"mlp", "convnet", "gpt2", "llama", "bert", "vit", "nanogpt", "modded_nanogpt", "traced"} <= set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
@given(data=st.data())
def test_good_permutations_keep_the_function_and_bad_ones_do_not(family, data):
    model, inputs = data.draw(models(family))
    graph = ng.convert(model, example_inputs=inputs)
    good = data.draw(permutations(graph, "good"))
    assert good.kind == "good" and not good.is_identity
    assert_function_invariant(model, graph, perm=good, inputs=inputs)
    bad = data.draw(permutations(graph, "bad"))
    assert bad.kind == "bad"
    with pytest.raises(AssertionError, match="outputs changed"):
        assert_function_invariant(model, graph, perm=bad, inputs=inputs)


def _position_weighted(t):
    return (torch.arange(1, t.shape[0] + 1, dtype=t.dtype) * t).sum()


@pytest.mark.parametrize("family", FAMILIES)
@given(data=st.data())
def test_maps_of_the_parameters_on_every_family(family, data):
    """What a user's test of a weight-space function does, on the model's own float32 parameters and a
    graph converted without arguments: an elementwise map and a norm pass, a shift and a
    position-weighted sum fail, for the drawn permutation and for the default draws."""
    model, _ = data.draw(models(family))
    graph = ng.convert(model)
    theta = ng.flatten_params(model).detach()
    perm = data.draw(permutations(graph))
    for p in (perm, None):
        assert_equivariant(lambda t: torch.tanh(t) * 3 + t, graph, theta, perm=p)
        assert_invariant(torch.linalg.vector_norm, graph, theta, perm=p)
        with pytest.raises(AssertionError, match="not equivariant"):
            assert_equivariant(lambda t: torch.roll(t, 1), graph, theta, perm=p)
        with pytest.raises(AssertionError, match="not invariant"):
            assert_invariant(_position_weighted, graph, theta, perm=p)


def test_float32_parameters_are_tested_in_float64_where_fn_takes_them():
    graph = ng.convert(mlp((20, 30, 30, 5)), lpe=0)
    theta = ng.flatten_params(mlp((20, 30, 30, 5))).detach()
    perm = {"0": torch.tensor([1, 0] + list(range(2, 30)))}  # two units of 30 swap: ~1e-7 of the sum
    seen = []
    assert_invariant(lambda t: seen.append(t.dtype) or t.sum(), graph, theta, perm=perm)
    assert seen == [torch.float64, torch.float64]
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(_position_weighted, graph, theta, perm=perm)
    flat = nn.Linear(graph.num_params, 1)  # float32 weights: refuses float64, so it runs as given
    with pytest.raises(AssertionError, match=r"tolerance: .* 1\.0e-05"):
        assert_invariant(flat, graph, theta, perm=perm)
    seen.clear()
    assert_invariant(lambda t: seen.append(t.dtype) or t.sum(), graph, theta, perm=perm, precise=False)
    assert seen == [torch.float32, torch.float32]


def test_permutations_shrink_to_one_swap():
    graph = ng.convert(mlp((3, 6, 5, 2)), lpe=0)
    smallest = find(permutations(graph), lambda p: True)
    (group, moved), = smallest.moved().items()  # units 0 and 1 of one hidden layer swap
    assert moved == 2 and smallest.perms[group][:2].tolist() == [1, 0]
    bad = find(permutations(graph, "bad"), lambda p: True)
    assert bad.skip and list(bad.moved().values()) == [2]
    both = find(permutations(graph), lambda p: len(p.moved()) == 2)
    assert both.moved() == {"0": 2, "2": 2}


def test_heads_move_whole_and_cross_head_moves_are_bad():
    graph = ng.convert(ngb.get_converter("nanogpt").example(__import__("random").Random(3)), lpe=0)
    heads = find(permutations(graph, "bad"), lambda p: "into head" in p.description)
    assert len(heads.moved()) == 1 and list(heads.moved().values()) == [2]


class Scaled(nn.Module):
    """y = W2 (s * relu(W1 x)): a user's own layer with its own converter."""

    def __init__(self, n_in=3, hidden=4, n_out=2):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(hidden, n_in))
        self.scale = nn.Parameter(torch.randn(hidden))
        self.w2 = nn.Parameter(torch.randn(n_out, hidden))

    def forward(self, x):
        return (torch.relu(x @ self.w1.T) * self.scale) @ self.w2.T


def _scaled_graph(source, *, naive=False):
    specs = {p.name: p for p in source.params}
    hidden, n_in = specs["w1"].shape
    b = ngb.GraphBuilder(source.params)
    x, h = b.group("x", n_in, role="input"), b.group("h", hidden, role="hidden")
    s, y = b.group("s", hidden, role="hidden"), b.group("y", specs["w2"].shape[0], role="output")
    b.dense(b.param("w1"), x, h, et.LINEAR)
    b.diagonal(h, s, et.NORM, view=b.param("scale"))
    b.dense(b.param("w2"), s, y, et.LINEAR)
    b.permutable(h, s)
    return b


@pytest.fixture
def scaled_converter():
    ngb.register(
        "scaled_user", modules=(Scaled,), example=lambda rng: Scaled(rng.randint(1, 4), rng.randint(2, 5), 2),
        example_inputs=lambda model, graph, gen, batch: (torch.randn(batch, model.w1.shape[1], generator=gen),),
    )(_scaled_graph)
    yield
    unregister("scaled_user")


def test_a_registered_converter_is_a_family(scaled_converter):
    assert "scaled_user" in families()

    @given(data=st.data())
    def check(data):
        example = data.draw(examples("scaled_user"))
        assert isinstance(example.model, Scaled) and example.graph.arch == "scaled_user"
        assert_function_invariant(example.model, example.graph, perm=data.draw(permutations(example.graph)),
                                  inputs=example.inputs)
        with pytest.raises(AssertionError):
            bad = data.draw(permutations(example.graph, "bad"))
            assert_function_invariant(example.model, example.graph, perm=bad, inputs=example.inputs)

    check()


def test_every_family_draws_a_registered_converter_too(scaled_converter):
    assert "scaled_user" in families() and "traced" in families()
    found = find(examples(), lambda e: e.family == "scaled_user")  # models() with no arch draws it
    assert isinstance(found.model, Scaled)


def test_unknown_family_and_a_graph_without_symmetry():
    with pytest.raises(ng.UnsupportedModelError, match="no converter is registered as 'resnet9000'"):
        models("resnet9000")
    lonely = ng.convert(nn.Sequential(nn.Linear(3, 1), nn.ReLU(), nn.Linear(1, 2)))
    assert permutations(lonely).is_empty and permutations(lonely, "bad").is_empty
    with pytest.raises(ValueError, match="kind must be 'good' or 'bad'"):
        permutations(lonely, "ugly")


def test_permutation_repr_is_readable():
    perm = Permutation({"h": [1, 0, 2]}, skip=[("w2", "src")], kind="bad", description="permute h except w2")
    assert repr(perm) == ("Permutation(bad: permute h except w2; 'h': 0→1 1→0 (2 of 3 units moved); "
                          "left unpermuted: src side of block 'w2')")


def test_hypothesis_is_optional():
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "import neuralgraph, neuralgraph.testing as t\n"
        "assert callable(t.assert_invariant)\n"
        "try:\n    import neuralgraph.testing.strategies\nexcept ImportError as err:\n    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install hypothesis" in out.stdout
