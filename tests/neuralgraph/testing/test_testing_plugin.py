"""The pytest plugin: the profiles are registered for any test suite, and the project loads its own."""

import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
from hypothesis import settings

from neuralgraph.testing.profiles import PROFILES, load_profile

USER_TEST = '''
from hypothesis import given, settings, strategies as st

from neuralgraph.testing.strategies import permutations

def test_profile():
    assert settings().max_examples == 300 and not settings().derandomize
'''


def test_the_plugin_is_an_installed_entry_point():
    names = {e.value for e in entry_points(group="pytest11")}
    assert "neuralgraph.testing.pytest_plugin" in names, "pip install -e . registers the pytest11 entry point"


def test_a_users_suite_gets_the_thorough_profile(tmp_path):
    (tmp_path / "test_user.py").write_text(USER_TEST)
    env = {k: v for k, v in os.environ.items() if k != "HYPOTHESIS_PROFILE"}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hypothesis-profile=thorough", "test_user.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_project_runs_its_derandomized_profile():
    expected = os.environ.get("HYPOTHESIS_PROFILE", "default")
    current = settings.get_current_profile_name()
    assert current == ("neuralgraph" if expected == "default" else expected)
    if current == "neuralgraph":
        assert settings().derandomize and settings().max_examples == PROFILES["neuralgraph"]["max_examples"]


def test_load_profile_reads_the_environment(monkeypatch):
    before = settings.get_current_profile_name()
    try:
        monkeypatch.setenv("HYPOTHESIS_PROFILE", "explore")
        assert load_profile() == "explore" and not settings().derandomize
        monkeypatch.delenv("HYPOTHESIS_PROFILE")
        assert load_profile() == "neuralgraph" and settings().derandomize
        assert load_profile("thorough") == "thorough" and settings().max_examples == 300
    finally:
        settings.load_profile(before)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_is_registered(name):
    assert settings.get_profile(name).deadline is None
