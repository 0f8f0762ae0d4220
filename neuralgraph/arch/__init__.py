"""Built-in converters; importing this package registers them."""

from . import sequential  # noqa: F401

__all__ = ["sequential"]
