"""DreamVectorEnv: Gymnasium 1.x autoreset modes, batching, seeding, tensor output, bad input."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from dream_helpers import constant_model, fitted_checkpoint
from gymnasium.vector import AutoresetMode
from hypothesis import given, settings
from hypothesis import strategies as st

from worldflux_gym.core import ConfigError
from worldflux_gym.dream import ActionError, DreamEnv, DreamResetNeeded, DreamVectorEnv

N = 6


def zeros(n=N):
    return np.zeros((n, 1), np.float32)


def test_spaces_are_batched_and_metadata_names_the_autoreset_mode():
    env = DreamVectorEnv(fitted_checkpoint("CartPole-v1"), N, real_env="CartPole-v1")
    real = gym.make("CartPole-v1")
    assert env.single_observation_space == real.observation_space
    assert env.single_action_space == real.action_space
    assert env.action_space == gym.spaces.MultiDiscrete([2] * N)
    assert env.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    obs, _ = env.reset(seed=0)
    assert obs.shape == (N, 4) and env.observation_space.contains(obs)
    obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert reward.dtype == np.float64 and terminated.dtype == truncated.dtype == np.bool_


def test_next_step_autoreset_resets_on_the_following_step():
    # termination probability 1: every env ends on every step it is stepped
    env = DreamVectorEnv(
        constant_model("Pendulum-v1", reward=2.0, continue_logit=-30.0), N, real_env="Pendulum-v1"
    )
    env.reset(seed=0)
    _, reward, terminated, truncated, _ = env.step(zeros())
    assert terminated.all() and not truncated.any() and np.allclose(reward, 2.0)
    obs, reward, terminated, truncated, _ = env.step(zeros())  # the reset step: action ignored
    assert not terminated.any() and not truncated.any() and np.allclose(reward, 0.0)
    # the new starts are the real env's next resets after the N used by reset(seed=0)
    real = gym.make("Pendulum-v1")
    resets = [real.reset(seed=0)[0]] + [real.reset()[0] for _ in range(2 * N - 1)]
    np.testing.assert_allclose(obs, np.stack(resets[N:]), rtol=1e-6)
    _, _, terminated, _, _ = env.step(zeros())
    assert terminated.all()


def test_termination_odds_scale_the_odds_that_a_step_ends():
    # continue logit log 9: each step ends with probability 0.1; with 10x the odds, 10/19
    n = 4000
    ended = {}
    for odds in (1.0, 10.0):
        model = constant_model("Pendulum-v1", continue_logit=float(np.log(9.0)))
        env = DreamVectorEnv(model, n, real_env="Pendulum-v1", termination_odds=odds)
        env.reset(seed=0)
        ended[odds] = env.step(zeros(n))[2].mean()
    assert ended[1.0] == pytest.approx(0.1, abs=0.02) and ended[10.0] == pytest.approx(10 / 19, abs=0.03)
    for bad in (0.0, -1.0, float("nan"), "10"):
        with pytest.raises(ConfigError, match="termination_odds"):
            DreamVectorEnv(constant_model("Pendulum-v1"), 2, real_env="Pendulum-v1", termination_odds=bad)


def test_small_termination_odds_keep_a_certain_end_certain():
    # p = 1 exactly in float32 (continue logit -200), even with log(1e-50) = -115 added: never inf
    model = constant_model("Pendulum-v1", continue_logit=-200.0)
    for odds in (1e-50, 1e-12, 1e-3, 1.0):
        env = DreamVectorEnv(model, N, real_env="Pendulum-v1", termination_odds=odds)
        env.reset(seed=0)
        assert env.step(zeros())[2].all()
    # p = 0.5 under odds 1e-12: ends with probability ~1e-12, so none of 4000 rows ends
    env = DreamVectorEnv(
        constant_model("Pendulum-v1", continue_logit=0.0),
        4000,
        real_env="Pendulum-v1",
        termination_odds=1e-12,
    )
    env.reset(seed=0)
    assert not env.step(zeros(4000))[2].any()


def test_horizon_truncates_every_row_and_autoreset_follows():
    env = DreamVectorEnv(constant_model("Pendulum-v1"), N, real_env="Pendulum-v1", max_episode_steps=2)
    env.reset(seed=0)
    assert not env.step(zeros())[3].any()
    _, _, terminated, truncated, _ = env.step(zeros())
    assert truncated.all() and not terminated.any()
    _, reward, _, truncated, _ = env.step(zeros())
    assert not truncated.any() and np.allclose(reward, 0.0)


def test_same_step_autoreset_puts_final_obs_in_info_as_gymnasium_does():
    model = constant_model("Pendulum-v1", continue_logit=20.0)
    env = DreamVectorEnv(
        model, N, real_env="Pendulum-v1", max_episode_steps=1, autoreset_mode=AutoresetMode.SAME_STEP
    )
    before, _ = env.reset(seed=0)
    obs, _, _, truncated, info = env.step(zeros())
    assert truncated.all() and info["_final_obs"].all()
    assert info["final_obs"].dtype == object
    # the model keeps the obs unchanged, so the final obs is the start obs; the returned obs is a new start
    np.testing.assert_allclose(np.stack(info["final_obs"]), before, rtol=1e-6)
    assert not np.allclose(obs, before)
    assert "final_info" in info and info["_final_info"].all()


def test_disabled_autoreset_needs_an_explicit_masked_reset():
    env = DreamVectorEnv(
        constant_model("Pendulum-v1"), N, real_env="Pendulum-v1", max_episode_steps=1,
        autoreset_mode=AutoresetMode.DISABLED,
    )  # fmt: skip
    first, _ = env.reset(seed=0)
    env.step(zeros())
    with pytest.raises(DreamResetNeeded, match="reset_mask"):
        env.step(zeros())
    mask = np.zeros(N, bool)
    mask[:3] = True
    env.reset(options={"reset_mask": mask})
    with pytest.raises(DreamResetNeeded, match=r"\[3, 4, 5\]"):  # rows 3.. are still ended
        env.step(zeros())
    env.reset(options={"reset_mask": ~mask})
    assert env.step(zeros())[3].all()
    with pytest.raises(ConfigError, match="reset_mask"):
        env.reset(options={"reset_mask": np.ones(N, int)})


def test_partial_reset_only_touches_masked_rows():
    env = DreamVectorEnv(constant_model("Pendulum-v1"), N, real_env="Pendulum-v1")
    first, _ = env.reset(seed=0)
    mask = np.array([True, False] * (N // 2))
    obs, _ = env.reset(options={"reset_mask": mask})
    np.testing.assert_array_equal(obs[~mask], first[~mask])
    assert not np.isclose(obs[mask], first[mask]).all()


def test_same_seed_same_batch_of_episodes():
    run = fitted_checkpoint("Pendulum-v1", "ensemble:ci")
    rng = np.random.default_rng(0)
    actions = rng.uniform(-2, 2, (15, N, 1)).astype(np.float32)

    def rollout(seed):
        env = DreamVectorEnv(run, N, real_env="Pendulum-v1", max_episode_steps=5)
        out = [env.reset(seed=seed)[0]]
        for a in actions:
            out.extend(env.step(a)[:4])
        return out

    for a, b in zip(rollout(3), rollout(3)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(rollout(3)[0], rollout(4)[0])


def test_one_row_vector_env_is_the_dream_env():
    """DreamEnv is the N = 1 case of the same batched core: same seed, same actions, same episode."""
    run = fitted_checkpoint("Pendulum-v1", "ensemble:ci")
    single = DreamEnv(run, real_env="Pendulum-v1", report_uncertainty=False)
    vector = DreamVectorEnv(run, 1, real_env="Pendulum-v1")
    obs, _ = single.reset(seed=11)
    vobs, _ = vector.reset(seed=11)
    np.testing.assert_array_equal(obs, vobs[0])
    for action in np.linspace(-2, 2, 8, dtype=np.float32):
        obs, reward, terminated, truncated, _ = single.step(np.array([action]))
        vobs, vreward, vterminated, vtruncated, _ = vector.step(np.array([[action]]))
        np.testing.assert_array_equal(obs, vobs[0])
        assert reward == pytest.approx(vreward[0], rel=1e-6)
        assert (terminated, truncated) == (vterminated[0], vtruncated[0])
        if terminated or truncated:
            break


def test_tensor_output_stays_on_the_device_and_accepts_tensor_actions():
    env = DreamVectorEnv(fitted_checkpoint("Pendulum-v1", "ensemble:ci"), N, real_env="Pendulum-v1",
                         tensor_output=True, report_uncertainty=True)  # fmt: skip
    obs, _ = env.reset(seed=0)
    assert isinstance(obs, torch.Tensor) and obs.device == env.model.device
    obs, reward, terminated, truncated, info = env.step(torch.zeros(N, 1))
    assert all(isinstance(x, torch.Tensor) for x in (obs, reward, terminated, truncated, info["uncertainty"]))
    assert obs.shape == (N, 3) and terminated.dtype == torch.bool
    with pytest.raises(ActionError, match="finite"):
        env.step(torch.full((N, 1), float("nan")))


def test_bfloat16_precision_tracks_float32_and_returns_float32():
    """bfloat16 products change a fitted ensemble's mean step by far less than its own error."""
    run = fitted_checkpoint("Pendulum-v1", "ensemble:ci")
    rng = np.random.default_rng(0)
    actions = rng.uniform(-2, 2, (3, N, 1)).astype(np.float32)

    def rollout(precision):
        env = DreamVectorEnv(run, N, real_env="Pendulum-v1", deterministic=True, precision=precision)
        obs = [env.reset(seed=5)[0]]
        rewards = []
        for a in actions:
            o, r, *_ = env.step(a)
            obs.append(o)
            rewards.append(r)
        return np.stack(obs), np.stack(rewards)

    (obs32, rew32), (obs16, rew16) = rollout("float32"), rollout("bfloat16")
    assert obs16.dtype == np.float32 and rew16.dtype == rew32.dtype
    assert not np.array_equal(obs32[1:], obs16[1:])  # the products really ran in bfloat16
    step32 = np.abs(obs32[1:] - obs32[:-1]).mean()  # how far one step moves the observation
    assert np.abs(obs16 - obs32).max() < 0.05 * step32 + 0.02
    np.testing.assert_allclose(rew16, rew32, atol=0.05 * np.abs(rew32).mean() + 0.02)


@pytest.mark.parametrize("family", ["dreamer", "tdmpc2"])
def test_bfloat16_precision_runs_recurrent_and_latent_families_through_resets(family):
    from dream_helpers import family_checkpoint

    env = DreamVectorEnv(family_checkpoint("Pendulum-v1", family), N, real_env="Pendulum-v1",
                         max_episode_steps=3, precision="bfloat16")  # fmt: skip
    obs, _ = env.reset(seed=0)
    for _ in range(7):  # two horizons: every row is reset twice with float32 starts
        obs, reward, *_ = env.step(zeros())
        assert obs.dtype == np.float32 and np.isfinite(obs).all() and np.isfinite(reward).all()


def test_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="precision"):
        DreamVectorEnv(constant_model("Pendulum-v1"), N, real_env="Pendulum-v1", precision="float16")


def test_gym_make_vec_uses_the_vector_entry_point():
    import worldflux_gym  # noqa: F401  (registers the ids)

    env = gym.make_vec(
        "WorldFlux/Ensemble-Pendulum-v0", num_envs=4, checkpoint=fitted_checkpoint("Pendulum-v1")
    )
    assert isinstance(env, DreamVectorEnv) and env.num_envs == 4
    assert env.dream.max_episode_steps == 200  # the spec's horizon
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 3)


@pytest.mark.parametrize(
    "actions, error",
    [
        (np.zeros((N + 1, 1), np.float32), "shape"),
        (np.zeros(N, np.float32), "shape"),
        (np.full((N, 1), 3.0, np.float32), "outside"),
        (np.zeros((N, 1), np.int32), "floating"),
    ],
)
def test_bad_batches_of_actions_raise(actions, error):
    env = DreamVectorEnv(constant_model("Pendulum-v1"), N, real_env="Pendulum-v1")
    env.reset(seed=0)
    with pytest.raises(ActionError, match=error):
        env.step(actions)


def test_step_before_reset_raises():
    env = DreamVectorEnv(constant_model("Pendulum-v1"), N, real_env="Pendulum-v1")
    with pytest.raises(DreamResetNeeded):
        env.step(zeros())


_CARTPOLE = {}


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    actions=st.lists(st.lists(st.integers(0, 1), min_size=N, max_size=N), max_size=12),
)
def test_property_discrete_batches_stay_in_the_space_and_replay_exactly(seed, actions):
    if "env" not in _CARTPOLE:
        _CARTPOLE["env"] = DreamVectorEnv(
            fitted_checkpoint("CartPole-v1"), N, real_env="CartPole-v1", max_episode_steps=4
        )
    env = _CARTPOLE["env"]

    def run():
        out = [env.reset(seed=seed)[0]]
        for a in actions:
            out.extend(env.step(np.array(a, dtype=np.int64))[:4])
        return out

    first, second = run(), run()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    for obs in [first[0], *first[1::4]]:
        assert env.observation_space.contains(obs)
    for reward in first[2::4]:
        assert np.isfinite(reward).all()


def test_a_batch_too_large_for_memory_is_refused_before_it_is_built():
    import resource
    import time

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"num_envs=10,000,000 needs about .* GiB .* use at most about"):
        gym.make_vec("WorldFlux/Ensemble-Pendulum-v0", num_envs=10**7)
    assert time.perf_counter() - started < 10
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 500  # nothing of the batch's size was allocated
