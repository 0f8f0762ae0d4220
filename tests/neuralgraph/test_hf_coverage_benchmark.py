"""The coverage benchmark's fast subset runs in CI: the same script users run for the full table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "hf_coverage.py"


def test_quick_subset_converts_and_verifies():
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--jobs", "2", "--timeout", "240"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "**6 of 6 types have at least one head that converts and verifies" in out.stdout, out.stdout[-3000:]
