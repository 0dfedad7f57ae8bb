"""DreamEnv: spaces, starts, stepping semantics, seeding, uncertainty options and bad input."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from dream_helpers import constant_model, fitted_checkpoint, real_buffer
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from worldflux_gym import create_world_model
from worldflux_gym.core import Capabilities, ConfigError, families
from worldflux_gym.core.checkpoint import from_pretrained
from worldflux_gym.dream import (
    ActionError,
    DreamEnv,
    DreamResetNeeded,
    EncodeObservation,
    ModelDivergenceError,
    save_starts,
)
from worldflux_gym.dream.core import DreamClosedError

ENVS = ["Pendulum-v1", "CartPole-v1"]


@pytest.mark.parametrize("env_id", ENVS)
def test_spaces_mirror_the_real_env_and_both_checkers_pass(env_id):
    real = gym.make(env_id)
    env = DreamEnv(fitted_checkpoint(env_id), real_env=env_id, max_episode_steps=50)
    assert env.observation_space == real.observation_space
    assert env.action_space == real.action_space
    check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)
    env.close()


def test_ensemble_dream_passes_both_checkers_and_reports_uncertainty():
    env = DreamEnv(fitted_checkpoint("Pendulum-v1", "ensemble:ci"), real_env="Pendulum-v1")
    check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    assert np.isfinite(info["uncertainty"]) and info["uncertainty"] >= 0


def test_reset_starts_from_the_real_envs_own_reset():
    env = DreamEnv(fitted_checkpoint("Pendulum-v1"), real_env="Pendulum-v1")
    real = gym.make("Pendulum-v1")
    for seed in (0, 7):
        obs, _ = env.reset(seed=seed)
        real_obs, _ = real.reset(seed=seed)
        np.testing.assert_allclose(obs, real_obs, rtol=1e-6)
    # unseeded resets continue the real env's random stream: different starts
    assert not np.allclose(env.reset()[0], env.reset()[0])


def test_bank_starts_come_from_the_checkpoints_starts_file(tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(fitted_checkpoint("Pendulum-v1"), run)
    bank = np.stack([gym.make("Pendulum-v1").reset(seed=i)[0] for i in range(5)])
    save_starts(run, bank)
    env = DreamEnv(run, starts="bank")
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        assert np.isclose(bank, obs, rtol=1e-6).all(axis=1).any()
    with pytest.raises(ConfigError, match="branched"):
        DreamEnv(run, starts="branched")
    # a model loaded beforehand finds the same bank in its directory
    loaded = DreamEnv(from_pretrained(run), starts="bank")
    assert np.isclose(bank, loaded.reset(seed=0)[0], rtol=1e-6).all(axis=1).any()


def test_branched_starts_burn_in_recurrent_models():
    buffer = real_buffer("Pendulum-v1")
    model = create_world_model("tiny-mlp:ci", *_spaces("Pendulum-v1"))
    calls = []
    original_observe = model.observe

    def observe(obs, action):
        calls.append((obs.shape, action.shape))
        return original_observe(obs, action)

    model.observe = observe
    type(model).capabilities = Capabilities(True, True, True, False, recurrent=True)
    try:
        env = DreamEnv(model, starts="branched", buffer=buffer, context=4)
        obs, _ = env.reset(seed=3)
    finally:
        type(model).capabilities = Capabilities(True, True, True, False, recurrent=False)
    assert calls == [((1, 5, 3), (1, 4, 1))]
    # the start is a real mid-episode observation from the training data
    assert np.isclose(buffer.obs, obs, rtol=1e-6).all(axis=1).any()


def _spaces(env_id):
    env = gym.make(env_id)
    return env.observation_space, env.action_space


def _episode(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    steps = [obs]
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        steps.append((obs, reward, terminated, truncated))
        if terminated or truncated:
            break
    return steps


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    actions=st.lists(st.floats(-2.0, 2.0, width=32), min_size=1, max_size=20),
)
def test_same_seed_same_episode_obs_in_space_reward_finite(seed, actions):
    env = _ENSEMBLE_ENV()
    actions = [np.array([a], dtype=np.float32) for a in actions]
    first, second = _episode(env, seed, actions), _episode(env, seed, actions)
    np.testing.assert_array_equal(first[0], second[0])
    for a, b in zip(first[1:], second[1:]):
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:] == b[1:]
    for obs, reward, *_ in first[1:]:
        assert env.observation_space.contains(obs)
        assert np.isfinite(reward)


def _ensemble_env_factory():
    cache = {}

    def get():
        if "env" not in cache:
            cache["env"] = DreamEnv(fitted_checkpoint("Pendulum-v1", "ensemble:ci"), real_env="Pendulum-v1")
        return cache["env"]

    return get


_ENSEMBLE_ENV = _ensemble_env_factory()


def test_termination_is_sampled_from_the_probability_or_thresholded():
    model = constant_model("Pendulum-v1", continue_logit=-1.0)  # termination probability 0.731
    env, hits = DreamEnv(model, real_env="Pendulum-v1"), []
    for seed in range(400):
        env.reset(seed=seed)
        hits.append(env.step(np.zeros(1, np.float32))[2])
    assert 0.66 < np.mean(hits) < 0.80
    env = DreamEnv(model, real_env="Pendulum-v1", deterministic=True)
    env.reset(seed=0)
    assert env.step(np.zeros(1, np.float32))[2] is True
    env = DreamEnv(
        constant_model("Pendulum-v1", continue_logit=1.0), real_env="Pendulum-v1", deterministic=True
    )
    env.reset(seed=0)
    assert env.step(np.zeros(1, np.float32))[2] is False


def test_horizon_truncates_and_stepping_after_the_end_raises():
    env = DreamEnv(constant_model("Pendulum-v1", reward=0.5), real_env="Pendulum-v1", max_episode_steps=3)
    env.reset(seed=0)
    flags = [env.step(np.zeros(1, np.float32))[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    with pytest.raises(DreamResetNeeded, match="reset"):
        env.step(np.zeros(1, np.float32))
    env.reset()
    assert env.step(np.zeros(1, np.float32))[1] == pytest.approx(0.5)


def test_mopo_penalty_and_morel_halting():
    run = fitted_checkpoint("Pendulum-v1", "ensemble:ci")
    action = np.array([0.5], np.float32)
    plain = DreamEnv(run, real_env="Pendulum-v1")
    penalised = DreamEnv(run, real_env="Pendulum-v1", uncertainty_penalty=2.0)
    plain.reset(seed=5)
    penalised.reset(seed=5)
    _, reward, _, _, info = plain.step(action)
    _, reward_pen, _, _, info_pen = penalised.step(action)
    assert info["uncertainty"] > 0
    assert reward_pen == pytest.approx(reward - 2.0 * info["uncertainty"], rel=1e-5, abs=1e-5)
    halting = DreamEnv(run, real_env="Pendulum-v1", halt_threshold=0.0, halt_penalty=50.0)
    halting.reset(seed=5)
    _, reward, terminated, _, info = halting.step(action)
    assert terminated and info["halted"] and reward == -50.0
    with pytest.raises(ConfigError, match="uncertainty"):
        DreamEnv(fitted_checkpoint("Pendulum-v1"), real_env="Pendulum-v1", halt_threshold=1.0)


@pytest.mark.parametrize(
    "action, message",
    [
        (np.zeros(2, np.float32), "shape"),
        (np.zeros((1, 1), np.float32), "shape"),
        (np.zeros(1, np.int64), "floating"),
        (np.array([np.nan], np.float32), "finite"),
        (np.array([np.inf], np.float32), "finite"),
        (np.array([2.5], np.float32), "outside"),
        (np.array(["left"]), "floating"),
    ],
)
def test_bad_box_actions_raise_clear_errors(action, message):
    env = DreamEnv(fitted_checkpoint("Pendulum-v1"), real_env="Pendulum-v1")
    env.reset(seed=0)
    with pytest.raises(ActionError, match=message):
        env.step(action)


def test_unbounded_box_actions_must_still_be_finite():
    # On a bounded Box one comparison pass catches NaN and inf; an unbounded one checks finiteness itself.
    from gymnasium import spaces

    obs_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
    model = create_world_model("tiny-mlp:ci", obs_space, spaces.Box(-np.inf, np.inf, (2,), np.float32))
    env = DreamEnv(model.eval(), starts="bank", start_bank=np.zeros((4, 3), np.float32))
    env.reset(seed=0)
    env.step(np.array([1e6, -1e6], np.float32))  # any finite value is inside
    for bad in (np.inf, -np.inf, np.nan):
        with pytest.raises(ActionError, match="finite"):
            env.step(np.array([0.0, bad], np.float32))


@pytest.mark.parametrize(
    "action, message", [(2, "outside"), (-1, "outside"), (1.0, "integers"), (np.array([1]), "shape")]
)
def test_bad_discrete_actions_raise_clear_errors(action, message):
    env = DreamEnv(fitted_checkpoint("CartPole-v1"), real_env="CartPole-v1")
    env.reset(seed=0)
    with pytest.raises(ActionError, match=message):
        env.step(action)


def test_clip_actions_opt_in_clips_to_the_bounds():
    run = fitted_checkpoint("Pendulum-v1")
    clipped = DreamEnv(run, real_env="Pendulum-v1", clip_actions=True, deterministic=True)
    exact = DreamEnv(run, real_env="Pendulum-v1", deterministic=True)
    clipped.reset(seed=1)
    exact.reset(seed=1)
    np.testing.assert_array_equal(
        clipped.step(np.array([5.0], np.float32))[0], exact.step(np.array([2.0], np.float32))[0]
    )
    with pytest.raises(ActionError, match="finite"):
        clipped.step(np.array([np.nan], np.float32))


def test_step_before_reset_and_after_close():
    env = DreamEnv(fitted_checkpoint("Pendulum-v1"), real_env="Pendulum-v1")
    with pytest.raises(DreamResetNeeded, match="reset"):
        env.step(np.zeros(1, np.float32))
    env.reset(seed=0)
    env.close()
    with pytest.raises(DreamClosedError, match="closed"):
        env.step(np.zeros(1, np.float32))
    with pytest.raises(DreamClosedError, match="closed"):
        env.reset()


def test_model_divergence_is_a_clear_error_not_a_nan():
    model = constant_model("Pendulum-v1")
    with torch.no_grad():
        model.net[-1].bias[0] = float("nan")
    env = DreamEnv(model, real_env="Pendulum-v1")
    env.reset(seed=0)
    with pytest.raises(ModelDivergenceError, match="diverged"):
        env.step(np.zeros(1, np.float32))
    for model in (
        constant_model("Pendulum-v1", reward=float("inf")),
        constant_model("Pendulum-v1", continue_logit=float("nan")),  # a NaN termination probability
    ):
        env = DreamEnv(model, real_env="Pendulum-v1")
        env.reset(seed=0)
        with pytest.raises(ModelDivergenceError, match="NaN or inf"):
            env.step(np.zeros(1, np.float32))


def test_starts_need_a_real_source():
    with pytest.raises(ConfigError, match="real_env"):
        DreamEnv(constant_model("Pendulum-v1"))
    with pytest.raises(Exception, match="another env"):
        DreamEnv(constant_model("Pendulum-v1"), real_env="MountainCarContinuous-v0")


@pytest.mark.skipif("tdmpc2" not in families(), reason="the tdmpc2 family is not installed")
def test_latent_family_dreams_in_its_latent_box_and_the_real_env_matches():
    real = gym.make("Pendulum-v1")
    model = create_world_model("tdmpc2:ci", real.observation_space, real.action_space).eval()
    env = DreamEnv(model, real_env="Pendulum-v1", max_episode_steps=20)
    assert env.observation_space == gym.spaces.Box(0.0, 1.0, (model.latent_dim,), np.float32)
    check_env(env, skip_render_check=True)
    encoded = EncodeObservation(real, model)
    assert encoded.observation_space == env.observation_space
    obs, _ = encoded.reset(seed=0)
    dream_obs, _ = env.reset(seed=0)
    assert encoded.observation_space.contains(obs)
    np.testing.assert_allclose(obs, dream_obs, atol=1e-6)  # same real start, same encoder
