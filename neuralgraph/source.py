"""What a converter reads: a live ``nn.Module`` or a list of ``(name, shape)`` pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from .errors import UnsupportedModelError
from .params import ParamSpec, normalize_specs, param_specs

__all__ = ["ModelSource"]


@dataclass
class ModelSource:
    """The parameters of a model (always) and, when a module was given, the module itself.

    Converters that need module structure use ``module``; converters that can work from names
    and shapes alone also accept sources built from a shape list (``module is None``).
    """

    params: list[ParamSpec]
    module: nn.Module | None = None
    config: Any = None
    example_inputs: Any = None  # what the traced converter runs the forward on

    @classmethod
    def of(cls, model: Any) -> "ModelSource":
        if isinstance(model, nn.Module):
            return cls(param_specs(model), model, getattr(model, "config", None))
        if isinstance(model, ModelSource):
            return model
        if isinstance(model, Sequence) and not isinstance(model, (str, bytes)):
            return cls(normalize_specs(model))
        raise UnsupportedModelError(
            f"cannot convert an object of type {type(model).__name__}: pass a torch.nn.Module or a "
            "list of (name, shape) pairs together with arch="
        )

    @property
    def is_module(self) -> bool:
        return self.module is not None

    def spec(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def model_type(self) -> str | None:
        """Hugging Face ``config.model_type`` when the model has one."""
        return getattr(self.config, "model_type", None)
