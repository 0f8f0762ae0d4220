"""Model families: the random small models of every registered converter, ready to test.

A family is a converter's ``example`` (a function drawing a small model from a
``random.Random``, declared with :func:`neuralgraph.build.register`), so a converter a user registers is
a family too. The ``sequential`` converter's example is split into ``"mlp"`` and ``"convnet"``.
:func:`build_example` draws one model, converts it, gives it generic parameters and draws inputs
that run it; :func:`neuralgraph.testing.strategies.models` does the same with hypothesis.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..arch.sequential import sample_convnet, sample_mlp
from ..graph import NeuralGraph
from ..registry import Converter, convert, converters, get_converter
from ..verify_model import redraw_parameters, working_copy

__all__ = ["Family", "Example", "families", "family", "build_example", "inert_blocks", "INPUT_BATCH", "INERT_CHANGE"]

log = logging.getLogger(__name__)

#: Examples per drawn input batch (more rows make a broken symmetry likelier to show).
INPUT_BATCH = 32

#: Relative output change under which a block counts as having no effect (:func:`inert_blocks`).
INERT_CHANGE = 1e-9

_SPLIT = {"mlp": sample_mlp, "convnet": sample_convnet}


@dataclass(frozen=True)
class Family:
    """A kind of model: its ``name``, the converter that reads it and the function drawing one."""

    name: str
    converter: Converter
    sample: Callable[[random.Random], nn.Module]


@dataclass(frozen=True)
class Example:
    """A drawn model with its graph (built with the family's converter, ``lpe=0``) and inputs
    (the arguments of one forward call: a tuple of positional or a dict of keyword arguments)."""

    family: str
    model: nn.Module
    graph: NeuralGraph
    inputs: Any


def families() -> list[str]:
    """Every family name: ``"mlp"``, ``"convnet"``, then each registered converter with an
    example other than ``sequential`` (``gpt2``, ``llama``, ``bert``, ``vit``, ``nanogpt``,
    ``modded_nanogpt``, ``traced``, and any a user registered with ``example`` and
    ``example_inputs``), in registration order."""
    return ["mlp", "convnet"] + [
        c.name for c in converters()
        if c.example is not None and c.example_inputs is not None and c.name != "sequential"
    ]


def family(name: str) -> Family:
    """The family ``name``: a name of :func:`families`, or any name, alias or Hugging Face
    ``model_type`` of a registered converter.

    Raises:
        UnsupportedModelError: no converter is registered under ``name``.
        ValueError: the converter registers no ``example`` to draw models from.
    """
    if name in _SPLIT:
        return Family(name, get_converter("sequential"), _SPLIT[name])
    converter = get_converter(name)
    if converter.example is None:
        raise ValueError(
            f"converter '{converter.name}' registers no example model to draw: pass example=fn(rng) -> nn.Module "
            "to neuralgraph.build.register"
        )
    if converter.example_inputs is None:
        raise ValueError(
            f"converter '{converter.name}' registers no example_inputs: pass example_inputs=fn(model, graph, "
            "generator, batch) to neuralgraph.build.register so that drawn models can be run"
        )
    return Family(converter.name, converter, converter.example)


def build_example(name: str, rng: random.Random, seed: int, *, batch: int = INPUT_BATCH) -> Example:
    """A model of family ``name`` drawn from ``rng``, converted with the family's converter, in
    eval mode, with generic parameters drawn from ``seed`` (the verifier's draw: weights
    ``N(0.5, 1)/sqrt(fan_in)``, 1-D parameters ``U(0.5, 1.5)``, so that no two units are alike and
    ReLU units are active), and inputs for it drawn from the same generator.

    Raises:
        NeuralGraphError: the converter refuses the drawn model (the traced converter refuses a few
            of its grammar's models, with a reason).
    """
    fam = family(name)
    model = fam.sample(rng).eval()
    graph = convert(model, arch=fam.converter.name, lpe=0)
    generator = torch.Generator().manual_seed(seed)
    redraw_parameters(model, graph, generator)
    inputs = fam.converter.example_inputs(model, graph, generator, batch)
    inputs = inputs if isinstance(inputs, dict) else tuple(inputs)
    return Example(fam.name, model, graph, inputs)


def inert_blocks(example: Example, blocks: list[str], seed: int = 0) -> list[str]:
    """The ``blocks`` (names) of ``example.graph`` whose values, replaced by noise as large as
    themselves, move the model's outputs by at most :data:`INERT_CHANGE` of their scale: blocks
    the function does not depend on (a key bias, which softmax cancels), which no permutation can
    show broken. The converter should declare them (``GraphBuilder.without_effect``); the traced
    converter does not always."""
    _, runner, theta, reference = working_copy(example.model, example.graph, example.inputs, seed, torch.float64,
                                               redraw=False)
    scale = float(reference.abs().max()) + 1e-300
    noise = torch.Generator().manual_seed(seed)
    found = []
    for name in blocks:
        view = example.graph.block(name).view
        values = view.read(theta)
        vector = theta.clone()
        view.write(vector, torch.randn(values.shape, generator=noise, dtype=values.dtype) * (float(values.abs().max()) + 1.0))
        if float((runner.outputs(vector) - reference).abs().max()) <= INERT_CHANGE * scale:
            found.append(name)
    return found
