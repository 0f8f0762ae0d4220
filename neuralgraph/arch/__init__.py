"""Built-in converters; importing this package registers them (hand-written ones first, the
traced fallback last)."""

from . import bert, gpt2, llama, nanogpt, sequential, vit  # noqa: F401
from . import traced  # noqa: F401  (the fallback: registered last)

__all__ = ["bert", "gpt2", "llama", "nanogpt", "sequential", "vit", "traced"]
