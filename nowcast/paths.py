"""Where nowcast looks for files it never downloads (datasets in ``../shared/data``, checkpoints
in ``checkpoints/`` and ``../shared/checkpoints``): relative to the working directory first, then
to the source checkout the package runs from."""

from __future__ import annotations

from pathlib import Path

__all__ = ["PROJECT_ROOT", "search_roots", "shared_dirs"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
"""The checkout holding the ``nowcast`` package (an editable install runs from it)."""


def search_roots() -> list[Path]:
    """The working directory, then :data:`PROJECT_ROOT` (once, if they are the same)."""
    roots = [Path.cwd()]
    if PROJECT_ROOT not in roots:
        roots.append(PROJECT_ROOT)
    return roots


def shared_dirs(*parts: str) -> list[Path]:
    """``../shared/<parts>`` next to each of :func:`search_roots`."""
    return [root.parent.joinpath("shared", *parts) for root in search_roots()]
