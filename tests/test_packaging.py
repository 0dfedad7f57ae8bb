"""What a user gets from the package itself: a light import, registration, type hints, license,
changelog, and a README whose set-up commands are the ones CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

from worldflux_gym.dream.registration import load_specs

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("stable_baselines3", "moviepy", "pygame")


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_import_loads_no_agent_video_or_window_library():
    code = f"import sys, worldflux_gym; print([m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_sb3_adapter_still_imports_from_the_dream_package():
    code = (
        "import sys; from worldflux_gym.dream import DreamSB3VecEnv; "
        "from stable_baselines3.common.vec_env import VecEnv; print(issubclass(DreamSB3VecEnv, VecEnv))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"


def test_register_envs_is_the_documented_way_to_register():
    import worldflux_gym

    gym.register_envs(worldflux_gym)  # Gymnasium's idiom: importing the module registers its ids
    ids = {spec.id for spec in load_specs()}
    assert ids and ids <= set(gym.registry)
    for env_id in ids:
        spec = gym.spec(env_id)
        assert spec.entry_point and spec.vector_entry_point


def test_the_package_is_typed_and_ships_its_marker():
    assert (REPO / "worldflux_gym" / "py.typed").is_file()
    pyproject = _pyproject()
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["worldflux_gym"]
    assert pyproject["tool"]["mypy"]["files"]


def test_the_license_file_is_the_one_pyproject_names():
    pyproject = _pyproject()
    assert pyproject["project"]["license"]["text"] == "MIT"
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "the worldflux-gym authors" in text


def test_the_changelog_has_a_version_history_for_every_shipped_id():
    changelog = (REPO / "CHANGELOG.md").read_text()
    for spec in load_specs():
        assert f"`{spec.id}`" in changelog, f"CHANGELOG.md has no entry for {spec.id}"


def test_the_readme_set_up_commands_are_the_ones_ci_runs():
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"^python3 -m venv \.venv .*$", readme, flags=re.MULTILINE)
    demo = "pip install -e . && python examples/demo.py"
    tests = 'pip install -e ".[dev]" && pytest'
    assert any(c.endswith(demo) for c in commands), commands
    test_command = next(c for c in commands if c.endswith(tests))
    assert test_command in (REPO / ".ci" / "run").read_text()
    assert all("pip install torch==2.13.0 &&" in c for c in commands)  # CPU torch first, never unpinned
