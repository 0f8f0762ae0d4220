"""The project's hypothesis settings profiles, for its own tests and for users' tests.

* ``"neuralgraph"`` — what the project's CI runs: 25 examples, drawn the same on every run
  (``derandomize``). Random small models occasionally come out numerically degenerate (a
  saturated one-unit head, token representations that collapse after a few tiny attention
  layers); a gate must not fail by chance.
* ``"explore"`` — 25 new examples on every run.
* ``"thorough"`` — 300 new examples; run it when changing a converter, a metanetwork or the verifier.

The pytest plugin (:mod:`neuralgraph.testing.pytest_plugin`, installed with the package)
registers them, so ``pytest --hypothesis-profile=thorough`` works in any project; it does not
replace hypothesis's own ``"default"`` profile (that would change every hypothesis test suite in
an environment where neuralgraph is installed). A project opts in with :func:`load_profile`.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["PROFILES", "register_profiles", "load_profile", "ENV_VARIABLE"]

#: The environment variable naming the profile to load when none is given.
ENV_VARIABLE = "HYPOTHESIS_PROFILE"

PROFILES: dict[str, dict] = {
    "neuralgraph": dict(
        max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
    ),
    "explore": dict(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False),
    "thorough": dict(max_examples=300, deadline=None, suppress_health_check=[], derandomize=False),
}
"""Settings of each profile (keyword arguments of ``hypothesis.settings``). Every profile names
each of these settings: a profile inherits the others from whatever profile is loaded when it is
registered."""


def register_profiles() -> None:
    """Register every profile of :data:`PROFILES` with hypothesis (idempotent)."""
    for name, options in PROFILES.items():
        settings.register_profile(name, **options)


def load_profile(name: str | None = None, *, fallback: str = "neuralgraph") -> str:
    """Register the profiles and load ``name``, else the one ``$HYPOTHESIS_PROFILE`` names, else
    ``fallback``; returns the name loaded. Any registered profile may be named, hypothesis's own
    ``"default"`` included.

    Raises:
        hypothesis.errors.InvalidArgument: no profile is registered under that name.
    """
    register_profiles()
    chosen = name or os.environ.get(ENV_VARIABLE) or fallback
    settings.load_profile(chosen)
    return chosen
