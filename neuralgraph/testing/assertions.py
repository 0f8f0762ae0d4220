"""Assertions that a function respects the neuron-permutation symmetries of a neural graph.

* :func:`assert_function_invariant` — a model computes the same function after its neurons are
  permuted (the symmetries its graph declares are real);
* :func:`assert_invariant` — ``fn(P·θ) == fn(θ)`` (a metanetwork predicting a property of the
  weights: accuracy, generalisation gap);
* :func:`assert_equivariant` — ``fn(P·θ) == P·fn(θ)`` (an optimizer step, a nowcaster, a
  weight-space autoencoder).

Each raises ``AssertionError`` naming the permutation, the largest deviation, where it lies (a
parameter and its element, a node, an output element) and the tolerance. Pass ``perm=`` (a
:class:`~neuralgraph.testing.Permutation`, e.g. drawn by
:func:`neuralgraph.testing.strategies.permutations` inside a hypothesis test, or a mapping
``{group: tensor}``); without it each draws ``trials`` good permutations from a seeded generator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ParameterMismatchError
from ..graph import NeuralGraph
from ..params import param_specs
from ..permutation import Permutation, PermutationLike, as_permutation
from ..permute import node_permutation, permute_params
from ..registry import convert, get_converter
from ..verify_model import FLOAT32_RTOL, working_copy
from .deviation import as_tensor, default_rtol, failure_message, measure, moved_parameters, where
from .draws import good_permutations

__all__ = ["assert_function_invariant", "assert_invariant", "assert_equivariant", "INPUTS", "OUTPUTS"]

log = logging.getLogger(__name__)

INPUTS = ("params", "pyg", "edge_features")
"""What ``fn`` receives: the parameters ``θ`` as they are (``[P]`` or ``[P, T]``), the
``torch_geometric`` graph ``graph.to_pyg(θ)``, or the edge features ``graph.edge_features(θ)``."""

OUTPUTS = ("params", "edge_features", "nodes")
"""What an equivariant ``fn`` returns: parameters ``[P]`` / ``[P, K]``, edge features
``[E, max_feat_size * K]`` (compared as the parameters they hold) or node values ``[N, ...]``."""

#: Good permutations tried when no ``perm=`` is given.
TRIALS = 4


def _permutations(graph: NeuralGraph, perm: PermutationLike | None, trials: int, seed: int) -> list[Permutation]:
    return [as_permutation(perm)] if perm is not None else good_permutations(graph, trials, seed)


def _check_theta(graph: NeuralGraph, theta: torch.Tensor, where_from: str) -> None:
    if not isinstance(theta, torch.Tensor) or theta.ndim not in (1, 2) or theta.shape[0] != graph.num_params:
        shape = tuple(theta.shape) if isinstance(theta, torch.Tensor) else type(theta).__name__
        raise ParameterMismatchError(
            f"{where_from}: theta must be the flat parameters [{graph.num_params}] or a stack of states "
            f"[{graph.num_params}, T] of this {graph.arch} graph, got {shape} (neuralgraph.flatten_params(model) "
            "gives the flat vector)"
        )


def _feed(graph: NeuralGraph, theta: torch.Tensor, input: str) -> Any:
    if input == "params":
        return theta
    if input == "pyg":
        return graph.to_pyg(theta)
    return graph.edge_features(theta)


def _check_mode(value: str, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"{name}= must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")


def _call(fn: Callable, argument: Any, what: str) -> torch.Tensor:
    """``fn(argument)`` as one tensor (gradients stay enabled: ``fn`` may take an optimizer step)."""
    return as_tensor(fn(argument), what)


def _reference(fn: Callable, graph: NeuralGraph, theta: torch.Tensor, input: str, precise: bool):
    """``(theta, fn(theta))`` with the parameters in float64 where ``precise`` and ``fn`` takes them so
    (a float32 result cannot show a deviation below its round-off: a weighted sum of a thousand
    parameters changes by ~1e-7 of its value when two units swap), else as given."""
    if precise and theta.is_floating_point() and theta.dtype != torch.float64:
        wide = theta.double()
        try:
            return wide, _call(fn, _feed(graph, wide, input), "fn")
        except Exception as err:  # fn holds float32 weights, or checks its input's dtype
            log.debug("fn does not take float64 parameters (%s: %s); testing it in %s", type(err).__name__, err,
                      theta.dtype)
    return theta, _call(fn, _feed(graph, theta, input), "fn")


# ---------------------------------------------------------------------------------- the model
def _model_graph(model: nn.Module, graph: NeuralGraph | None) -> NeuralGraph:
    if graph is None:
        graph = convert(model, lpe=0)
    specs = [(p.name, tuple(p.shape)) for p in param_specs(model)]
    if specs != [(p.name, tuple(p.shape)) for p in graph.params]:
        raise ParameterMismatchError(
            f"the graph ({graph.arch}) was built for other parameters than {type(model).__name__} has: convert this "
            "model (neuralgraph.convert(model)) or pass graph=None"
        )
    return graph


#: Default tolerance of :func:`assert_function_invariant` in float64: good permutations move a
#: float64 model's outputs by ~1e-15 relative (reordered sums), bad ones by 1e-8 and more.
FLOAT64_RTOL = 1e-9


def _model_rtol(graph: NeuralGraph) -> float:
    """The converter's ``verify_rtol`` (a model computing parts in reduced precision whatever its
    dtype), else :data:`FLOAT64_RTOL`."""
    try:
        return get_converter(graph.arch).verify_rtol or FLOAT64_RTOL
    except Exception:  # a graph of a converter that is no longer registered
        return FLOAT64_RTOL


def assert_function_invariant(
    model: nn.Module,
    graph: NeuralGraph | None = None,
    *,
    perm: PermutationLike | None = None,
    inputs: Any = None,
    rtol: float | None = None,
    atol: float = 0.0,
    trials: int = TRIALS,
    seed: int = 0,
) -> None:
    """Assert that ``model`` computes the same outputs after its neurons are permuted.

    A float64 copy of the model with its own parameters (in eval mode) runs on ``inputs``, once
    with its parameters and once with them permuted by ``perm`` (its per-unit buffers, such as
    BatchNorm statistics, moved alike); every floating-point output must agree within
    ``atol + rtol * max|outputs|``. The copy stays in float64 where the model's code asks for
    float32 (as :func:`neuralgraph.verify` runs it); a model that cannot run in float64 is run
    in float32 with a tolerance of at least 1e-4.

    Args:
        model: the network (not modified).
        graph: its neural graph; default ``neuralgraph.convert(model, lpe=0)``.
        perm: the permutation to apply; default ``trials`` good ones drawn from the graph's declared
            symmetries (``seed``). A bad permutation (``kind="bad"``) is expected to *fail* this
            assertion.
        inputs: a tensor, a tuple of positional arguments or a dict of keyword arguments of one
            forward call; default the converter's example inputs.
        rtol: default the converter's ``verify_rtol`` where it declares one, else 1e-9 (good
            permutations move a float64 model's outputs by about 1e-15, reordered sums; a broken
            symmetry by 1e-8 and far more); at least 1e-4 where the model only runs in float32.
        atol: absolute tolerance added to ``rtol * max|outputs|``.

    Raises:
        AssertionError: the outputs moved by more than the tolerance.
        ValueError: no ``perm`` and no declared symmetry moves a unit; no inputs are known.
        ParameterMismatchError: ``graph`` belongs to other parameters.
    """
    graph = _model_graph(model, graph)
    perms = _permutations(graph, perm, trials, seed)
    rtol = _model_rtol(graph) if rtol is None else rtol
    try:
        _, runner, theta, reference = working_copy(model, graph, inputs, seed, torch.float64, redraw=False)
    except RuntimeError as err:  # a forward with float32 constants in its code
        log.info("%s does not run in float64 (%s); checking it in float32", type(model).__name__, err)
        _, runner, theta, reference = working_copy(model, graph, inputs, seed, torch.float32, redraw=False)
        rtol = max(rtol, FLOAT32_RTOL)
    for p in perms:
        moved = runner.outputs(permute_params(graph, theta, p), p.perms)
        deviation = measure(moved, reference, "the model's outputs")
        if not deviation.within(rtol, atol):
            raise AssertionError(failure_message(
                f"{type(model).__name__}'s outputs changed", p, deviation,
                where(deviation, graph, "output") + " (all floating outputs, flattened and joined)",
                rtol, atol, ("y(P·θ)", "y(θ)"), extra=f"the permutation moves parameters: {moved_parameters(graph, p)}",
            ))


# ---------------------------------------------------------------------------------- functions
def assert_invariant(
    fn: Callable[[Any], Any],
    graph: NeuralGraph,
    theta: torch.Tensor,
    *,
    perm: PermutationLike | None = None,
    input: str = "params",
    rtol: float | None = None,
    atol: float = 0.0,
    trials: int = TRIALS,
    seed: int = 0,
    precise: bool = True,
) -> None:
    """Assert ``fn(P·θ) == fn(θ)``: ``fn`` does not see a permutation of the neurons.

    Args:
        fn: the function under test. It receives, by ``input``: ``"params"`` the parameters as
            given (``[P]`` or ``[P, T]``), ``"pyg"`` ``graph.to_pyg(θ)`` (a
            ``torch_geometric.data.Data`` with ``edge_index``, ``edge_attr``, ``edge_type``,
            ``pos``, ``pos_w``), ``"edge_features"`` ``graph.edge_features(θ)`` (``[E, F·T]``).
            It returns a tensor, a number, or a tuple / dict of tensors (compared all together).
        graph: the network's neural graph.
        theta: flat parameters ``[P]`` or a stack of states ``[P, T]``.
        perm: default ``trials`` good permutations drawn from the graph's declared symmetries.
        rtol: default 1e-9 where ``fn`` returns float64, else 1e-5; the deviation must be at most
            ``atol + rtol * max|fn(θ)|``.
        precise: where ``theta`` is float32 (or narrower), call ``fn`` with ``theta.double()`` when it
            accepts that (same values, float64 round-off; a float32 sum cannot show a change below
            ~1e-7 of its value), else with ``theta`` as given. ``precise=False``: always as given.

    Note that ``graph.to_pyg`` carries the Laplacian positional encodings ``pos`` of the
    *unpermuted* graph: a function reading ``pos`` sees where a neuron sits in the node order and
    is in general not invariant (eigenvectors of repeated eigenvalues are a choice of basis;
    ``docs/testing.md``).

    Raises:
        AssertionError: ``fn`` changed by more than the tolerance, or changed shape.
    """
    _check_mode(input, INPUTS, "input")
    _check_theta(graph, theta, "assert_invariant")
    theta, expected = _reference(fn, graph, theta, input, precise)
    for p in _permutations(graph, perm, trials, seed):
        actual = _call(fn, _feed(graph, permute_params(graph, theta, p), input), "fn")
        deviation = measure(actual, expected, "fn is not invariant")
        tol = default_rtol(actual, expected) if rtol is None else rtol
        if not deviation.within(tol, atol):
            raise AssertionError(failure_message(
                f"fn is not invariant (input={input!r})", p, deviation, where(deviation, graph, "output"),
                tol, atol, ("fn(P·θ)", "fn(θ)"), extra=f"the permutation moves parameters: {moved_parameters(graph, p)}",
            ))


def _as_params(graph: NeuralGraph, value: torch.Tensor, output: str) -> torch.Tensor:
    if output == "edge_features":
        return graph.to_params(value, check=False)
    if output == "params" and (value.ndim not in (1, 2) or value.shape[0] != graph.num_params):
        raise AssertionError(
            f"fn returned shape {tuple(value.shape)}, not parameters [{graph.num_params}] or [{graph.num_params}, K]: "
            "pass output='edge_features' or output='nodes' if that is what it returns"
        )
    return value


def _moved(graph: NeuralGraph, value: torch.Tensor, perm: Permutation, output: str) -> torch.Tensor:
    """``P·value`` for an output of kind ``output`` (edge features already read as parameters)."""
    if output == "nodes":
        if value.ndim < 1 or value.shape[0] != graph.num_nodes:
            raise AssertionError(f"fn returned shape {tuple(value.shape)}, not node values [{graph.num_nodes}, ...]")
        out = torch.empty_like(value)
        out[node_permutation(graph, perm)] = value
        return out
    return permute_params(graph, value, perm)


def assert_equivariant(
    fn: Callable[[Any], Any],
    graph: NeuralGraph,
    theta: torch.Tensor,
    *,
    perm: PermutationLike | None = None,
    input: str = "params",
    output: str | None = None,
    rtol: float | None = None,
    atol: float = 0.0,
    trials: int = TRIALS,
    seed: int = 0,
    precise: bool = True,
) -> None:
    """Assert ``fn(P·θ) == P·fn(θ)``: permuting the neurons before ``fn`` is permuting its result.

    Args:
        fn: the function under test; it receives what ``input`` says (as in
            :func:`assert_invariant`: ``"params"``, ``"pyg"`` or ``"edge_features"``) and returns,
            by ``output``: ``"params"`` parameters ``[P]`` or ``[P, K]`` (a step, a prediction),
            ``"edge_features"`` ``[E, max_feat_size·K]`` as ``graph.edge_features`` lays them out
            (compared as the parameters they hold: ``graph.to_params``), or ``"nodes"`` one row
            per node ``[N, ...]``. Default: ``"params"`` for ``input="params"``, else
            ``"edge_features"``.
        graph: the network's neural graph.
        theta: flat parameters ``[P]`` or a stack of states ``[P, T]`` (a trajectory).
        perm: default ``trials`` good permutations drawn from the graph's declared symmetries. Any
            permutation of the parameters works here, bad ones included: an elementwise map is
            equivariant to all of them.
        rtol: default 1e-9 where ``fn`` returns float64, else 1e-5 (relative to ``max|P·fn(θ)|``).
        precise: as in :func:`assert_invariant`: ``fn`` gets float64 parameters where it takes them.

    Raises:
        AssertionError: the two sides differ by more than the tolerance (the message names the
            parameter and element, or the node, where they differ most).
    """
    _check_mode(input, INPUTS, "input")
    output = output or ("params" if input == "params" else "edge_features")
    _check_mode(output, OUTPUTS, "output")
    _check_theta(graph, theta, "assert_equivariant")
    theta, first = _reference(fn, graph, theta, input, precise)
    before = _as_params(graph, first, output)
    layout = "nodes" if output == "nodes" else "params"
    for p in _permutations(graph, perm, trials, seed):
        actual = _as_params(graph, _call(fn, _feed(graph, permute_params(graph, theta, p), input), "fn"), output)
        expected = _moved(graph, before, p, output)
        deviation = measure(actual, expected, "fn is not equivariant")
        tol = default_rtol(actual, expected) if rtol is None else rtol
        if not deviation.within(tol, atol):
            raise AssertionError(failure_message(
                f"fn is not equivariant (input={input!r}, output={output!r})", p, deviation,
                where(deviation, graph, layout), tol, atol, ("fn(P·θ)", "P·fn(θ)"),
            ))
