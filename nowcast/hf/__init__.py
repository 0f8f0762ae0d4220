"""Hugging Face integration: :class:`NiNoCallback`, NiNo jumps in a ``transformers.Trainer`` run.

Needs the optional extra: ``pip install -e ".[hf]"`` (transformers and accelerate). ``import
nowcast`` never imports this package. Docs: ``docs/trainer.md``.
"""

from __future__ import annotations

try:
    import transformers  # noqa: F401  (checked here, so the error below says what to install)
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "nowcast.hf needs the transformers package (and accelerate for the Trainer): "
        'pip install -e ".[hf]" from the project folder, or pip install transformers accelerate'
    ) from exc

from .callback import NiNoCallback
from .state_file import FILENAME as STATE_FILENAME

__all__ = ["STATE_FILENAME", "NiNoCallback"]
