"""Small helpers shared by the Hugging Face converters."""

from __future__ import annotations

from typing import Any

from ..errors import UnsupportedModelError


def config_value(config: Any, *names: str, what: str) -> Any:
    """Read the first of ``names`` from a config object or dict; explain what is missing."""
    for name in names:
        if isinstance(config, dict) and name in config:
            return config[name]
        if config is not None and not isinstance(config, dict) and getattr(config, name, None) is not None:
            return getattr(config, name)
    raise UnsupportedModelError(
        f"the {what} is not known: pass a model with a config, or config={{'{names[0]}': ...}} with a shape list"
    )


def require_transformers(feature: str):
    try:
        import transformers
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"{feature} needs the 'transformers' package: pip install 'neuralgraph[hf]'"
        ) from None
    return transformers
