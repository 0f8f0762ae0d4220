"""Fixtures for the nowcast tests.

The tests use small graphs (at most a few thousand edges), for which intra-op parallelism only
adds synchronisation cost; on a busy machine every parallel region can stall for a scheduler
time slice. Running them on one thread keeps them fast and does not change what they check.
"""

from __future__ import annotations

from collections.abc import Iterator

from pathlib import Path

import pytest
import torch

import neuralgraph as ng
from neuralgraph.examples import fm16


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def inputs(reference: Path) -> dict:
    """The authors' FM/16 NiNo test inputs (``nino_inputs_convnet_fm16.pt``, vendored)."""
    return torch.load(reference / "nino_inputs_convnet_fm16.pt", weights_only=True)


@pytest.fixture(scope="module")
def fm16_graph() -> ng.NeuralGraph:
    return ng.convert(fm16())
