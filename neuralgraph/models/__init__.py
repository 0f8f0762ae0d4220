"""Small, self-contained model definitions for tests and examples (the projects they mirror are not
on PyPI): :mod:`~neuralgraph.models.nanogpt` (Karpathy's nanoGPT layout) and
:mod:`~neuralgraph.models.modded_nanogpt` (the modded-nanogpt speedrun layout)."""

from . import modded_nanogpt, nanogpt

__all__ = ["modded_nanogpt", "nanogpt"]
