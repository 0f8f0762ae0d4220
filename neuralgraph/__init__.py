"""neuralgraph: neural networks as graphs of neurons.

Convert a model with :func:`convert`, check a converter against the model's real function with
:func:`verify`, and move parameters between flat vectors and edge features exactly.
"""

from . import edge_types
from .blocks import EdgeBlock
from .builder import GraphBuilder
from .errors import GraphConstructionError, NeuralGraphError, NonFiniteError, ParameterMismatchError, UnsupportedModelError
from .graph import NeuralGraph, UnitBuffer
from .groups import NodeGroup, NodeRange
from .params import ParamSpec, ParamView, StackedView, flatten_params, load_params, param_specs
from .registry import Converter, convert, converters, get_converter, register
from .source import ModelSource
from .symmetry import Permutable, PermutableHeads
from .verify import VerificationReport, verify

__version__ = "0.1.0"

__all__ = [
    "Converter",
    "EdgeBlock",
    "GraphBuilder",
    "GraphConstructionError",
    "ModelSource",
    "NeuralGraph",
    "NeuralGraphError",
    "NonFiniteError",
    "NodeGroup",
    "NodeRange",
    "ParamSpec",
    "ParamView",
    "ParameterMismatchError",
    "Permutable",
    "PermutableHeads",
    "StackedView",
    "UnitBuffer",
    "UnsupportedModelError",
    "VerificationReport",
    "convert",
    "converters",
    "edge_types",
    "flatten_params",
    "get_converter",
    "load_params",
    "param_specs",
    "register",
    "verify",
    "__version__",
]
