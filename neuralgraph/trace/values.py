"""What the traced converter knows about each tensor of a forward.

Every tensor the forward produces is one of three kinds:

* :class:`Units` — an activation; ``ids`` has the tensor's shape and holds, for every element,
  the neuron (graph node) it belongs to. Views, transposes and concatenations act on ``ids``
  exactly as on the tensor, so the neuron of every element stays known through any layout change.
* :class:`Params` — a parameter or a view of one; ``idx`` (:class:`~neuralgraph.trace.elems.Elems`)
  gives, per element, its offset in the flat parameter vector (``named_parameters()`` order),
  as a strided view that costs no memory.
* :class:`Data` — anything that belongs to no neuron: integer ids, masks, positions, constants,
  model inputs not yet read by a layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .elems import Elems

__all__ = ["Units", "Params", "Data", "Value"]


@dataclass
class Units:
    """An activation: ``ids[i]`` is the neuron of element ``i``. ``fresh`` marks neurons that a
    parameterized op just created and nothing else has read yet."""

    ids: torch.Tensor
    fresh: bool = False


@dataclass
class Params:
    """A parameter tensor or a view of one: ``idx[i]`` is the flat-vector offset of element ``i``."""

    idx: Elems


@dataclass
class Data:
    """No neurons. ``origin`` is ``"input"`` for model inputs (and what is computed from them
    without parameters) and ``"const"`` for tensors the forward creates or reads from buffers;
    ``uniform`` marks constants whose elements are all equal (an RNN's zero initial state)."""

    origin: str = "const"
    buffer: str | None = None
    uniform: bool = False  # every element holds the same value (zeros, ones, full): no neuron is told apart
    # a statistic of sets of neurons (a per-head norm's variance): it moves with the sets it
    # summarizes (the reduction keeps permutations inside or of whole sets), so it tells none apart
    statistic: bool = False


Value = Units | Params | Data
