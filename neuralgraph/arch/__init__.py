"""Built-in converters; importing this package registers them."""

from . import bert, gpt2, llama, nanogpt, sequential, vit  # noqa: F401

__all__ = ["bert", "gpt2", "llama", "nanogpt", "sequential", "vit"]
