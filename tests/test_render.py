"""render_mode on dream envs: simulator-drawn state models, decoded pixel models, refusals, windows,
Gymnasium's RecordVideo, vector envs, and several MuJoCo renderers in one process."""

from __future__ import annotations

import functools
import gc
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from dream_helpers import constant_model, fitted_checkpoint
from gymnasium.wrappers import RecordVideo

import worldflux_gym  # noqa: F401  (registers the WorldFlux/* ids)
from worldflux_gym import create_world_model
from worldflux_gym.core import ConfigError, families
from worldflux_gym.data.collect import resize_frame
from worldflux_gym.dream import DreamEnv
from worldflux_gym.dream.frames import resample
from worldflux_gym.dream.simulator import (
    SimulatorCanvas,
    close_render_env,
    make_render_env,
    render_frame,
)

_ROOT = Path(tempfile.mkdtemp(prefix="worldflux-video-tests-"))
IMAGE = 64


def has_content(frame: np.ndarray) -> bool:
    """A real picture: not blank, not one flat colour."""
    return frame.std() > 10.0


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@functools.cache
def real_pendulum_frames(count: int = 4) -> np.ndarray:
    """Rendered Pendulum frames at the pixel model's size: the start bank of a pixel dream."""
    env = gym.make("Pendulum-v1", render_mode="rgb_array")
    frames = []
    for seed in range(count):
        env.reset(seed=seed)
        frames.append(resize_frame(env.render(), IMAGE))
    env.close()
    return np.stack(frames)


@functools.cache
def pixel_checkpoint() -> Path:
    """A Dreamer (CNN path) checkpoint over 64x64 Pendulum frames; unfitted: rendering needs no skill."""
    torch.manual_seed(0)
    space = gym.spaces.Box(0, 255, (IMAGE, IMAGE, 3), np.uint8)
    model = create_world_model("dreamer:ci", space, gym.make("Pendulum-v1").action_space)
    return model.eval().save_pretrained(_ROOT / "dreamer-pixels")


@functools.cache
def latent_checkpoint() -> Path:
    real = gym.make("Pendulum-v1")
    torch.manual_seed(0)
    model = create_world_model("tdmpc2:ci", real.observation_space, real.action_space)
    return model.eval().save_pretrained(_ROOT / "tdmpc2-latent")


# --- state models: the real simulator in the predicted state -----------------------------------
@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_classic_control_dream_frame_is_the_real_envs_frame_of_the_same_state(env_id):
    env = DreamEnv(fitted_checkpoint(env_id), real_env=env_id, render_mode="rgb_array")
    real = gym.make(env_id, render_mode="rgb_array")
    obs, _ = env.reset(seed=3)
    real_obs, _ = real.reset(seed=3)
    np.testing.assert_allclose(obs, real_obs, rtol=1e-6)
    start = env.render()
    assert start.dtype == np.uint8 and start.ndim == 3 and has_content(start)
    np.testing.assert_array_equal(start, real.render())  # the same state draws the same picture
    for _ in range(10):
        action = env.action_space.sample()
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    moved = env.render()
    assert not np.array_equal(moved, start), "the dream moved, its picture must too"
    env.close()
    real.close()


def test_pendulum_angle_comes_from_cos_and_sin():
    canvas = SimulatorCanvas("Pendulum-v1")
    theta = 2.5  # past pi/2: atan(sin/cos) alone would put it on the wrong side
    canvas.draw(np.array([np.cos(theta), np.sin(theta), 0.3]))
    assert canvas.unwrapped.state[0] == pytest.approx(theta)
    canvas.close()


def test_walker_pose_is_set_from_qpos_and_qvel_and_x_is_integrated():
    env_id = "Walker2d-v5"
    model = constant_model(env_id)  # the observation never changes: constant velocities
    env = DreamEnv(
        model, real_env=env_id, render_mode="rgb_array", render_options={"width": 96, "height": 96}
    )
    obs, _ = env.reset(seed=0)
    canvas = env._renderer.canvas
    frames = [env.render()]
    data = canvas.unwrapped.data
    np.testing.assert_allclose(data.qpos[1:], obs[:8], rtol=1e-5)
    np.testing.assert_allclose(data.qvel, obs[8:], rtol=1e-5)
    assert data.qpos[0] == 0.0
    for _ in range(5):
        env.step(np.zeros(6, np.float32))
        frames.append(env.render())
    assert data.qpos[0] == pytest.approx(5 * obs[8] * canvas.dt, rel=1e-5)  # x += qvel[0] * dt per step
    assert all(has_content(f) for f in frames)
    env.reset(seed=1)
    env.render()
    assert data.qpos[0] == 0.0, "a new episode starts at x = 0 again"
    env.close()


def test_unsupported_env_refuses_render_mode_at_construction():
    model = create_world_model("tiny-mlp:ci", *_spaces("Acrobot-v1"))
    with pytest.raises(ConfigError, match="cannot be drawn.*--compare"):
        DreamEnv(model, real_env="Acrobot-v1", render_mode="rgb_array")
    with pytest.raises(ConfigError, match="render_mode must be one of"):
        DreamEnv(model, real_env="Acrobot-v1", render_mode="ansi")
    DreamEnv(model, real_env="Acrobot-v1").close()  # without a render mode nothing is drawn


# --- pixel models and latent models ------------------------------------------------------------
def test_pixel_model_shows_its_decoded_frame_upscaled_with_a_resampler():
    env = DreamEnv(
        pixel_checkpoint(),
        starts="bank",
        start_bank=real_pendulum_frames(),
        render_mode="rgb_array",
        render_options={"width": 192, "height": 192},
    )
    obs, _ = env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (192, 192, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame, resample(obs, 192, 192))
    # a resampler, not a tiling: shrinking the view back gives the observation again
    assert mean_abs_diff(resize_frame(frame, IMAGE), obs) < 4.0
    obs, *_ = env.step(env.action_space.sample())
    np.testing.assert_array_equal(env.render(), resample(obs, 192, 192))  # now the decoded frame
    env.close()


@pytest.mark.skipif("tdmpc2" not in families(), reason="the tdmpc2 family is not installed")
def test_latent_model_refuses_render_mode_and_names_the_compare_video():
    with pytest.raises(ConfigError, match="decodes no observations.*--compare"):
        DreamEnv(latent_checkpoint(), real_env="Pendulum-v1", render_mode="rgb_array")


# --- human mode, RecordVideo, vector envs ------------------------------------------------------
def test_human_mode_shows_every_step_in_a_pygame_window():
    import pygame

    env = DreamEnv(fitted_checkpoint("Pendulum-v1"), real_env="Pendulum-v1", render_mode="human")
    env._renderer.fps = None  # no frame pacing in tests
    env.reset(seed=0)
    assert env.render() is None  # human mode shows, and returns nothing
    window = env._renderer.window
    shown = pygame.surfarray.array3d(pygame.display.get_surface()).swapaxes(0, 1)
    np.testing.assert_array_equal(shown, env._renderer.frames([0])[0])
    before = shown.copy()
    for _ in range(3):
        env.step(np.array([2.0], np.float32))
    after = pygame.surfarray.array3d(pygame.display.get_surface()).swapaxes(0, 1)
    assert mean_abs_diff(after, before) > 0.1, "step() must redraw the window"
    env.close()
    assert window.closed


def test_gymnasiums_record_video_records_a_dream(tmp_path):
    env = gym.make(
        "WorldFlux/Ensemble-Pendulum-v0",
        checkpoint=fitted_checkpoint("Pendulum-v1", "ensemble:ci"),
        render_mode="rgb_array",
        max_episode_steps=12,
    )
    env = RecordVideo(env, str(tmp_path), episode_trigger=lambda episode: True, disable_logger=True)
    env.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        done = terminated or truncated
    frames = list(env.recorded_frames)
    assert len(frames) == 13  # the start and 12 steps
    assert all(has_content(f) for f in frames) and not np.array_equal(frames[0], frames[-1])
    assert env.frames_per_sec == 30  # the real Pendulum's frame rate, from the dream's metadata
    env.close()
    videos = sorted(tmp_path.glob("*.mp4"))
    assert len(videos) == 1
    import imageio.v3 as iio

    decoded = list(iio.imiter(videos[0]))
    assert len(decoded) >= 12 and decoded[0].shape == frames[0].shape


def test_vector_env_renders_one_frame_per_env():
    envs = gym.make_vec(
        "WorldFlux/Ensemble-Pendulum-v0",
        num_envs=3,
        checkpoint=fitted_checkpoint("Pendulum-v1", "ensemble:ci"),
        render_mode="rgb_array",
    )
    obs, _ = envs.reset(seed=0)
    frames = envs.render()
    assert isinstance(frames, tuple) and len(frames) == 3
    single = SimulatorCanvas("Pendulum-v1")
    for i in range(3):
        np.testing.assert_array_equal(frames[i], single.draw(obs[i]))
    assert mean_abs_diff(frames[0], frames[1]) > 0.1  # three different starts
    envs.close()
    single.close()


def test_vector_env_in_human_mode_shows_a_grid_of_its_envs():
    import pygame

    envs = gym.make_vec(
        "WorldFlux/Ensemble-Pendulum-v0",
        num_envs=2,
        checkpoint=fitted_checkpoint("Pendulum-v1", "ensemble:ci"),
        render_mode="human",
    )
    envs.reset(seed=0)
    assert envs.render() is None
    assert pygame.display.get_surface().get_size() == (2 * 500 + 4, 500)  # two frames side by side
    envs.close()


def test_dream_env_passes_gymnasiums_render_check():
    from gymnasium.utils.env_checker import check_env

    env = DreamEnv(fitted_checkpoint("Pendulum-v1"), real_env="Pendulum-v1", render_mode="rgb_array")
    check_env(env)
    env.close()


# --- several MuJoCo renderers in one process ---------------------------------------------------
def test_several_mujoco_renderers_each_draw_their_own_state():
    """Each canvas makes its GL context current before drawing; without it frames come out wrong."""
    size = {"width": 96, "height": 96}
    standing, fallen = _walker_states()
    a = SimulatorCanvas("Walker2d-v5", **size)
    b = SimulatorCanvas("Walker2d-v5", **size)
    alone_a = a.draw(standing)
    alone_b = b.draw(fallen)
    real = make_render_env("Walker2d-v5", **size)  # the real env of a --compare video, a third context
    alone_real = render_frame(real)
    frames = {}
    for _ in range(2):  # interleaved, twice, so every draw follows another renderer's
        frames["a"] = a.draw(standing)
        frames["b"] = b.draw(fallen)
        frames["real"] = render_frame(real)
    for name, frame in frames.items():
        assert has_content(frame), f"{name}'s frame is blank"
    np.testing.assert_array_equal(frames["a"], alone_a)
    np.testing.assert_array_equal(frames["b"], alone_b)
    np.testing.assert_array_equal(frames["real"], alone_real)
    assert mean_abs_diff(frames["a"], frames["b"]) > 2.0, "two walkers in different states look different"
    # closing one renderer, and collecting it, leaves the others' GL objects alone
    b.close()
    a.draw(standing)  # a's context is current when b's leftovers are collected
    del b
    gc.collect()
    np.testing.assert_array_equal(a.draw(standing), alone_a)
    a.close()
    close_render_env(real)


def _walker_states() -> tuple[np.ndarray, np.ndarray]:
    env = gym.make("Walker2d-v5")
    standing, _ = env.reset(seed=0)
    fallen = standing.copy()
    fallen[0] = 0.3  # torso height: near the floor
    fallen[1] = 1.4  # torso angle: lying
    env.close()
    return standing, fallen


def _spaces(env_id: str):
    env = gym.make(env_id)
    spaces = env.observation_space, env.action_space
    env.close()
    return spaces
