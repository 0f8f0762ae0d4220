"""The converter registry: ``@register`` declares a converter, ``convert`` picks one.

A converter is a function ``fn(source: ModelSource, *, naive: bool) -> GraphBuilder`` that
declares the graph of a model. Registration says what it matches: module classes, Hugging Face
``model_type`` strings, or (``fallback=True``) any ``nn.Module`` it can walk. It may also provide
``example`` — a function drawing a random small model from a ``random.Random`` — which makes the
test suite check it (round trip and symmetry verification) with no new test code, and
``example_inputs`` for the verifier (and ``verify_rtol`` when the model computes parts in
reduced precision whatever its dtype).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .builder import GraphBuilder
from .compare import compare_graphs
from .errors import NeuralGraphError, UnsupportedModelError
from .graph import NeuralGraph
from .refusals import refusal_for
from .source import ModelSource

__all__ = ["Converter", "register", "converters", "get_converter", "convert", "resolve"]

log = logging.getLogger(__name__)

ConvertFn = Callable[..., GraphBuilder]
ExampleFn = Callable[[random.Random], nn.Module]
InputsFn = Callable[[nn.Module, NeuralGraph, torch.Generator, int], "tuple | dict"]


@dataclass(frozen=True)
class Converter:
    """A registered architecture-to-graph converter."""

    name: str
    fn: ConvertFn = field(repr=False)
    modules: tuple[type, ...] = ()
    model_types: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    fallback: bool = False
    accepts_specs: bool = False
    description: str = ""
    example: ExampleFn | None = field(default=None, repr=False)
    example_inputs: InputsFn | None = field(default=None, repr=False)
    """``(model, graph, generator, batch) -> tuple | dict``: one forward call's positional or
    keyword arguments for the verifier (see :func:`register`)."""
    verify_rtol: float | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def matches(self, source: ModelSource) -> bool:
        if source.module is None:
            return False
        if source.model_type is not None and source.model_type in self.model_types:
            return True
        return bool(self.modules) and isinstance(source.module, self.modules)

    def build(self, source: ModelSource, *, naive: bool = False, lpe: int = 8) -> NeuralGraph:
        if source.module is None and not self.accepts_specs:
            raise UnsupportedModelError(
                f"converter '{self.name}' needs the model itself (an nn.Module), not a shape list"
            )
        builder = self.fn(source, naive=naive)
        if not isinstance(builder, GraphBuilder):
            raise TypeError(f"converter '{self.name}' must return a GraphBuilder, got {type(builder).__name__}")
        builder.arch = self.name
        return builder.build(lpe=lpe)


_REGISTRY: dict[str, Converter] = {}


def register(
    name: str,
    *,
    modules: Sequence[type] = (),
    model_types: Sequence[str] = (),
    aliases: Sequence[str] = (),
    fallback: bool = False,
    accepts_specs: bool = False,
    description: str | None = None,
    example: ExampleFn | None = None,
    example_inputs: InputsFn | None = None,
    verify_rtol: float | None = None,
    replace: bool = False,
) -> Callable[[ConvertFn], ConvertFn]:
    """Decorator registering ``fn(source, *, naive) -> GraphBuilder`` as converter ``name``.

    ``example_inputs``, when given, is called as ``example_inputs(model, graph, generator, batch)``
    by :func:`neuralgraph.verify` when it gets no ``inputs=``: ``model`` the module to run (a float64
    working copy with redrawn parameters), ``graph`` the graph this converter built for it,
    ``generator`` a seeded ``torch.Generator`` to draw every random value from, ``batch`` the number
    of examples wanted. It returns the arguments of one forward call: a tuple of positional
    arguments (``model(*inputs)``) or a dict of keyword arguments (``model(**inputs)``), floating
    tensors in the dtype of the model's parameters (they are not cast), at most ``batch`` examples
    along the first dimension; non-tensor values (``return_dict=False``) pass through. See
    ``docs/converters.md``.
    """

    def decorate(fn: ConvertFn) -> ConvertFn:
        taken = {n: c.name for c in _REGISTRY.values() for n in c.names if c.name != name}
        for n in (name, *aliases):
            if n in taken or (n in _REGISTRY and not replace):
                raise ValueError(f"converter name '{n}' is already registered (by '{taken.get(n, n)}')")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = Converter(
            name=name,
            fn=fn,
            modules=tuple(modules),
            model_types=tuple(model_types),
            aliases=tuple(aliases),
            fallback=fallback,
            accepts_specs=accepts_specs,
            description=description if description is not None else (doc[0] if doc else ""),
            example=example,
            example_inputs=example_inputs,
            verify_rtol=verify_rtol,
        )
        return fn

    return decorate


def unregister(name: str) -> None:
    """Remove converter ``name`` (for tests and interactive work)."""
    _REGISTRY.pop(name, None)


def converters() -> list[Converter]:
    """Every registered converter, in registration order."""
    return list(_REGISTRY.values())


def _supported() -> str:
    parts = []
    for c in converters():
        what = [m.__name__ for m in c.modules] + [f"model_type={t}" for t in c.model_types]
        if c.fallback:
            what.append("any module built from supported layers")
        parts.append(f"{c.name} ({', '.join(what) or 'by name'})")
    return "; ".join(parts)


def get_converter(arch: str) -> Converter:
    """The converter registered under ``arch`` (name, alias or Hugging Face model_type)."""
    for c in _REGISTRY.values():
        if arch in c.names:
            return c
    for c in _REGISTRY.values():
        if arch in c.model_types:
            return c
    raise UnsupportedModelError(f"no converter is registered as '{arch}'. Supported: {_supported()}")


def resolve(
    model: Any, arch: str | None = None, config: Any = None, example_inputs: Any = None
) -> tuple[Converter, ModelSource]:
    """Pick the converter for ``model`` (explicit ``arch`` first)."""
    source = ModelSource.of(model)
    if not source.params:
        raise UnsupportedModelError(_no_parameters(source))
    if config is not None:
        source.config = config
    if example_inputs is not None:
        source.example_inputs = example_inputs
    if arch is not None:
        return get_converter(arch), source
    if source.module is None:
        raise UnsupportedModelError("a list of (name, shape) pairs needs arch=...: " + _supported())
    candidates = [c for c in converters() if c.matches(source)]
    reason = refusal_for(source.model_type)
    if reason and not candidates:
        raise UnsupportedModelError(reason + " (arch='traced' traces it anyway)")
    # a Hugging Face model_type without a hand-written converter is traced like any other module
    candidates += [c for c in converters() if c.fallback and c not in candidates]
    if not candidates:
        raise UnsupportedModelError(f"no converter matches {type(source.module).__name__}. Supported: {_supported()}")
    return candidates[0], source


def convert(
    model: Any,
    *,
    example_inputs: Any = None,
    arch: str | None = None,
    lpe: int = 8,
    naive: bool = False,
    config: Any = None,
) -> NeuralGraph:
    """Convert a model (or a ``(name, shape)`` list with ``arch=``) into a :class:`NeuralGraph`.

    ``arch`` names a registered converter and takes precedence; otherwise a hand-written converter
    matching the model's Hugging Face ``model_type`` or class is used, else the ``traced``
    converter, which reads the graph off the model's forward on ``example_inputs`` (a tensor, a
    tuple of positional arguments or a dict of keyword arguments; derived from the config for
    Hugging Face models and from the first layer of simple ones). Those inputs are also
    :func:`neuralgraph.verify`'s default inputs. An ``nn.Sequential`` read as a chain by the
    ``sequential`` converter is kept only where the trace confirms the chain.

    ``lpe`` is the number of Laplacian positional-encoding columns (0 for none); ``naive`` asks
    attention converters for the naive graph (no effect on architectures without attention);
    ``config`` (an object or dict, e.g. ``{"n_head": 4}``) gives a shape list what the shapes
    cannot say. Raises :class:`UnsupportedModelError` (or another :class:`NeuralGraphError`)
    saying what cannot be placed and why.
    """
    converter, source = resolve(model, arch, config, example_inputs)
    try:
        if arch is None and source.module is not None and converter.name in ("sequential", "traced"):
            graph = _chain_or_traced(source, naive=naive, lpe=lpe)
        elif arch is None and source.module is not None:
            graph = _hand_written_or_traced(converter, source, naive=naive, lpe=lpe)
        else:
            graph = converter.build(source, naive=naive, lpe=lpe)
    except NeuralGraphError as err:
        better = _explain(err, converter, source, arch)
        if better is not None:
            raise better from None
        if isinstance(err, UnsupportedModelError):
            raise UnsupportedModelError(f"{err}\nSupported: {_supported()}") from None
        raise
    graph.meta.setdefault("converter", converter.name)
    log.debug("converted %s with '%s': %r", type(source.module).__name__, graph.meta["converter"], graph)
    return graph


def _no_parameters(source: ModelSource) -> str:
    """Why a model without parameters cannot be converted."""
    if source.module is None:
        return "the shape list is empty: pass the model's (name, shape) pairs, one per parameter tensor"
    module = source.module
    name = type(module).__name__
    children = [type(c).__name__ for c in module.children()]
    if not children and type(module) in (nn.Sequential, nn.ModuleList, nn.ModuleDict):
        what = f"{name} is empty: it has no layers and so no parameters"
    elif children:
        what = f"{name} has no parameters (its layers {', '.join(children[:5])}{', ...' if len(children) > 5 else ''} hold no weights)"
    else:
        what = f"{name} has no parameters"
    return (
        f"{what}. A neural graph carries a network's weights on its edges, so there is nothing to convert: "
        "convert the model once it has its layers, e.g. nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))"
    )


def _tied_names(module: nn.Module) -> dict[str, list[str]]:
    """For each parameter PyTorch lists under its first name, the other names it is reachable
    under (weights tied between modules, e.g. a language-model head sharing the embedding)."""
    by_id: dict[int, list[str]] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(name)
    return {names[0]: names[1:] for names in by_id.values() if len(names) > 1}


def _owner(name: str) -> str:
    return name.rpartition(".")[0] or "(the model itself)"


def _explain(err: Exception, converter: Converter, source: ModelSource, arch: str | None) -> Exception | None:
    """A clearer error for a converter's failure on a module, or None to keep ``err``.

    Two failures otherwise point the wrong way: a parameter a converter asks for by a name PyTorch
    does not list because it is tied to another one ("no parameter 'lm_head.weight'"), and a
    module given an ``arch=`` whose structure it does not have (GPT-2's converter on an MLP
    reports the number of attention heads as missing).
    """
    # without arch= the traced converter is tried last and places shared weights: its failure has
    # another cause, reported as it is
    if source.module is None or arch is None:
        return None
    message = str(err)
    for first, others in _tied_names(source.module).items():
        named = [n for n in others if f"no parameter '{n}'" in message]
        if named:
            sharing = ", ".join(f"'{n}'" for n in [first, *others])
            modules = ", ".join(f"'{_owner(n)}'" for n in [first, *others])
            return type(err)(
                f"'{named[0]}' is a tied (shared) weight: {sharing} are one nn.Parameter, shared by modules "
                f"{modules}, and PyTorch lists a shared parameter once, under its first name '{first}'. The "
                f"{converter.name} converter needs '{named[0]}' as a tensor of its own: convert with arch=None "
                "(the traced converter puts a shared weight on every edge that reads it), or give each module "
                f"its own nn.Parameter if they are not meant to be shared (the converter said: {message})"
            )
    if converter.fallback or converter.matches(source):
        return None
    module = source.module
    expected = []
    if converter.model_types:
        expected.append("a Hugging Face model with config.model_type " + " / ".join(f"'{t}'" for t in converter.model_types))
    if converter.modules:
        expected.append("an instance of " + " / ".join(m.__name__ for m in converter.modules))
    if converter.description:
        expected.append(converter.description)
    has = f"config.model_type '{source.model_type}'" if source.model_type else "no Hugging Face config.model_type"
    names = [p.name for p in source.params]
    listed = ", ".join(names[:6]) + (f", ... ({len(names)} tensors)" if len(names) > 6 else "")
    return UnsupportedModelError(
        f"arch='{arch}': {type(module).__name__} does not have the structure the '{converter.name}' converter "
        f"expects ({'; '.join(expected)}). This model is a {type(module).__name__} with {has} and parameters "
        f"{listed}; what the converter found missing: {message}. Pass arch=None (the default) to pick the "
        "converter from the model: a matching hand-written one, else the traced converter, which reads the "
        f"graph off the model's forward pass.\nSupported: {_supported()}"
    )


def _hand_written_or_traced(converter: Converter, source: ModelSource, *, naive: bool, lpe: int) -> NeuralGraph:
    """The hand-written converter matching the model's family; where it does not know the model
    (a task head it has no layout for), the traced converter."""
    try:
        return converter.build(source, naive=naive, lpe=lpe)
    except NeuralGraphError as hand_err:  # unsupported, or parameters named otherwise (a head's own prefix)
        log.info("'%s' does not place %s (%s); tracing it", converter.name, type(source.module).__name__, hand_err)
        try:
            graph = get_converter("traced").build(source, naive=naive, lpe=lpe)
        except NeuralGraphError as trace_err:
            raise UnsupportedModelError(f"{hand_err}\n(traced converter: {trace_err})") from None
        graph.meta["converter"] = "traced"
        return graph


def _chain_or_traced(source: ModelSource, *, naive: bool, lpe: int) -> NeuralGraph:
    """A module without a hand-written converter: the ``sequential`` reading (registration order,
    the node order of the NiNo authors' graphs) where the traced forward confirms it, else the
    traced graph."""
    traced = get_converter("traced")
    try:
        chain = get_converter("sequential").build(source, naive=naive, lpe=lpe)
    except NeuralGraphError as chain_err:
        log.debug("%s is not a chain of layers (%s); tracing it", type(source.module).__name__, chain_err)
        try:
            graph = traced.build(source, naive=naive, lpe=lpe)
        except NeuralGraphError as trace_err:
            # the trace is the general reading: its reason leads, the chain's follows
            raise UnsupportedModelError(f"traced converter: {trace_err}\n(as a chain of layers: {chain_err})") from None
        graph.meta["converter"] = "traced"
        return graph
    if source.example_inputs is None:
        source.example_inputs = _sequential_inputs(source.module, chain)
    graph = traced.build(source, naive=naive, lpe=lpe)
    graph.meta["converter"] = "traced"
    result = compare_graphs(chain, graph)
    if not result:
        log.info("%s does not compute the chain its modules are listed in (%s); using the traced graph",
                 type(source.module).__name__, result.reason)
        return graph
    chain.meta["converter"] = "sequential"
    chain.meta["example_inputs"] = graph.meta.get("example_inputs")
    chain.meta["confirmed_by_trace"] = True
    return chain


def _sequential_inputs(model, graph: NeuralGraph):
    fn = get_converter("sequential").example_inputs
    return fn(model, graph, torch.Generator().manual_seed(0), 2)
