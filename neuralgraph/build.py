"""Names for writing a converter: the builder, node groups, edge blocks, symmetries, the registry.

A converter declares an architecture's neurons as :class:`NodeGroup` s, its weights as
:class:`EdgeBlock` s between them, and the permutations that keep its function as
:class:`Permutable` / :class:`PermutableHeads`; :class:`GraphBuilder` assembles them into a
:class:`neuralgraph.NeuralGraph`, and :func:`register` makes the converter available to
:func:`neuralgraph.convert` (see ``docs/converters.md``)::

    from neuralgraph.build import GraphBuilder, NodeGroup, register

Users who only convert and verify models need none of this: :mod:`neuralgraph` has their names.
"""

from .blocks import EdgeBlock
from .builder import GraphBuilder
from .graph import UnitBuffer
from .groups import NodeGroup, NodeRange
from .params import ParamSpec, ParamView, StackedView, param_specs
from .registry import Converter, get_converter, register
from .source import ModelSource
from .symmetry import Permutable, PermutableHeads

__all__ = [
    "Converter",
    "EdgeBlock",
    "GraphBuilder",
    "ModelSource",
    "NodeGroup",
    "NodeRange",
    "ParamSpec",
    "ParamView",
    "Permutable",
    "PermutableHeads",
    "StackedView",
    "UnitBuffer",
    "get_converter",
    "param_specs",
    "register",
]
