"""neuralgraph: neural networks as graphs of neurons.

Convert a model with :func:`convert`, check the graph against the model's real function with
:func:`verify`, move parameters between flat vectors and the graph exactly
(:meth:`NeuralGraph.edge_features` / :meth:`NeuralGraph.to_params`, :func:`flatten_params` /
:func:`load_params`), and apply a neuron permutation to parameters with :func:`permute_params`.

Writing a converter for a new architecture: :mod:`neuralgraph.build`. Testing your own
weight-space code for permutation symmetry: :mod:`neuralgraph.testing`.
"""

from . import arch  # noqa: F401  (importing it registers the built-in converters)
from . import edge_types
from .errors import GraphConstructionError, NeuralGraphError, NonFiniteError, ParameterMismatchError, UnsupportedModelError
from .graph import NeuralGraph
from .params import flatten_params, load_params
from .permute import permute_params
from .registry import convert, converters
from .verify import VerificationReport, verify

__version__ = "0.1.0"

__all__ = [
    "GraphConstructionError",
    "NeuralGraph",
    "NeuralGraphError",
    "NonFiniteError",
    "ParameterMismatchError",
    "UnsupportedModelError",
    "VerificationReport",
    "convert",
    "converters",
    "edge_types",
    "flatten_params",
    "load_params",
    "permute_params",
    "verify",
    "__version__",
]
