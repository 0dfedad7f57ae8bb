"""Misusing the Python API: bad options are refused where they are given, with a project error that
subclasses the built-in (or Gymnasium) error a caller would catch (issue 22). Also: Gymnasium's own
checker on a latent dream, MuJoCo rendering after a ``human`` window, and subprocess vector envs
after the parent has stepped a dream.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from dream_helpers import fitted_checkpoint

import worldflux_gym  # noqa: F401  (registers the ids)
from worldflux_gym.core.device import resolve_device
from worldflux_gym.core.errors import (
    AgentSpaceError,
    ConfigError,
    DeviceError,
    OutputExistsError,
    OutputPathError,
    SpaceError,
    UnknownEnvError,
)
from worldflux_gym.dream.registration import make_sb3_vec_env

PENDULUM_DREAM = "WorldFlux/Ensemble-Pendulum-v0"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pendulum_env():
    env = gym.make(PENDULUM_DREAM)
    yield env
    env.close()


@pytest.fixture(scope="module")
def walker_agent(tmp_path_factory) -> Path:
    from stable_baselines3 import PPO

    path = tmp_path_factory.mktemp("agents") / "walker.zip"
    PPO("MlpPolicy", "Walker2d-v5", n_steps=32, batch_size=32, seed=0, device="cpu").save(path)
    return path


# --- the dream env -------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [2**64, -1, 1.5, "3", True])
def test_reset_refuses_seeds_numpy_torch_or_gymnasium_cannot_take(pendulum_env, seed):
    with pytest.raises(ConfigError, match="seed must be an integer from 0 to 2\\*\\*64 - 1"):
        pendulum_env.reset(seed=seed)


def test_reset_takes_every_seed_in_range_and_numpy_integers(pendulum_env):
    for seed in (0, 2**63, 2**64 - 1, np.int64(7), np.uint64(2**64 - 1)):
        obs, _ = pendulum_env.reset(seed=seed)
        assert pendulum_env.observation_space.contains(obs)
    a, _ = pendulum_env.reset(seed=np.int64(7))
    b, _ = pendulum_env.reset(seed=7)
    np.testing.assert_array_equal(a, b)


def test_vector_reset_refuses_a_bad_seed_in_a_list():
    vec = gym.make_vec(PENDULUM_DREAM, num_envs=2)
    with pytest.raises(ConfigError, match="seed\\[1\\] must be an integer"):
        vec.reset(seed=[1, 2**70])
    with pytest.raises(ConfigError, match="seed must be an integer"):
        vec.reset(seed=-3)
    vec.close()


@pytest.mark.parametrize(
    ("num_envs", "shown"), [(1.5, "got 1.5 (float)"), (None, "got None"), (0, "got 0"), (True, "got True")]
)
def test_make_vec_refuses_num_envs_that_are_not_positive_integers(num_envs, shown):
    with pytest.raises(ConfigError, match=re.escape(f"num_envs must be an integer >= 1, {shown}")):
        gym.make_vec(PENDULUM_DREAM, num_envs=num_envs)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("halt_threshold", float("nan"), "halt_threshold must be a finite number >= 0, got nan"),
        ("halt_threshold", -1.0, "halt_threshold must be a finite number >= 0"),
        ("uncertainty_penalty", float("inf"), "uncertainty_penalty must be a finite number >= 0, got inf"),
        ("halt_penalty", float("nan"), "halt_penalty must be a finite number"),
        ("max_episode_steps", 0, "max_episode_steps must be an integer >= 1"),
        ("max_episode_steps", 2.5, "max_episode_steps must be an integer >= 1"),
        ("context", -1, "context must be an integer >= 0"),
        ("device", "banana", "device 'banana' is not a device torch knows"),
        ("real_env", "Nope-v9", "real_env 'Nope-v9' is not an env Gymnasium can make"),
    ],
)
def test_dream_options_are_checked_where_they_are_given(option, value, message):
    # make_vec: gym.make would check max_episode_steps itself (its TimeLimit) before the dream sees it
    with pytest.raises(ConfigError, match=re.escape(message)):
        gym.make_vec(PENDULUM_DREAM, num_envs=1, **{option: value})


def test_an_unknown_option_is_named_with_the_options_there_are():
    for make in (gym.make, lambda env_id, **kw: make_sb3_vec_env(env_id, num_envs=2, **kw)):
        with pytest.raises(
            ConfigError,
            match=r"unknown dream option\(s\) \['uncertainty_penality'\]; "
            r"the options are \[.*'uncertainty_penalty'",
        ):
            make(PENDULUM_DREAM, uncertainty_penality=0.5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_make_on_cuda_without_cuda_is_a_device_error():
    with pytest.raises(DeviceError, match="'cuda': CUDA is not available on this machine"):
        gym.make(PENDULUM_DREAM, device="cuda")


def test_start_bank_of_the_wrong_width_is_a_space_error():
    with pytest.raises(SpaceError, match="start_bank: initial_obs has shape \\(4, 5\\).*shape \\[K, 3\\]"):
        gym.make(PENDULUM_DREAM, starts="bank", start_bank=np.zeros((4, 5), np.float32))
    with pytest.raises(SpaceError, match="initial_obs has shape \\(3,\\)"):
        gym.make(PENDULUM_DREAM, starts="bank", start_bank=np.zeros(3, np.float32))
    env = gym.make(PENDULUM_DREAM, starts="bank", start_bank=np.zeros((4, 3), np.float32))
    assert env.reset(seed=0)[0].shape == (3,)


def test_device_check():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(DeviceError, match="--device 'banana' is not a device torch knows"):
        resolve_device("banana", "--device")
    with pytest.raises(DeviceError, match="must be a device name"):
        resolve_device(3)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(DeviceError, match="cuda"):
        resolve_device(f"cuda:{count}")


def test_cuda_in_a_child_forked_after_cuda_names_the_start_methods_that_work(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: True)
    for device in ("cuda", "auto"):
        with pytest.raises(DeviceError, match="forked after its parent used CUDA.*'spawn' or 'forkserver'"):
            resolve_device(device)


def test_errors_subclass_what_callers_catch():
    assert issubclass(DeviceError, ValueError) and issubclass(UnknownEnvError, gym.error.UnregisteredEnv)
    assert issubclass(OutputExistsError, FileExistsError) and issubclass(OutputPathError, OSError)
    assert issubclass(AgentSpaceError, ValueError)


# --- config, training, agents, audit, video ------------------------------------------------------
def test_model_overrides_must_have_the_fields_type():
    from worldflux_gym import create_world_model

    real = gym.make("Pendulum-v1")
    for bad in ({"hidden": "abc"}, {"hidden": 1.5}, {"hidden": -2}, {"noise_scale": float("nan")}):
        with pytest.raises(ConfigError, match="in ensemble:ci\\) must be"):
            create_world_model("ensemble:ci", real.observation_space, real.action_space, **bad)
    model = create_world_model(
        "ensemble:ci", real.observation_space, real.action_space, hidden=8, noise_scale=1
    )
    assert model.config.hidden == 8 and model.config.noise_scale == 1.0


def test_trainer_refuses_a_nan_learning_rate():
    from worldflux_gym import create_world_model
    from worldflux_gym.training.trainer import TrainerConfig

    real = gym.make("Pendulum-v1")
    model = create_world_model("ensemble:ci", real.observation_space, real.action_space)
    with pytest.raises(ConfigError, match="learning_rate must be a finite number > 0, got nan"):
        TrainerConfig(learning_rate=float("nan")).resolved(model)


@pytest.mark.parametrize("steps", [0, -1, 1.5])
def test_train_agent_refuses_steps_that_are_not_positive(steps, tmp_path):
    from worldflux_gym.agents import train_agent

    with pytest.raises(ConfigError, match="steps must be an integer >= 1"):
        train_agent(PENDULUM_DREAM, tmp_path / "a.zip", steps=steps)
    assert not list(tmp_path.iterdir())


def test_train_agent_does_not_replace_an_agent_unless_told(tmp_path):
    from worldflux_gym.agents import train_agent

    (tmp_path / "a.zip").write_bytes(b"mine")
    with pytest.raises(
        OutputExistsError, match="the agent already exists; pass --overwrite \\(overwrite=True\\)"
    ):
        train_agent(PENDULUM_DREAM, tmp_path / "a.zip", steps=64)
    assert (tmp_path / "a.zip").read_bytes() == b"mine"


def test_evaluate_refuses_zero_episodes_and_an_agent_of_another_env(walker_agent):
    from worldflux_gym.agents import evaluate_agent

    with pytest.raises(ConfigError, match="episodes must be an integer >= 1, got 0"):
        evaluate_agent(walker_agent, env_id="Walker2d-v5", episodes=0)
    with pytest.raises(AgentSpaceError, match="but the env CartPole-v1 has Box\\(4,\\) and Discrete\\(2\\)"):
        evaluate_agent(walker_agent, env_id="CartPole-v1", episodes=1)
    with pytest.raises(UnknownEnvError, match="env_id 'Nope-v9'"):
        evaluate_agent(walker_agent, env_id="Nope-v9", episodes=1)


@pytest.mark.parametrize(
    ("setting", "value"),
    [("episodes", 0), ("episodes", -1), ("horizon", 0), ("real_episodes", 0), ("seed", -1),
     ("confidence", float("nan")), ("start_noise", -0.1), ("cem_population", 2.0)],
)  # fmt: skip
def test_audit_settings_are_checked_in_the_config(setting, value):
    from worldflux_gym.audit import AuditConfig

    with pytest.raises(ConfigError, match=setting):
        AuditConfig(**{setting: value})


def test_audit_refuses_an_agent_of_another_env(walker_agent):
    from worldflux_gym.audit import audit_agent

    with pytest.raises(AgentSpaceError, match="the dream WorldFlux/Ensemble-Pendulum-v0 has Box\\(3,\\)"):
        audit_agent(walker_agent, PENDULUM_DREAM, episodes=2, horizon=3, what_if=False)


def test_audit_in_a_training_variant_names_the_id_to_audit_in(walker_agent):
    from worldflux_gym.audit import audit_agent

    with pytest.raises(ConfigError, match="Audit in WorldFlux/Ensemble-Walker-v5, the same weights"):
        audit_agent(walker_agent, "WorldFlux/Ensemble-Walker-Branched-v5", episodes=2, what_if=False)


def test_write_report_does_not_replace_a_report_unless_told(tmp_path):
    from worldflux_gym.audit import audit_agent, write_report

    def zero(obs):
        return np.zeros((len(obs), 1), np.float32)

    result = audit_agent(zero, PENDULUM_DREAM, episodes=2, horizon=3, what_if=False)
    write_report(result, tmp_path / "r")
    first = (tmp_path / "r" / "report.json").read_bytes()
    with pytest.raises(OutputExistsError, match="already holds a report"):
        write_report(result, tmp_path / "r")
    assert (tmp_path / "r" / "report.json").read_bytes() == first
    write_report(result, tmp_path / "r", overwrite=True)
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        write_report(result, tmp_path / "r" / "report.json")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("fps", -5.0, "fps must be a finite number > 0"), ("fps", float("nan"), "fps must be a finite"),
     ("steps", 0, "steps must be an integer >= 1"), ("width", 0, "width must be an integer >= 1"),
     ("seed", -1, "seed must be an integer")],
)  # fmt: skip
def test_record_dream_checks_its_options_first(option, value, message, tmp_path):
    from worldflux_gym.video import record_dream

    with pytest.raises(ConfigError, match=message):
        record_dream(PENDULUM_DREAM, tmp_path / "v.mp4", **{option: value})
    assert not list(tmp_path.iterdir())


def test_record_dream_refuses_other_envs_agents_and_existing_videos(walker_agent, tmp_path):
    from worldflux_gym.video import record_dream

    with pytest.raises(AgentSpaceError, match="record it in a dream of the env it was trained for"):
        record_dream(PENDULUM_DREAM, tmp_path / "v.gif", agent=walker_agent, steps=2)
    (tmp_path / "old.gif").write_bytes(b"mine")
    with pytest.raises(OutputExistsError, match="the video already exists"):
        record_dream(PENDULUM_DREAM, tmp_path / "old.gif", steps=2)
    assert (tmp_path / "old.gif").read_bytes() == b"mine"
    record_dream(PENDULUM_DREAM, tmp_path / "old.gif", steps=2, overwrite=True)
    assert (tmp_path / "old.gif").read_bytes() != b"mine"
    with pytest.raises(OutputPathError, match="/dev/null is a device"):
        record_dream(PENDULUM_DREAM, Path("/dev/null"), steps=2)


# --- Gymnasium's checker, rendering after a window, subprocesses ----------------------------------
def test_gymnasiums_checker_passes_on_the_latent_dream_render_check_included():
    from gymnasium.utils.env_checker import check_env

    latent = fitted_checkpoint("Walker2d-v5", "tdmpc2:ci", fit_steps=20)  # no observation decoder
    env = gym.make("WorldFlux/TDMPC2-Walker-v2", checkpoint=str(latent))
    assert env.observation_space.shape == (32,)  # the ci preset's latent
    assert env.unwrapped.metadata["render_modes"] == []  # nothing to draw, and it says so
    check_env(env.unwrapped)  # no skip_render_check
    env.close()


def _run_python(code: str, timeout: float, **env_vars: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_vars}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH")] if p)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_mujoco_renders_after_a_human_window_on_a_machine_without_display():
    """SDL's offscreen driver shares MuJoCo's EGL display: a closed ``human`` window used to
    terminate it, and every later ``rgb_array`` MuJoCo render failed with ``EGLError``."""
    window_py = REPO / "worldflux_gym" / "dream" / "window.py"
    done = _run_python(
        f"""
        import importlib.util, warnings
        import gymnasium as gym
        import numpy as np

        # window.py alone (importing the package would import torch: seconds for nothing here)
        spec = importlib.util.spec_from_file_location("window", "{window_py}")
        window_module = importlib.util.module_from_spec(spec); spec.loader.exec_module(window_module)

        kept = gym.make("Walker2d-v5", render_mode="rgb_array"); kept.reset(seed=0); kept.render()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            window = window_module.FrameWindow("test", fps=None)
            window.show(np.zeros((32, 48, 3), np.uint8)); window.show(np.zeros((40, 40, 3), np.uint8))
            window.close()
        assert any("shows nothing" in str(w.message) for w in caught), [str(w.message) for w in caught]
        kept.unwrapped.mujoco_renderer.viewer.make_context_current()
        assert kept.render().mean() > 10  # a context made before the window still draws
        fresh = gym.make("Walker2d-v5", render_mode="rgb_array"); fresh.reset(seed=0)
        assert fresh.render().mean() > 10  # and a new one can be made
        print("rendered")
        """,
        timeout=120,
        SDL_VIDEODRIVER="offscreen",
        MUJOCO_GL="egl",
    )
    assert done.returncode == 0 and "rendered" in done.stdout, done.stderr[-3000:]


def test_subprocess_vector_envs_do_not_hang_after_the_parent_stepped_a_dream():
    """Forked children inherit torch's OpenMP pool dead: their first parallel op used to hang
    (Gymnasium's async vector env forks by default on Linux; so does SB3's with start_method='fork')."""
    done = _run_python(
        f"""
        import gymnasium as gym, numpy as np, torch
        import worldflux_gym
        from stable_baselines3.common.vec_env import SubprocVecEnv
        torch.set_num_threads(2)  # a pool of threads in the parent: what forks break
        ID = "{PENDULUM_DREAM}"
        env = gym.make(ID); env.reset(seed=0)
        for _ in range(3):
            env.step(env.action_space.sample())
        for vec in (gym.make_vec(ID, num_envs=2, vectorization_mode="async"),
                    SubprocVecEnv([lambda: gym.make(ID)] * 2, start_method="fork")):
            vec.reset()
            for _ in range(3):
                vec.step(np.zeros((2, 1), np.float32))
            vec.close()
            print("stepped", type(vec).__name__)
        """,
        timeout=90,
    )
    assert done.returncode == 0 and done.stdout.count("stepped") == 2, done.stderr[-3000:]
