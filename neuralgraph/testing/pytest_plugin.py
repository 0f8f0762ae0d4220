"""The pytest plugin of neuralgraph (entry point ``pytest11``, installed with the package).

It registers the hypothesis profiles of :mod:`neuralgraph.testing.profiles` (``"neuralgraph"``,
``"explore"``, ``"thorough"``) when pytest loads its plugins, before hypothesis reads
``--hypothesis-profile``: ``pytest --hypothesis-profile=thorough`` then runs a test suite's
hypothesis tests, those using :mod:`neuralgraph.testing.strategies` included, with 300 examples.

``$HYPOTHESIS_PROFILE`` names a profile to load where the command line names none: loaded as the
plugin loads (a conftest that loads a profile itself still has the last word), or, for a profile
that only a conftest registers, once pytest is configured. Without hypothesis the plugin does nothing.
"""

from __future__ import annotations

import os

import pytest


def _registered(name: str) -> bool:
    try:
        settings.get_profile(name)
    except Exception:  # hypothesis.errors.InvalidArgument
        return False
    return True


try:
    from hypothesis import settings

    from .profiles import ENV_VARIABLE, register_profiles
except ImportError:  # pragma: no cover - hypothesis is an optional dependency
    settings = None
    _PENDING = None
else:
    register_profiles()
    _PENDING = os.environ.get(ENV_VARIABLE)
    if _PENDING and _registered(_PENDING):  # known now: load it before any conftest runs
        settings.load_profile(_PENDING)
        _PENDING = None


def pytest_configure(config: pytest.Config) -> None:
    """Load a ``$HYPOTHESIS_PROFILE`` that was not registered when the plugin loaded."""
    if settings is None or not _PENDING or config.getoption("hypothesis_profile", default=None):
        return
    try:
        settings.load_profile(_PENDING)
    except Exception as err:  # hypothesis.errors.InvalidArgument
        raise pytest.UsageError(
            f"${ENV_VARIABLE}={_PENDING!r} names no registered hypothesis profile ({err}); the neuralgraph "
            "plugin registers 'neuralgraph', 'explore' and 'thorough'"
        ) from None
