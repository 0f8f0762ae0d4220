"""Built-in converters; importing this package registers them."""

from . import gpt2, llama, sequential  # noqa: F401

__all__ = ["gpt2", "llama", "sequential"]
