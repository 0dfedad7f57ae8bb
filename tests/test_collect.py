"""Collecting real episodes: alignment, terminated vs truncated, seeding, policies, images."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from worldflux_gym.core.errors import ConfigError, SpaceError
from worldflux_gym.data import collect_episodes, load_sb3_policy, resize_frame
from worldflux_gym.data.collect import held_corner_policy, scaled_random_policy
from worldflux_gym.data.policy import detect_sb3_algorithm


def test_stored_steps_follow_the_alignment_convention():
    """Replaying the stored actions in a fresh env with the same seed gives back o_{t+1} and r_{t+1}."""
    episode = collect_episodes("Pendulum-v1", 50, seed=3, progress=False)[0]
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=3)
    np.testing.assert_array_equal(episode.obs[0], obs)
    for t in range(len(episode)):
        obs, reward, terminated, truncated, _ = env.step(episode.action[t])
        np.testing.assert_array_equal(episode.obs[t + 1], obs)  # o_{t+1} is the obs after a_t
        assert episode.reward[t] == pytest.approx(reward)  # r_{t+1} comes from a_t, not a_{t+1}
        assert episode.terminated[t] == terminated
    env.close()


def test_terminated_and_truncated_stay_apart_and_final_obs_is_kept():
    cartpole = collect_episodes("CartPole-v1", 300, seed=0, num_envs=2, progress=False)
    ended = [e for e in cartpole if e.terminated[-1]]
    assert ended, "random CartPole episodes fall over"
    assert all(not e.truncated[-1] for e in ended)
    for e in cartpole:
        assert len(e.obs) == len(e) + 1  # the final observation is stored
        assert e.action.dtype.kind == "i"  # Discrete actions stay integer indices
    # the falling pole's final observation is past CartPole's termination threshold
    assert any(abs(e.obs[-1][2]) > 0.2095 or abs(e.obs[-1][0]) > 2.4 for e in ended)

    pendulum = collect_episodes("Pendulum-v1", 450, seed=0, progress=False)
    assert [len(e) for e in pendulum] == [200, 200, 50]
    assert all(e.truncated[-1] and not e.terminated[-1] for e in pendulum)  # time limit, not an end
    assert pendulum[-1].truncated[-1]  # cut by the collection budget: marked truncated too


def test_collection_is_seeded():
    a = collect_episodes("CartPole-v1", 100, seed=7, num_envs=2, progress=False)
    b = collect_episodes("CartPole-v1", 100, seed=7, num_envs=2, progress=False)
    c = collect_episodes("CartPole-v1", 100, seed=1000, num_envs=2, progress=False)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.obs, y.obs)
        np.testing.assert_array_equal(x.action, y.action)
    assert not np.array_equal(a[0].obs[0], c[0].obs[0])


def test_callable_policy_is_used_for_every_step():
    episodes = collect_episodes(
        "CartPole-v1", 60, policy=lambda obs: np.ones(len(obs), dtype=np.int64), num_envs=3, progress=False
    )
    assert sum(len(e) for e in episodes) >= 60
    assert all((e.action == 1).all() for e in episodes)


def test_unknown_env_id_is_a_clear_error():
    with pytest.raises(ConfigError, match="cannot make the Gymnasium env 'NoSuchEnv-v0'"):
        collect_episodes("NoSuchEnv-v0", 10, progress=False)
    with pytest.raises(ConfigError, match="steps must be positive"):
        collect_episodes("CartPole-v1", 0, progress=False)


@pytest.fixture(scope="module")
def ppo_cartpole_zip(tmp_path_factory):
    from stable_baselines3 import PPO

    path = tmp_path_factory.mktemp("sb3") / "ppo_cartpole.zip"
    PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, seed=0, device="cpu").save(path)
    return path


def test_sb3_zip_policy_is_detected_and_acts(ppo_cartpole_zip):
    from stable_baselines3 import PPO

    assert detect_sb3_algorithm(ppo_cartpole_zip) == "PPO"
    episodes = collect_episodes("CartPole-v1", 80, policy=str(ppo_cartpole_zip), num_envs=2, progress=False)
    reference = PPO.load(ppo_cartpole_zip, device="cpu")
    for e in episodes:
        expected, _ = reference.predict(e.obs[:-1], deterministic=True)
        np.testing.assert_array_equal(e.action, expected)  # the stored actions are the policy's


def test_sb3_policy_for_another_env_or_not_a_zip_is_refused(ppo_cartpole_zip, tmp_path):
    with pytest.raises(SpaceError, match="trained for observation space"):
        collect_episodes("Pendulum-v1", 10, policy=ppo_cartpole_zip, progress=False)
    bogus = tmp_path / "policy.zip"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a stable-baselines3 model"):
        load_sb3_policy(bogus)
    with pytest.raises(ConfigError, match="no policy file"):
        load_sb3_policy(tmp_path / "missing.zip")
    with pytest.raises(ConfigError, match="unknown stable-baselines3 algorithm"):
        load_sb3_policy(ppo_cartpole_zip, algo="NOPE")


def test_sac_zip_is_detected(tmp_path):
    from stable_baselines3 import SAC

    path = tmp_path / "sac.zip"
    SAC("MlpPolicy", "Pendulum-v1", learning_starts=0, buffer_size=100, device="cpu").save(path)
    assert detect_sb3_algorithm(path) == "SAC"


def _real_cartpole_frame() -> np.ndarray:
    env = gym.make("CartPole-v1", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    env.close()
    return frame


def test_resize_is_a_real_resampler_on_a_rendered_frame():
    frame = _real_cartpole_frame()  # (400, 600, 3)
    crop = frame[16:400, 108:492]  # 384 x 384: a whole factor of 6 above 64, the cart included
    block_mean = crop.reshape(64, 6, 64, 6, 3).astype(np.float64).mean(axis=(1, 3))
    resized = resize_frame(crop, 64)
    assert resized.shape == (64, 64, 3) and resized.dtype == np.uint8
    assert np.abs(resized - block_mean).mean() < 3.0  # close to the exact area average
    tiled = np.resize(crop, (64, 64, 3))  # what a reshape-style "resize" would do
    assert np.abs(tiled - block_mean).mean() > 3 * np.abs(resized - block_mean).mean()


def test_image_observations_are_resized_rendered_frames():
    episodes = collect_episodes("CartPole-v1", 20, seed=0, image_size=32, progress=False)
    first = episodes[0]
    assert first.obs.shape[1:] == (32, 32, 3) and first.obs.dtype == np.uint8
    np.testing.assert_array_equal(first.obs[0], resize_frame(_real_cartpole_frame(), 32))
    assert not np.array_equal(first.obs[0], first.obs[-1])  # the frames follow the cart


def test_held_corner_actions_sit_on_the_bounds_and_each_is_held_for_its_span():
    space = gym.spaces.Box(low=np.float32([-1.0, 0.0]), high=np.float32([2.0, 0.5]))
    obs = np.zeros((3, 4))
    policy = held_corner_policy(space, hold=(5, 8), seed=0)
    actions = np.stack([policy(obs) for _ in range(200)])  # [time, env, dim]
    assert ((actions == space.low) | (actions == space.high)).all()
    for env in range(3):
        changes = np.flatnonzero((np.diff(actions[:, env], axis=0) != 0).any(-1)) + 1
        spans = np.diff(np.concatenate([[0], changes]))
        # a corner drawn again may repeat the last one, so a span is one hold or several
        assert spans.min() >= 5 and len(changes) >= 200 // (8 * 4)
    again = held_corner_policy(space, hold=(5, 8), seed=0)
    assert np.array_equal(np.stack([again(obs) for _ in range(200)]), actions)
    assert not np.array_equal(
        np.stack([held_corner_policy(space, (5, 8), 1)(obs) for _ in range(200)]), actions
    )


def test_box_action_policies_refuse_a_discrete_or_unbounded_space_and_a_bad_setting_by_name():
    box = gym.spaces.Box(-1.0, 1.0, shape=(2,))
    with pytest.raises(ConfigError, match="held_corner_policy needs a bounded Box action space"):
        held_corner_policy(gym.spaces.Discrete(2))
    with pytest.raises(ConfigError, match="scaled_random_policy needs a bounded Box"):
        scaled_random_policy(gym.spaces.Box(-np.inf, np.inf, shape=(2,)), 0.5)
    with pytest.raises(ConfigError, match="scale must be a finite number >= 0 and <= 1"):
        scaled_random_policy(box, 1.5)
    for hold in [(0, 5), (8, 5), (5,)]:
        with pytest.raises(ConfigError, match="hold"):
            held_corner_policy(box, hold=hold)
