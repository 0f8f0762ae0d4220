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
