"""DreamSB3VecEnv: stable-baselines3's VecEnv API over the batched dream; SB3 agents learn on it."""

import numpy as np
import pytest
from dream_helpers import constant_model, fitted_checkpoint
from stable_baselines3 import A2C, PPO, SAC
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from worldflux_gym.dream import ActionError, DreamSB3VecEnv, make_sb3_vec_env

N = 4


def test_time_limit_gives_terminal_observation_and_truncated_flag():
    env = DreamSB3VecEnv(constant_model("Pendulum-v1"), N, real_env="Pendulum-v1", max_episode_steps=2)
    assert isinstance(env, VecEnv)
    first = env.reset()
    env.step_async(np.zeros((N, 1), np.float32))
    obs, rewards, dones, infos = env.step_wait()
    assert not dones.any() and infos == [{}] * N  # nothing ended: no extra keys
    obs, rewards, dones, infos = env.step(np.zeros((N, 1), np.float32))
    assert dones.all() and rewards.dtype == np.float32
    for i, info in enumerate(infos):
        assert info["TimeLimit.truncated"] is True
        # the model keeps obs unchanged: the terminal obs is the start obs; obs is already a new start
        np.testing.assert_allclose(info["terminal_observation"], first[i], rtol=1e-6)
        assert info["episode"]["l"] == 2 and info["episode"]["r"] == pytest.approx(2.0)
    assert not np.allclose(obs, first)


def test_real_terminations_are_not_time_limits_and_only_ended_envs_get_info():
    model = constant_model("Pendulum-v1", continue_logit=0.0)  # each step ends with probability 1/2
    env = DreamSB3VecEnv(model, 64, real_env="Pendulum-v1", max_episode_steps=100)
    env.seed(0)
    env.reset()
    _, _, dones, infos = env.step(np.zeros((64, 1), np.float32))
    assert 10 < dones.sum() < 54
    for done, info in zip(dones, infos):
        assert bool(info) == done
        if done:
            assert info["TimeLimit.truncated"] is False and info["terminal_observation"].shape == (3,)


def test_seed_makes_resets_and_steps_reproducible():
    run = fitted_checkpoint("Pendulum-v1", "ensemble:ci")

    def rollout():
        env = DreamSB3VecEnv(run, N, real_env="Pendulum-v1", max_episode_steps=3)
        env.seed(123)
        out = [env.reset()]
        for t in range(6):
            out.extend(env.step(np.full((N, 1), t / 6, np.float32))[:3])
        return out

    for a, b in zip(rollout(), rollout()):
        np.testing.assert_array_equal(a, b)


def test_vec_env_api_and_bad_actions():
    env = DreamSB3VecEnv(constant_model("Pendulum-v1"), N, real_env="Pendulum-v1", max_episode_steps=5)
    assert env.get_attr("render_mode") == [None] * N
    assert env.env_is_wrapped(VecNormalize, indices=[0, 1]) == [False, False]
    env.reset()
    with pytest.raises(ActionError, match="outside"):
        env.step(np.full((N, 1), 9.0, np.float32))


@pytest.mark.parametrize("algo", [PPO, A2C, SAC])
def test_sb3_agents_learn_on_the_dream_unchanged(algo):
    env = make_sb3_vec_env("WorldFlux/Ensemble-Pendulum-v0", 8, checkpoint=fitted_checkpoint("Pendulum-v1"))
    assert env.dream.max_episode_steps == 200
    kwargs = {"n_steps": 16, "batch_size": 64} if algo is PPO else {}
    if algo is SAC:
        kwargs = {"learning_starts": 64, "batch_size": 64, "train_freq": 1, "gradient_steps": 1}
    agent = algo("MlpPolicy", env, seed=0, device="cpu", **kwargs)
    agent.learn(total_timesteps=512 if algo is not SAC else 160)
    assert agent.num_timesteps >= 160
    action, _ = agent.predict(env.reset(), deterministic=True)
    assert action.shape == (8, 1)


def test_ppo_learns_on_a_discrete_dream():
    env = make_sb3_vec_env("WorldFlux/Dreamer-CartPole-v2", 8, checkpoint=fitted_checkpoint("CartPole-v1"))
    agent = PPO("MlpPolicy", env, n_steps=16, batch_size=64, seed=0, device="cpu")
    agent.learn(total_timesteps=256)
    assert agent.num_timesteps >= 256
