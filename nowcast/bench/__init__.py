"""The steps-to-target comparison: train a task (:mod:`nowcast.tasks`) with each method
(:func:`resolve_method`) from several seeds (:func:`train`) and compare (:func:`compare`)."""

from .comparison import Comparison, compare
from .methods import METHODS, Method, resolve_method
from .training import RunResult, train

__all__ = ["METHODS", "Comparison", "Method", "RunResult", "compare", "resolve_method", "train"]
