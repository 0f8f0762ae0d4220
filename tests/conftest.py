"""Shared test fixtures: where ``../shared`` (reference graphs, data, checkpoints) lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO = Path(__file__).resolve().parents[1]

# The tests run many tiny models: intra-op threads only add synchronisation (10x slower verify
# runs were seen on a busy 2-core machine), and results do not depend on the thread count.
torch.set_num_threads(1)


def shared_path() -> Path:
    return Path(os.environ.get("NEURALGRAPH_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_path()
    if not (path / "reference").is_dir():
        pytest.skip(f"reference files not found at {path} (set NEURALGRAPH_SHARED to the shared/ folder)")
    return path
