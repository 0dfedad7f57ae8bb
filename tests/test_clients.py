"""Real clients drive the shipped dream ids as they drive any Gymnasium env.

Each test is a small, complete use by a library the users of this package use: rl_zoo3's trainer,
Gymnasium's standard wrappers (single and vector), stable-baselines3's ``SubprocVecEnv`` (the env is
built in another process, so everything crosses a pipe pickled), and a CleanRL-style PPO loop.
They run on ``WorldFlux/Ensemble-Pendulum-v0``, the smallest shipped dream (200-step episodes).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers import (
    ClipAction,
    FrameStackObservation,
    NormalizeObservation,
    RecordEpisodeStatistics,
    TimeLimit,
)
from gymnasium.wrappers import vector as vector_wrappers

import worldflux_gym

gym.register_envs(worldflux_gym)

DREAM = "WorldFlux/Ensemble-Pendulum-v0"
HORIZON = 200  # the id's episode limit (envs/ensemble_pendulum.json)


def test_rl_zoo3_trains_on_a_shipped_id(tmp_path):
    """`python -m rl_zoo3.train --gym-packages worldflux_gym`: the zoo imports the package, finds the id."""
    pytest.importorskip("rl_zoo3", reason="rl_zoo3 is in the dev extra: pip install -e '.[dev]'")
    command = [
        sys.executable, "-m", "rl_zoo3.train",
        "--algo", "ppo", "--env", DREAM, "--gym-packages", "worldflux_gym",
        "-n", "128", "--seed", "0", "--eval-freq", "-1", "--log-folder", str(tmp_path / "logs"),
        "-params", "n_steps:64", "batch_size:64", "n_epochs:1",
    ]  # fmt: skip
    # one thread: a single dream env is a tiny batch, and extra threads only contend on a busy machine
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    saved = list((tmp_path / "logs" / "ppo").glob("WorldFlux-Ensemble-Pendulum-v0_*/*.zip"))
    assert len(saved) == 1, done.stdout[-2000:]


def test_gymnasium_wrappers_over_a_dream():
    env = gym.make(DREAM)
    env = ClipAction(env)  # out-of-range actions are clipped before the dream checks them
    env = TimeLimit(env, max_episode_steps=30)
    env = NormalizeObservation(env)
    env = FrameStackObservation(env, stack_size=4)
    env = RecordEpisodeStatistics(env)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 3)
    env.action_space.seed(0)
    episodes = []
    for step in range(65):
        action = np.array([5.0], np.float32) if step % 2 else env.action_space.sample()  # 5 > max 2
        obs, reward, terminated, truncated, info = env.step(action)
        assert obs.shape == (4, 3) and np.isfinite(obs).all() and np.isfinite(reward)
        if terminated or truncated:
            assert truncated and not terminated  # Pendulum never terminates; the TimeLimit cut it
            episodes.append(info["episode"])
            obs, _ = env.reset()
    assert [int(e["l"]) for e in episodes] == [30, 30]
    # NormalizeObservation has been learning the dream's observation statistics
    normalize = env.get_wrapper_attr("obs_rms")
    assert normalize.count > 60 and np.all(normalize.var > 0)


def test_gymnasium_vector_wrappers_over_make_vec():
    envs = gym.make_vec(DREAM, num_envs=8)
    envs = vector_wrappers.ClipAction(envs)
    envs = vector_wrappers.NormalizeObservation(envs)
    envs = vector_wrappers.RecordEpisodeStatistics(envs)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (8, 3)
    finished = 0
    for _ in range(HORIZON + 1):
        actions = np.random.default_rng(0).uniform(-4, 4, (8, 1)).astype(np.float32)  # clipped to +-2
        obs, rewards, terminated, truncated, infos = envs.step(actions)
        assert np.isfinite(obs).all() and rewards.shape == (8,)
        if "episode" in infos:
            finished += int(infos["_episode"].sum())
            lengths = infos["episode"]["l"][infos["_episode"]]
            assert (lengths == HORIZON).all()
    assert finished == 8  # every env reached the horizon once, and was reset by the next step
    envs.close()


def test_gymnasium_sync_vector_env_of_the_id():
    envs = gym.make_vec(DREAM, num_envs=2, vectorization_mode="sync")
    assert isinstance(envs, gym.vector.SyncVectorEnv)
    obs, _ = envs.reset(seed=1)
    obs, rewards, terminated, truncated, _ = envs.step(envs.action_space.sample())
    assert obs.shape == (2, 3) and rewards.shape == (2,)
    envs.close()


def test_sb3_subproc_vec_env_of_gym_make(monkeypatch):
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import SubprocVecEnv

    # Each worker is a fresh interpreter ("spawn": forking a process whose torch already runs threads
    # can hang); "worldflux_gym:<id>" makes gym.make import the package there, as a user's would.
    make = functools.partial(gym.make, f"worldflux_gym:{DREAM}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the workers' torch: one thread each on a busy machine
    venv = SubprocVecEnv([make, make], start_method="spawn")
    try:
        obs = venv.reset()
        assert obs.shape == (2, 3)
        ended = []
        for _ in range(HORIZON):
            obs, rewards, dones, infos = venv.step(np.zeros((2, 1), np.float32))
            ended += [info for done, info in zip(dones, infos) if done]
        assert len(ended) == 2  # both hit the id's horizon: a time limit, not a termination
        assert all(info["TimeLimit.truncated"] for info in ended)
        assert all(info["terminal_observation"].shape == (3,) for info in ended)
        agent = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
        agent.learn(total_timesteps=64)
        assert agent.num_timesteps == 64
    finally:
        venv.close()


def test_cleanrl_style_loop_on_make_vec():
    """The shape of CleanRL's ppo_continuous_action.py: make_vec, RecordEpisodeStatistics, a torch agent."""
    num_envs, num_steps = 16, 32
    envs = gym.make_vec(DREAM, num_envs=num_envs)
    envs = vector_wrappers.RecordEpisodeStatistics(envs)
    obs_dim = envs.single_observation_space.shape[0]
    act_dim = envs.single_action_space.shape[0]
    torch.manual_seed(0)
    actor = torch.nn.Sequential(torch.nn.Linear(obs_dim, 32), torch.nn.Tanh(), torch.nn.Linear(32, act_dim))
    critic = torch.nn.Sequential(torch.nn.Linear(obs_dim, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    log_std = torch.nn.Parameter(torch.zeros(act_dim))
    optimizer = torch.optim.Adam([*actor.parameters(), *critic.parameters(), log_std], lr=3e-4)
    high = torch.as_tensor(envs.single_action_space.high)

    next_obs, _ = envs.reset(seed=1)
    returns = []
    for _update in range(7):  # 7 x 32 steps > one 200-step episode
        obs_buf, act_buf, logp_buf, rew_buf, done_buf = [], [], [], [], []
        for _ in range(num_steps):
            obs = torch.as_tensor(next_obs, dtype=torch.float32)
            with torch.no_grad():
                dist = torch.distributions.Normal(actor(obs), log_std.exp())
                action = dist.sample()
            next_obs, reward, terminations, truncations, infos = envs.step(
                torch.clamp(action, -high, high).numpy()
            )
            obs_buf.append(obs)
            act_buf.append(action)
            logp_buf.append(dist.log_prob(action).sum(-1))
            rew_buf.append(torch.as_tensor(reward, dtype=torch.float32))
            done_buf.append(torch.as_tensor(np.logical_or(terminations, truncations), dtype=torch.float32))
            if "episode" in infos:
                returns += infos["episode"]["r"][infos["_episode"]].tolist()
        # one clipped-surrogate step with Monte-Carlo returns (enough to show the data feeds torch)
        obs_t, act_t, old_logp = torch.stack(obs_buf), torch.stack(act_buf), torch.stack(logp_buf)
        rewards, dones = torch.stack(rew_buf), torch.stack(done_buf)
        targets = torch.zeros_like(rewards)
        running = torch.zeros(num_envs)
        for t in reversed(range(num_steps)):
            running = rewards[t] + 0.99 * running * (1.0 - dones[t])
            targets[t] = running
        values = critic(obs_t).squeeze(-1)
        advantages = (targets - values).detach()
        logp = torch.distributions.Normal(actor(obs_t), log_std.exp()).log_prob(act_t).sum(-1)
        ratio = (logp - old_logp).exp()
        policy_loss = -torch.min(ratio * advantages, ratio.clamp(0.8, 1.2) * advantages).mean()
        loss = policy_loss + 0.5 * (targets - values).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
    assert len(returns) == num_envs  # each env finished one 200-step episode
    assert all(np.isfinite(returns))
    envs.close()
