"""The README's examples run as written: every ```python block, each in a fresh namespace.

Each block runs in a temporary working directory (the PCA example writes its figure there), on
one torch thread, offline. The first ```bash block (the set-up commands CI runs) is checked to be
exactly two commands.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _blocks(lang: str) -> list[str]:
    return [body for kind, body in _FENCE.findall(README.read_text(encoding="utf-8")) if kind == lang]


def _title(code: str) -> str:
    first = code.strip().splitlines()[0]
    return re.sub(r"\W+", "_", first)[:40]


PYTHON_BLOCKS = _blocks("python")


def test_readme_has_examples():
    assert len(PYTHON_BLOCKS) >= 4


def test_setup_block_is_first_and_has_two_commands():
    kinds = [kind for kind, _ in _FENCE.findall(README.read_text(encoding="utf-8"))]
    assert kinds[0] == "bash"
    commands = [line for line in _blocks("bash")[0].splitlines() if line.strip()]
    assert commands == ['pip install -e ".[test]" && nowcast compare --task digits --threads 1', "python -m pytest -q"]


def test_readme_is_short():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250


@pytest.mark.parametrize("code", PYTHON_BLOCKS, ids=[f"{i}-{_title(c)}" for i, c in enumerate(PYTHON_BLOCKS)])
def test_readme_python_block(code, tmp_path, monkeypatch):
    if "transformers" in code:
        pytest.importorskip("transformers")
    if "hypothesis" in code:
        pytest.importorskip("hypothesis")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile(code, f"README.md:{_title(code)}", "exec"), {"__name__": "readme_example"})  # noqa: S102 (the README's own code)
    finally:
        torch.set_num_threads(threads)
