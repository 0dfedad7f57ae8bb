"""Registered ids: specs in envs/, make / make_vec, checkers on every id, clear checkpoint errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from dream_helpers import family_checkpoint, fitted_checkpoint
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import worldflux_gym  # noqa: F401  (registers the ids)
from worldflux_gym.agents import load_recipe
from worldflux_gym.cli import main as cli_main
from worldflux_gym.core import CheckpointError, ConfigError, SpaceError, families
from worldflux_gym.dream import DreamEnv, DreamVectorEnv, load_specs
from worldflux_gym.dream.registration import (
    ENVS_DIR,
    find_spec,
    make_dream_env,
    make_sb3_vec_env,
    read_spec,
    register_envs,
)
from worldflux_gym.dream.starts import BranchedStarts

REPO = Path(__file__).resolve().parents[1]
REQUIRED_IDS = {
    "WorldFlux/Dreamer-Walker-v1": "Walker2d-v5",
    "WorldFlux/Ensemble-Walker-v3": "Walker2d-v5",
    "WorldFlux/Ensemble-Walker-v5": "Walker2d-v5",
    "WorldFlux/TDMPC2-Walker-v2": "Walker2d-v5",
    "WorldFlux/Dreamer-CartPole-v2": "CartPole-v1",
    "WorldFlux/Ensemble-CartPole-v1": "CartPole-v1",
    "WorldFlux/Ensemble-Pendulum-v0": "Pendulum-v1",
}
ALL_IDS = sorted(spec.id for spec in load_specs())
# Versions removed when a refit replaced them (CHANGELOG.md): making one names the version to use.
REMOVED_IDS = {
    "WorldFlux/Dreamer-Walker-v0": "WorldFlux/Dreamer-Walker-v1",
    "WorldFlux/Ensemble-Walker-v0": "WorldFlux/Ensemble-Walker-v5",
    "WorldFlux/Ensemble-Walker-v2": "WorldFlux/Ensemble-Walker-v5",
    "WorldFlux/Ensemble-Walker-v4": "WorldFlux/Ensemble-Walker-v5",
    "WorldFlux/TDMPC2-Walker-v0": "WorldFlux/TDMPC2-Walker-v2",
    "WorldFlux/TDMPC2-Walker-v1": "WorldFlux/TDMPC2-Walker-v2",
    "WorldFlux/Dreamer-CartPole-v0": "WorldFlux/Dreamer-CartPole-v2",
    "WorldFlux/Dreamer-CartPole-v1": "WorldFlux/Dreamer-CartPole-v2",
    "WorldFlux/Ensemble-CartPole-v0": "WorldFlux/Ensemble-CartPole-v1",
}


def test_specs_declare_the_required_ids_with_both_entry_points():
    specs = {s.id: s for s in load_specs()}
    assert ENVS_DIR.resolve() == (REPO / "envs").resolve()
    for env_id, real_env in REQUIRED_IDS.items():
        assert specs[env_id].real_env == real_env
        registered = gym.spec(env_id)
        assert registered.entry_point and registered.vector_entry_point
        assert registered.max_episode_steps == specs[env_id].max_episode_steps
        gym.spec(real_env)  # the real env exists
    # registering again is harmless; it returns the variants' ids too
    assert set(register_envs()) == {v.id for spec in specs.values() for v in spec.with_variants()}


def test_a_bad_spec_is_a_clear_error(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"id": "Walker-v0", "real_env": "Walker2d-v5"}))
    with pytest.raises(ConfigError, match="lacks"):
        load_specs(tmp_path)
    (tmp_path / "bad.json").write_text(
        json.dumps(
            dict(id="Walker-v0", real_env="x", family="f", preset="p", checkpoint="c", max_episode_steps=1)
        )
    )
    with pytest.raises(ConfigError, match="WorldFlux/<Family>-<Env>-v<N>"):
        read_spec(tmp_path / "bad.json")


def test_a_variant_is_the_ids_weights_with_its_own_defaults_which_the_caller_can_override():
    spec = find_spec("WorldFlux/Ensemble-Walker-Branched-v5")
    base = find_spec("WorldFlux/Ensemble-Walker-v5")
    assert (spec.variant, spec.variant_of) == ("Branched", base.id)
    assert (spec.checkpoint, spec.recipe, spec.validation) == (base.checkpoint, base.recipe, base.validation)
    # the training dream: the id's recipe trains in what the variant gives by default
    training = load_recipe(base.recipe).env_options
    assert {**spec.options, "max_episode_steps": spec.max_episode_steps} == training
    env = gym.make(spec.id)
    dream = env.unwrapped.dream
    assert env.spec.max_episode_steps == 50 and env.spec.vector_entry_point
    assert (dream.uncertainty_penalty, dream.model.config.noise_scale) == (1.0, 0.35)
    assert isinstance(dream.starts, BranchedStarts)
    plain = gym.make(base.id).unwrapped.dream
    assert (plain.uncertainty_penalty, plain.model.config.noise_scale) != (1.0, 0.35)
    assert gym.make(spec.id, uncertainty_penalty=0.0).unwrapped.dream.uncertainty_penalty == 0.0
    assert gym.make(spec.id, max_episode_steps=7).spec.max_episode_steps == 7
    vec = gym.make_vec(spec.id, num_envs=3)
    sb3 = make_sb3_vec_env(spec.id, num_envs=3)
    assert vec.dream.max_episode_steps == sb3.dream.max_episode_steps == 50
    assert vec.dream.uncertainty_penalty == sb3.dream.uncertainty_penalty == 1.0
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env, warn=False)


def test_a_bad_variant_is_a_clear_error(tmp_path):
    spec = dict(
        id="WorldFlux/Ensemble-Pendulum-v0",
        real_env="Pendulum-v1",
        family="ensemble",
        preset="default",
        checkpoint="c",
        max_episode_steps=200,
    )
    for bad in ({"short": {}}, {"Short": 50}):
        (tmp_path / "bad.json").write_text(json.dumps({**spec, "variants": bad}))
        with pytest.raises(ConfigError, match="capitalised name"):
            read_spec(tmp_path / "bad.json")
    (tmp_path / "ok.json").write_text(json.dumps({**spec, "variants": {"Short": {"max_episode_steps": 5}}}))
    assert read_spec(tmp_path / "ok.json").with_variant("Short").id == "WorldFlux/Ensemble-Pendulum-Short-v0"
    with pytest.raises(ConfigError, match=r"no variant 'Long'; its variants: \['Short'\]"):
        read_spec(tmp_path / "ok.json").with_variant("Long")
    (tmp_path / "typo.json").write_text(json.dumps({**spec, "variants": {"Typo": {"penalty": 1.0}}}))
    with pytest.raises(ConfigError, match="unknown dream option"):
        make_dream_env(str(tmp_path / "typo.json"), fitted_checkpoint("Pendulum-v1"), variant="Typo")


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_a_missing_checkpoint_says_how_to_fit_one(env_id, tmp_path):
    from worldflux_gym.dream.registration import make_dream_vector_env

    spec = next(s for s in load_specs() if s.id == env_id)
    copy = tmp_path / spec.path.name  # the same spec, its weights not installed
    copy.write_text(spec.path.read_text())
    with pytest.raises(CheckpointError, match=rf"worldflux-gym fit {spec.real_env} --model {spec.family}:"):
        make_dream_env(str(copy))
    with pytest.raises(CheckpointError, match="checkpoint=DIR"):
        make_dream_vector_env(num_envs=2, spec_path=str(copy))


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_shipped_weights_load_and_pass_both_checkers(env_id):
    spec = next(s for s in load_specs() if s.id == env_id)
    assert spec.weights_present, f"{env_id}: run `python envs/fit_shipped.py` to produce its weights"
    assert spec.validation["real_steps"] > 0 and "open_loop_error" in spec.validation
    env = gym.make(env_id)
    assert env.unwrapped.model.family == spec.family and env.unwrapped.model.preset == spec.preset
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and np.isfinite(reward)
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()


def test_shipped_weights_stay_under_60_mb():
    # issue 19's limit, the same as envs/fit_shipped.py's SHIPPED_LIMIT_MB
    total = sum(f.stat().st_size for f in (ENVS_DIR / "checkpoints").rglob("*") if f.is_file())
    assert total < 60 * 2**20, f"shipped weights take {total / 2**20:.1f} MB"


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_both_checkers_pass_on_every_registered_id(env_id):
    spec = next(s for s in load_specs() if s.id == env_id)
    run = fitted_checkpoint(spec.real_env)
    env = gym.make(env_id, checkpoint=run)
    real = gym.make(spec.real_env)
    assert isinstance(env.unwrapped, DreamEnv)
    # by default an id mirrors its real env: spaces, start distribution, episode limit
    assert env.observation_space == real.observation_space and env.action_space == real.action_space
    assert env.spec.max_episode_steps == real.spec.max_episode_steps == spec.max_episode_steps
    np.testing.assert_allclose(env.reset(seed=3)[0], real.reset(seed=3)[0], rtol=1e-6)
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env, warn=False)
    vec = gym.make_vec(env_id, num_envs=3, checkpoint=run)
    assert isinstance(vec, DreamVectorEnv) and vec.single_observation_space == real.observation_space


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_checkers_pass_with_a_checkpoint_of_the_ids_own_family(env_id):
    spec = next(s for s in load_specs() if s.id == env_id)
    if spec.family not in families():
        pytest.skip(f"the {spec.family} family is not installed")
    env = gym.make(env_id, checkpoint=family_checkpoint(spec.real_env, spec.family))
    real = gym.make(spec.real_env)
    assert env.action_space == real.action_space
    if env.unwrapped.model.capabilities.decodes_observations:
        assert env.observation_space == real.observation_space
    else:  # a latent family: the real env seen through the encoder has the dream's space
        from worldflux_gym.dream import EncodeObservation

        assert EncodeObservation(real, env.unwrapped.model).observation_space == env.observation_space
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env, warn=False)


def test_options_pass_through_make_and_the_horizon_can_be_changed():
    env = gym.make(
        "WorldFlux/Ensemble-Pendulum-v0",
        checkpoint=fitted_checkpoint("Pendulum-v1"),
        max_episode_steps=3,
        deterministic=True,
    )
    env.reset(seed=0)
    truncated = [env.step(np.zeros(1, np.float32))[3] for _ in range(3)]
    assert truncated == [False, False, True]
    assert env.unwrapped.dream.deterministic


def test_a_removed_version_names_the_version_to_use():
    for removed, current in REMOVED_IDS.items():
        assert removed not in ALL_IDS
        with pytest.raises(gym.error.DeprecatedEnv, match=current):
            gym.make(removed)


def test_a_checkpoint_for_another_env_is_rejected(tmp_path):
    with pytest.raises(SpaceError, match="another env"):
        gym.make("WorldFlux/Ensemble-Walker-v3", checkpoint=fitted_checkpoint("Pendulum-v1"))
    with pytest.raises(CheckpointError, match="worldflux-gym fit"):
        gym.make("WorldFlux/Ensemble-Walker-v3", checkpoint=tmp_path)


def test_shipped_weights_are_found_through_the_spec(tmp_path, monkeypatch):
    # a copy of envs/ with weights in place, as the shipping script will leave it
    envs = tmp_path / "envs"
    shutil.copytree(REPO / "envs", envs, ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copytree(fitted_checkpoint("Pendulum-v1"), envs / "checkpoints" / "ensemble_pendulum")
    monkeypatch.setattr("worldflux_gym.dream.registration.ENVS_DIR", envs)
    spec = next(s for s in load_specs() if s.id == "WorldFlux/Ensemble-Pendulum-v0")
    assert spec.weights_present
    env = gym.make("WorldFlux/Ensemble-Pendulum-v0", spec_path=str(spec.path))
    assert env.unwrapped.dream.checkpoint == spec.checkpoint


def test_every_ids_recipe_builds_its_training_dream():
    # a recipe's env_options are checked only when training starts: an option the id's family
    # lacks (noise_scale on a Dreamer) would fail a user's `train-agent ID` minutes into a run
    for spec in load_specs():
        if spec.recipe is None or not spec.weights_present:
            continue
        recipe = load_recipe(spec.recipe)
        venv = make_sb3_vec_env(spec.id, num_envs=2, **recipe.env_options)
        assert venv.reset().shape[0] == 2
        venv.close()


def test_cli_list_shows_ids_real_envs_families_and_weights(capsys):
    assert cli_main(["list"]) == 0
    out = capsys.readouterr().out
    for spec in load_specs():
        line = next(line for line in out.splitlines() if line.startswith(spec.id))
        assert spec.real_env in line and f"{spec.family}:{spec.preset}" in line
        assert ("present" if spec.weights_present else "missing") in line
    assert any(line.startswith("WorldFlux/Ensemble-Walker-Branched-v5") for line in out.splitlines())


@pytest.mark.slow
def test_a_built_wheel_ships_the_specs(tmp_path):
    import zipfile

    # build from a copy, so that the checkout gets no build/ folder; symlinks stay links
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "checkpoints")
    shutil.copytree(REPO / "worldflux_gym", source / "worldflux_gym", symlinks=True, ignore=ignore)
    shutil.copytree(REPO / "envs", source / "envs", ignore=ignore)
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
        ],
        check=True,
    )
    names = zipfile.ZipFile(next(dist.glob("*.whl"))).namelist()
    for spec in load_specs():
        assert f"worldflux_gym/dream/shipped/{spec.path.name}" in names
    assert "worldflux_gym/py.typed" in names
