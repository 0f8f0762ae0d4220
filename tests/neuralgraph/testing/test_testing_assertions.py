"""neuralgraph.testing's assertions on their own (no hypothesis): invariant and equivariant maps pass,
maps that see the order of the parameters fail, with a message that says where."""

import copy

import pytest
import torch
from torch import nn

import neuralgraph as ng
from neuralgraph.examples import fm16, mlp
from neuralgraph.testing import (
    Permutation,
    assert_equivariant,
    assert_function_invariant,
    assert_invariant,
    good_permutations,
    node_permutation,
    permute_params,
)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = mlp((3, 6, 5, 2))
    return model, ng.convert(model, lpe=4), ng.flatten_params(model).detach()


# ------------------------------------------------------------------------------------ params
def test_elementwise_map_is_equivariant_and_a_shift_is_not(net):
    _, graph, theta = net
    assert_equivariant(lambda t: torch.tanh(t) * 2 + t**2, graph, theta)
    states = torch.stack([theta, theta * 0.9, theta * 0.7], dim=1)
    assert_equivariant(lambda s: s.exp() - 1, graph, states)  # a stack of states [P, T] -> [P, T]
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(lambda t: torch.roll(t, 1), graph, theta)
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(lambda s: torch.roll(s, 1, dims=0), graph, states)


def test_any_permutation_of_the_parameters_keeps_an_elementwise_map_equivariant(net):
    _, graph, theta = net
    bad = Permutation({"0": [1, 0, 2, 3, 4, 5]}, skip=[("2.weight", "src")], kind="bad")
    assert_equivariant(torch.sin, graph, theta, perm=bad)


def test_norm_is_invariant_and_a_position_weighted_sum_is_not(net):
    _, graph, theta = net
    assert_invariant(torch.linalg.vector_norm, graph, theta)
    assert_invariant(lambda t: (t.sort().values, t.sum()), graph, theta)  # tuples are compared whole
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(lambda t: (torch.arange(t.numel()) * t).sum(), graph, theta)


def test_mlp_on_flattened_parameters_is_caught_and_the_message_says_where(net):
    _, graph, theta = net
    torch.manual_seed(1)
    meta = nn.Sequential(nn.Linear(graph.num_params, 16), nn.Tanh(), nn.Linear(16, 1))
    perm = Permutation({"0": [1, 0, 2, 3, 4, 5]}, kind="good", description="swap hidden units 0 and 1")
    with pytest.raises(AssertionError) as caught:
        assert_invariant(meta, graph, theta, perm=perm)
    message = str(caught.value)
    assert "fn is not invariant (input='params') under Permutation(good: swap hidden units 0 and 1; '0': 0→1 1→0" in message
    assert "largest deviation |fn(P·θ) - fn(θ)|" in message and "output element 0 of shape (1,)" in message
    assert "tolerance: atol + rtol * scale = 0.0e+00 + 1.0e-05" in message
    assert "the permutation moves parameters: '0.weight' 6 of 18, '0.bias' 2 of 6, '2.weight' 10 of 30" in message
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(meta, graph, theta)  # the default draws catch it too


def test_equivariance_failure_names_the_parameter_and_element(net):
    _, graph, theta = net
    perm = {"0": torch.tensor([1, 0, 2, 3, 4, 5])}

    def leaks(t):  # equivariant except that it adds a constant to the first bias
        out = t.clone()
        out[18] += 1.0
        return out

    with pytest.raises(AssertionError) as caught:
        assert_equivariant(leaks, graph, theta, perm=perm)
    message = str(caught.value)
    assert "at parameter '0.bias' element (" in message and "of shape (6,)" in message
    assert "Permutation(given: '0': 0→1 1→0 (2 of 6 units moved))" in message


def test_adam_step_is_equivariant():
    torch.manual_seed(0)
    model = fm16()
    graph = ng.convert(model, lpe=0)
    x, y = torch.randn(6, 1, 14, 14), torch.randint(10, (6,))

    def adam_steps(theta):
        work = copy.deepcopy(model).double()
        ng.load_params(work, theta)
        opt = torch.optim.Adam(work.parameters(), lr=1e-2)
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(work(x.double()), y).backward()
            opt.step()
        return ng.flatten_params(work).detach()

    assert_equivariant(adam_steps, graph, ng.flatten_params(model).double(), trials=2)


# ------------------------------------------------------------------------------- graph inputs
class EdgeGNN(nn.Module):
    """Message passing over ``to_pyg`` graphs: edge messages from the edge features and type, summed
    at each target node, a node update, and a sum over nodes (or, ``readout=False``, per-node states)."""

    def __init__(self, features: int, hidden: int = 16, node_ids: int = 0) -> None:
        super().__init__()
        self.edge = nn.Sequential(nn.Linear(features + 16, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.types = nn.Embedding(16, 16)
        self.node = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())
        self.ids = nn.Embedding(node_ids, hidden) if node_ids else None  # sees where a node sits: not invariant

    def nodes(self, data) -> torch.Tensor:
        messages = self.edge(torch.cat([data.edge_attr.float(), self.types(data.edge_type)], dim=1))
        h = torch.zeros(data.num_nodes, messages.shape[1]).index_add_(0, data.edge_index[1], messages)
        if self.ids is not None:
            h = h + self.ids.weight
        return self.node(h)

    def forward(self, data) -> torch.Tensor:
        return self.nodes(data).sum(0)


def test_small_gnn_on_pyg_graphs_is_invariant_and_node_ids_break_it(net):
    _, graph, theta = net
    torch.manual_seed(0)
    gnn = EdgeGNN(graph.max_feat_size)
    assert_invariant(gnn, graph, theta, input="pyg")
    assert_equivariant(gnn.nodes, graph, theta, input="pyg", output="nodes")
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(EdgeGNN(graph.max_feat_size, node_ids=graph.num_nodes), graph, theta, input="pyg")
    with pytest.raises(AssertionError, match=r"at node \d+ \(unit \d+ of group"):
        assert_equivariant(lambda d: gnn.nodes(d).flip(0), graph, theta, input="pyg", output="nodes")


def test_edge_feature_maps(net):
    _, graph, theta = net
    torch.manual_seed(0)
    edgewise = nn.Sequential(nn.Linear(graph.max_feat_size, 8), nn.ReLU(), nn.Linear(8, graph.max_feat_size)).double()
    assert_equivariant(edgewise, graph, theta.double(), input="edge_features")
    assert_invariant(lambda e: edgewise(e).sum(0), graph, theta.double(), input="edge_features")
    with pytest.raises(AssertionError, match="at parameter '"):
        assert_equivariant(lambda e: edgewise(e.roll(1, dims=0)), graph, theta.double(), input="edge_features")


# -------------------------------------------------------------------------------- the model
def test_function_invariance_good_and_bad(net):
    model, graph, _ = net
    assert_function_invariant(model, graph)
    assert_function_invariant(model)  # converts the model itself
    bad = Permutation({"0": [1, 0, 2, 3, 4, 5]}, skip=[("2.weight", "src")], kind="bad")
    with pytest.raises(AssertionError, match=r"(?s)outputs changed under Permutation\(bad:.*left unpermuted: "
                                             r"src side of block '2.weight'.*output element"):
        assert_function_invariant(model, graph, perm=bad, inputs=torch.randn(5, 3))


def test_batchnorm_statistics_move_with_their_units():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    assert_function_invariant(model, inputs=torch.randn(8, 3))


# ------------------------------------------------------------------------ permute_params
def test_permute_params_takes_stacks_mappings_and_permutations(net):
    _, graph, theta = net
    perm = good_permutations(graph, 1, seed=3)[0]
    states = torch.stack([theta, -theta, 2 * theta], dim=1)
    moved = ng.permute_params(graph, states, perm)
    for t in range(3):
        assert torch.equal(moved[:, t], ng.permute_params(graph, states[:, t], perm.perms))
    pi = node_permutation(graph, perm)
    src, dst = graph.edge_index
    before = graph.edge_features(theta)
    after = graph.edge_features(permute_params(graph, theta, perm))
    # the edge (s, d) carries after the permutation what the edge (pi^-1 s, pi^-1 d) carried before
    key = {(int(s), int(d)): i for i, (s, d) in enumerate(zip(pi[src].tolist(), pi[dst].tolist()))}
    order = torch.tensor([key[(int(s), int(d))] for s, d in zip(src.tolist(), dst.tolist())])
    assert torch.equal(after, before[order])


def test_errors_say_what_to_do(net):
    model, graph, theta = net
    with pytest.raises(ng.ParameterMismatchError, match=r"theta must be the flat parameters \[71\]"):
        assert_invariant(torch.sum, graph, theta[:-1])
    with pytest.raises(ng.ParameterMismatchError, match="permute_params: expected parameters of shape"):
        ng.permute_params(graph, theta[:5], {})
    with pytest.raises(ValueError, match="input= must be one of 'params', 'pyg', 'edge_features'"):
        assert_invariant(torch.sum, graph, theta, input="nodes")
    with pytest.raises(ValueError, match="each of 0..n-1 once"):
        Permutation({"0": [0, 0, 1]})
    with pytest.raises(TypeError, match="Permutation or a mapping"):
        ng.permute_params(graph, theta, [1, 0])
    lonely = nn.Sequential(nn.Linear(3, 1), nn.ReLU(), nn.Linear(1, 2))
    with pytest.raises(ValueError, match="no permutable group with more than one unit"):
        assert_function_invariant(lonely)
    with pytest.raises(ng.ParameterMismatchError, match="built for other parameters"):
        assert_function_invariant(lonely, graph)
