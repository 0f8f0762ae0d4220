"""Property-based symmetry tests for metanetworks, learned optimizers and weight-space models.

Assert that *your* function respects neuron-permutation symmetry (``docs/testing.md``)::

    import neuralgraph as ng
    from neuralgraph.testing import assert_invariant, assert_equivariant, assert_function_invariant

    graph = ng.convert(model)
    theta = ng.flatten_params(model)
    assert_function_invariant(model, graph)                      # the declared symmetries are real
    assert_invariant(my_gnn, graph, theta, input="pyg")          # my_gnn(to_pyg(P·θ)) == my_gnn(to_pyg(θ))
    assert_equivariant(my_step, graph, theta)                    # my_step(P·θ) == P·my_step(θ)

With hypothesis (``pip install hypothesis``), :mod:`neuralgraph.testing.strategies` draws small
models of every family and good or bad permutations of their neurons (:class:`Permutation`),
which every assertion and :func:`neuralgraph.permute_params` accept. The pytest plugin installed
with the package registers the hypothesis profiles ``"neuralgraph"``, ``"explore"`` and
``"thorough"`` (:mod:`neuralgraph.testing.profiles`).
"""

from ..permutation import Permutation, PermutationLike
from ..permute import node_permutation, permute_params
from .assertions import INPUTS, OUTPUTS, assert_equivariant, assert_function_invariant, assert_invariant
from .draws import good_permutation, good_permutations, movable_symmetries
from .model_families import Example, Family, build_example, families, family

__all__ = [
    "Example",
    "Family",
    "INPUTS",
    "OUTPUTS",
    "Permutation",
    "PermutationLike",
    "assert_equivariant",
    "assert_function_invariant",
    "assert_invariant",
    "build_example",
    "families",
    "family",
    "good_permutation",
    "good_permutations",
    "movable_symmetries",
    "node_permutation",
    "permute_params",
]
