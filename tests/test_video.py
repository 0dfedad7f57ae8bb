"""record_dream and `worldflux-gym video`: files, same start, same actions, overlays, pixel and latent
models, agents."""

from __future__ import annotations

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest
from dream_helpers import fitted_checkpoint
from test_render import latent_checkpoint, mean_abs_diff, pixel_checkpoint

from worldflux_gym.cli import main
from worldflux_gym.core import ConfigError, families
from worldflux_gym.dream import DreamEnv
from worldflux_gym.dream.frames import draw_text
from worldflux_gym.video import record_dream

PENDULUM = 500  # Pendulum draws 500 x 500 frames
GAP = 4  # black columns between panels


def frames_of(path) -> list[np.ndarray]:
    return list(iio.imiter(path))


def test_compare_video_starts_both_sides_from_the_same_real_reset(tmp_path):
    out = record_dream(
        fitted_checkpoint("Pendulum-v1", "ensemble:ci"),
        tmp_path / "dream.mp4",
        real_env="Pendulum-v1",
        steps=8,
        compare=True,
        seed=5,
    )
    frames = frames_of(out)
    assert len(frames) == 8
    assert frames[0].shape == (PENDULUM, 2 * PENDULUM + GAP, 3)
    real, dream = frames[0][:, :PENDULUM], frames[0][:, PENDULUM + GAP :]
    below_overlay = slice(120, None)
    # the same start state is drawn on both sides (up to H.264's loss)
    assert mean_abs_diff(real[below_overlay], dream[below_overlay]) < 1.0
    # ... and it is the real env's reset(seed=5)
    env = gym.make("Pendulum-v1", render_mode="rgb_array")
    env.reset(seed=5)
    assert mean_abs_diff(real[below_overlay], env.render()[below_overlay]) < 1.0
    # the overlay is there: the top-left corner differs from the bare frame
    assert mean_abs_diff(real[:40, :150], env.render()[:40, :150]) > 20


def test_same_actions_reach_the_dream_and_the_real_env(tmp_path, monkeypatch):
    taken = {"dream": [], "real": []}

    class Agent:  # anything with SB3's predict() signature
        def predict(self, obs, deterministic=True):
            return np.array([1.5 if len(taken["dream"]) % 2 else -1.5], np.float32), None

    from worldflux_gym.dream.core import DreamBatch
    from worldflux_gym.video import record as record_module

    real_step = record_module._RealSide.step
    dream_step = DreamBatch.step

    def spy_real(self, action):
        taken["real"].append(float(np.asarray(action).reshape(-1)[0]))
        return real_step(self, action)

    def spy_dream(self, actions):
        taken["dream"].append(float(actions.reshape(-1)[0]))
        return dream_step(self, actions)

    monkeypatch.setattr(record_module._RealSide, "step", spy_real)
    monkeypatch.setattr(DreamBatch, "step", spy_dream)
    record_dream(
        fitted_checkpoint("Pendulum-v1", "ensemble:ci"),
        tmp_path / "dream.mp4",
        real_env="Pendulum-v1",
        agent=Agent(),
        steps=6,
        compare=True,
    )
    assert taken["dream"] == taken["real"] == [-1.5, 1.5, -1.5, 1.5, -1.5]  # 5 steps after the start


def test_dream_alone_as_gif_and_from_a_dream_env(tmp_path):
    env = DreamEnv(fitted_checkpoint("CartPole-v1"), real_env="CartPole-v1", max_episode_steps=4)
    out = record_dream(env, tmp_path / "cartpole.gif", steps=7)
    frames = frames_of(out)
    assert len(frames) == 7  # episodes of 4 steps: start, 4 steps, the next start, 1 step
    assert frames[0].shape[:2] == (400, 600)
    with pytest.raises(ConfigError, match=".mp4 or .gif"):
        record_dream(env, tmp_path / "dream.avi", steps=3)


def test_pixel_model_compare_shows_context_then_imagination_and_the_error(tmp_path):
    context, size = 3, 96
    out = record_dream(
        pixel_checkpoint(),
        tmp_path / "pixels.mp4",
        real_env="Pendulum-v1",
        steps=8,
        compare=True,
        context=context,
        width=size,
        height=size,
        overlay=False,  # bare panels: exact comparisons
    )
    frames = frames_of(out)
    assert len(frames) == 8
    assert frames[0].shape == (size, 3 * size + 2 * GAP, 3)  # real | dream | error
    first = frames[0]
    real, dream = first[:, :size], first[:, size + GAP : 2 * size + GAP]
    error = first[:, 2 * (size + GAP) :]
    rows = slice(None)
    assert mean_abs_diff(real[rows], dream[rows]) < 2.0, "context frames are the real frames"
    assert error[rows].mean() < 2.0
    last = frames[-1]  # imagined by an unfitted model: far from the real frame
    assert mean_abs_diff(last[rows, :size], last[rows, size + GAP : 2 * size + GAP]) > 5.0
    assert last[rows, 2 * (size + GAP) :].mean() > 5.0
    grid = iio.imread(tmp_path / "pixels_openloop.png")
    assert grid.shape[0] == 3 * 64 + 2 * GAP  # rows: real, model, error at the model's 64 x 64


@pytest.mark.skipif("tdmpc2" not in families(), reason="the tdmpc2 family is not installed")
def test_latent_model_records_only_with_compare(tmp_path):
    with pytest.raises(ConfigError, match="--compare"):
        record_dream(latent_checkpoint(), tmp_path / "x.mp4", real_env="Pendulum-v1", steps=3)
    out = record_dream(latent_checkpoint(), tmp_path / "x.mp4", real_env="Pendulum-v1", steps=3, compare=True)
    assert frames_of(out)[0].shape == (PENDULUM, PENDULUM, 3)  # the real env alone, with the overlay


def test_cli_video_with_an_sb3_agent(tmp_path, capsys):
    from stable_baselines3 import PPO

    agent = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, seed=0, device="cpu")
    agent.save(tmp_path / "agent.zip")
    out = tmp_path / "cli.mp4"
    args = ["video", str(fitted_checkpoint("Pendulum-v1", "ensemble:ci")), "--real-env", "Pendulum-v1"]
    code = main(
        [*args, "--agent", str(tmp_path / "agent.zip"), "--steps", "4", "--compare", "--out", str(out)]
    )
    assert code == 0 and len(frames_of(out)) == 4
    assert str(out) in capsys.readouterr().out
    assert main([*args, "--steps", "4", "--out", str(tmp_path / "x.webm")]) == 2
    assert ".mp4 or .gif" in capsys.readouterr().err


def test_overlay_text_is_drawn_and_readable_on_white():
    white = np.full((100, 200, 3), 255, np.uint8)
    out = draw_text(white, ["step 3", "reward -1.20"])
    assert out.shape == white.shape and out.dtype == np.uint8
    box = out[4:40, 4:80]
    assert box.min() < 120 and box.max() > 200  # a dark box with light glyphs on it
    np.testing.assert_array_equal(out[60:, 100:], white[60:, 100:])  # nothing else touched
