"""Exceptions raised by :mod:`neuralgraph`."""

from __future__ import annotations


class NeuralGraphError(Exception):
    """Base class of every error this library raises on purpose."""


class UnsupportedModelError(NeuralGraphError, TypeError):
    """No registered converter can turn the model into a neural graph.

    The message names the first module or parameter that could not be placed and lists the
    converters that are registered.
    """


class GraphConstructionError(NeuralGraphError, ValueError):
    """A converter declared an inconsistent graph (bad ranges, parameters not covered, ...)."""


class ParameterMismatchError(NeuralGraphError, ValueError):
    """A parameter vector, state stack or shape list does not fit the graph or model."""


class NonFiniteError(NeuralGraphError, ValueError):
    """A parameter vector, state stack or edge-feature tensor holds NaN or Inf.

    Attributes:
        name: the parameter holding the first non-finite value (None where no names are known,
            then ``index`` is the row of the flat vector).
        index: flat (row-major) position of that value within the parameter.
        state: the state (column of a ``[P, T]`` stack) it is in; None for a single vector.
    """

    def __init__(self, message: str, *, name: str | None = None, index: int = 0, state: int | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.index = index
        self.state = state
