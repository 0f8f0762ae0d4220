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
from .errors import UnsupportedModelError
from .graph import NeuralGraph
from .source import ModelSource

__all__ = ["Converter", "register", "converters", "get_converter", "convert", "resolve"]

log = logging.getLogger(__name__)

ConvertFn = Callable[..., GraphBuilder]
ExampleFn = Callable[[random.Random], nn.Module]
InputsFn = Callable[[nn.Module, NeuralGraph, torch.Generator, int], tuple]


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
    """Decorator registering ``fn(source, *, naive) -> GraphBuilder`` as converter ``name``."""

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
    _load_builtin()
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
    _load_builtin()
    for c in _REGISTRY.values():
        if arch in c.names:
            return c
    for c in _REGISTRY.values():
        if arch in c.model_types:
            return c
    raise UnsupportedModelError(f"no converter is registered as '{arch}'. Supported: {_supported()}")


def resolve(model: Any, arch: str | None = None, config: Any = None) -> tuple[Converter, ModelSource]:
    """Pick the converter for ``model`` (explicit ``arch`` first)."""
    source = ModelSource.of(model)
    if config is not None:
        source.config = config
    if arch is not None:
        return get_converter(arch), source
    if source.module is None:
        raise UnsupportedModelError("a list of (name, shape) pairs needs arch=...: " + _supported())
    candidates = [c for c in converters() if c.matches(source)]
    if source.model_type is not None and not candidates:
        raise UnsupportedModelError(
            f"Hugging Face model_type '{source.model_type}' ({type(source.module).__name__}) is not supported. "
            f"Supported: {_supported()}"
        )
    candidates += [c for c in converters() if c.fallback and c not in candidates]
    if not candidates:
        raise UnsupportedModelError(f"no converter matches {type(source.module).__name__}. Supported: {_supported()}")
    return candidates[0], source


def convert(
    model: Any, *, arch: str | None = None, lpe: int = 8, naive: bool = False, config: Any = None
) -> NeuralGraph:
    """Convert a model (or a ``(name, shape)`` list with ``arch=``) into a :class:`NeuralGraph`.

    ``arch`` names a registered converter and takes precedence; otherwise a converter matching the
    model's Hugging Face ``model_type`` or class is used, then the fallback converters. ``lpe`` is
    the number of Laplacian positional-encoding columns (0 for none); ``naive`` asks attention
    converters for the naive graph (no effect on architectures without attention); ``config``
    (an object or dict, e.g. ``{"n_head": 4}``) gives a shape list what the shapes cannot say.
    Raises :class:`UnsupportedModelError` naming the first module or parameter that cannot be
    placed, and listing what is supported.
    """
    converter, source = resolve(model, arch, config)
    try:
        graph = converter.build(source, naive=naive, lpe=lpe)
    except UnsupportedModelError as err:
        raise UnsupportedModelError(f"{err}\nSupported: {_supported()}") from None
    graph.meta.setdefault("converter", converter.name)
    log.debug("converted %s with '%s': %r", type(source.module).__name__, converter.name, graph)
    return graph


_BUILTIN_LOADED = False


def _load_builtin() -> None:
    global _BUILTIN_LOADED
    if not _BUILTIN_LOADED:
        _BUILTIN_LOADED = True
        from . import arch as _  # noqa: F401  (registers the built-in converters)
