"""The ``ensemble`` family learns real dynamics, rewards and terminations, and keeps its promises.

Data are small real collections with random actions (Pendulum-v1, Walker2d-v5, CartPole-v1), split
by episode into training and held-out episodes; models are fitted by the project's ``Trainer`` and
judged on the held-out episodes only.
"""

from __future__ import annotations

import copy
import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.envs.classic_control.pendulum import PendulumEnv

from worldflux_gym.core import (
    ConfigError,
    SequenceBatch,
    SpaceError,
    TransitionBatch,
    create_world_model,
    from_pretrained,
)
from worldflux_gym.data import EpisodeBuffer, collect_episodes
from worldflux_gym.data.episode import Episode
from worldflux_gym.dream.core import DreamBatch
from worldflux_gym.training.trainer import Trainer, TrainerConfig

HORIZON = 10  # open-loop rollout length of the multi-step test


class TorqueCost(gym.Wrapper):
    """Pendulum-v1 with an extra torque cost ``0.5 u^2`` on the reward.

    Pendulum-v1's own reward depends on the torque only through ``0.001 u^2`` (at most 0.004, far
    below what a small model resolves), so "the reward depends on the action taken" could not be
    tested on it. With this cost the true reward of ``u = 2`` is 2.0 below that of ``u = 0`` from
    the same state; the dynamics are Pendulum-v1's.
    """

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        u = float(np.clip(action, -2.0, 2.0)[0])
        return obs, reward - 0.5 * u * u, terminated, truncated, info


TORQUE_COST_PENDULUM = "WorldFluxTest/TorqueCostPendulum-v0"
if TORQUE_COST_PENDULUM not in gym.registry:
    gym.register(
        TORQUE_COST_PENDULUM,
        entry_point=lambda **kwargs: TorqueCost(PendulumEnv(**kwargs)),
        max_episode_steps=200,
    )


class Fitted:
    """A model fitted on the training episodes of an env, with its held-out episodes."""

    def __init__(self, env_id, steps, fit_steps, tmp_dir, **overrides):
        episodes = collect_episodes(env_id, steps, seed=0, progress=False)
        # Every fifth episode is held out: whole episodes, so no held-out step was seen in training.
        self.held_out: list[Episode] = episodes[::5]
        self.train = [e for i, e in enumerate(episodes) if i % 5]
        self.held_out_buffer = EpisodeBuffer(self.held_out)
        env = gym.make(env_id)
        torch.manual_seed(0)  # the members' initial weights
        self.model = create_world_model("ensemble:ci", env.observation_space, env.action_space, **overrides)
        config = TrainerConfig(steps=fit_steps, validate_every=250, progress=False, tensorboard=False, seed=0)
        trainer = Trainer(self.model, (EpisodeBuffer(self.train), self.held_out_buffer), config, tmp_dir)
        self.metrics = trainer.fit()
        self.model.eval()

    def held_out_transitions(self):
        return self.held_out_buffer.all_transitions()

    def predict(self, obs, action, **kwargs):
        with torch.no_grad():
            return self.model.decode(self.model.transition(self.model.encode(obs), action, **kwargs))


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory):
    return Fitted(TORQUE_COST_PENDULUM, 4000, 1000, tmp_path_factory.mktemp("pendulum"))


@pytest.fixture(scope="module")
def pendulum_open_loop(tmp_path_factory):
    # 256 windows of 8 steps per update. (With 32 windows, the one-step fit's 256 transitions, the
    # 30-step error was twice the one-step fit's: too few windows per update.)
    folder = tmp_path_factory.mktemp("open_loop")
    return Fitted(TORQUE_COST_PENDULUM, 4000, 1000, folder, sequence_length=8, batch_size=256)


@pytest.fixture(scope="module")
def walker(tmp_path_factory):
    # Random Walker2d episodes fall after ~20 steps: 5000 steps hold ~220 real terminations.
    return Fitted("Walker2d-v5", 5000, 800, tmp_path_factory.mktemp("walker"), hidden=64, layers=3)


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory):
    return Fitted("CartPole-v1", 2000, 300, tmp_path_factory.mktemp("cartpole"))


@pytest.fixture(scope="module")
def cartpole_weighted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cartpole_weighted")
    # The head as trained: its continue logits not corrected for the weight (tests that want the
    # correction switch it on).
    return Fitted(
        "CartPole-v1", 2000, 300, folder, termination_positive_weight=10.0, calibrate_terminations=False
    )


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).pow(2).mean().item()


@pytest.mark.parametrize("name", ["pendulum", "walker"])
def test_one_and_ten_step_errors_beat_persistence(name, request):
    fitted = request.getfixturevalue(name)
    batch = fitted.held_out_transitions()
    one_step = fitted.predict(batch.obs, batch.action, deterministic=True).obs
    assert _mse(one_step, batch.next_obs) < 0.5 * _mse(batch.obs, batch.next_obs)

    imagined, real, start = _open_loop(fitted, HORIZON)
    assert len(start) > 50
    assert _mse(imagined, real) < 0.5 * _mse(start, real)


def _open_loop(fitted: Fitted, horizon: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From held-out o_t, imagine ``horizon`` steps under the real actions a_t..a_{t+h-1} (mean
    transitions): returns the imagined and the real o_{t+h}, and o_t."""
    starts = [(e, t) for e in fitted.held_out for t in range(0, len(e) - horizon + 1, 3)]
    obs0 = torch.tensor(np.stack([e.obs[t] for e, t in starts]), dtype=torch.float32)
    actions = torch.tensor(np.stack([e.action[t : t + horizon] for e, t in starts]))
    obs_h = torch.tensor(np.stack([e.obs[t + horizon] for e, t in starts]), dtype=torch.float32)
    with torch.no_grad():
        traj = fitted.model.rollout(fitted.model.encode(obs0), actions, deterministic=True)
    assert traj.obs.shape == (horizon, len(starts), obs0.shape[1])
    return traj.obs[-1], obs_h, obs0


def test_open_loop_training_cuts_the_long_horizon_error(pendulum, pendulum_open_loop):
    # The same data and number of updates; trained on 8-step windows with the open-loop term, the
    # model's 30-step imagination drifts less from held-out reality. Measured: 0.0015-0.0024 against
    # 0.0087-0.0116 (seeds 0-2). Not from the windows' extra transitions alone: the same windows
    # without the term gave 0.0082, and the one-step fit with 2048 transitions per update 0.0178.
    assert pendulum_open_loop.model.batch_type is SequenceBatch
    assert "val/open_loop_mse" in pendulum_open_loop.metrics
    one_step, real, _ = _open_loop(pendulum, 30)
    open_loop, _, _ = _open_loop(pendulum_open_loop, 30)
    assert _mse(open_loop, real) < 0.8 * _mse(one_step, real)
    # ... without giving up its one-step accuracy (still far better than persistence).
    batch = pendulum_open_loop.held_out_transitions()
    predicted = pendulum_open_loop.predict(batch.obs, batch.action, deterministic=True).obs
    assert _mse(predicted, batch.next_obs) < 0.5 * _mse(batch.obs, batch.next_obs)


def test_pendulum_reward_is_predicted_from_the_action_taken(pendulum):
    batch = pendulum.held_out_transitions()
    predicted = pendulum.predict(batch.obs, batch.action, deterministic=True).reward
    # The reward is a smooth deterministic function of (o_t, a_t): a model that learned it explains
    # nearly all its variance (r > 0.95 means R^2 > 0.9).
    assert np.corrcoef(predicted.numpy(), batch.reward.numpy())[0, 1] > 0.95

    # Same states, different torques: the true reward differs by 0.5 * 2^2 = 2.0 (see TorqueCost).
    def reward_for(u: float) -> torch.Tensor:
        action = torch.full((len(batch), 1), u)
        return pendulum.predict(batch.obs, action, deterministic=True).reward

    zero, push, pull = reward_for(0.0), reward_for(2.0), reward_for(-2.0)
    assert 1.5 < (zero - push).mean().item() < 2.5
    assert 1.5 < (zero - pull).mean().item() < 2.5
    assert (zero > push).float().mean().item() > 0.9


def test_walker_reward_correlates_and_beats_a_velocity_baseline(walker):
    batch = walker.held_out_transitions()
    predicted = walker.predict(batch.obs, batch.action, deterministic=True).reward.numpy()
    r_model = np.corrcoef(predicted, batch.reward.numpy())[0, 1]
    # Baseline: the reward is ~ 1 + forward velocity, so the current x-velocity (obs[8]) already
    # explains most of it (r ~ 0.9). The model, which sees the action and so the velocity it leads
    # to, must leave at most 3/4 of the variance that the baseline's best linear fit leaves.
    r_baseline = np.corrcoef(batch.obs[:, 8].numpy(), batch.reward.numpy())[0, 1]
    assert r_model > 0.9
    assert 1 - r_model**2 < 0.75 * (1 - r_baseline**2)


def test_walker_termination_beats_always_continue(walker):
    batch = walker.held_out_transitions()
    fell = batch.terminated.float()
    assert 0.01 < fell.mean().item() < 0.2  # random Walker2d episodes do fall
    p_end = walker.predict(batch.obs, batch.action, deterministic=True).termination_prob.clamp(1e-6, 1 - 1e-6)
    bce = torch.nn.functional.binary_cross_entropy(p_end, fell).item()
    # Best constant predictor (the base rate): always-continue with calibrated odds.
    base_rate = fell.mean().expand_as(fell)
    base_bce = torch.nn.functional.binary_cross_entropy(base_rate, fell).item()
    assert bce < 0.5 * base_bce
    # Always-continue catches no fall at all; the model catches most, and most alarms are real.
    alarm = p_end > 0.5
    recall = (alarm & batch.terminated).sum().item() / batch.terminated.sum().item()
    precision = (alarm & batch.terminated).sum().item() / max(1, alarm.sum().item())
    assert recall > 0.5 and precision > 0.5


def test_time_limits_are_not_learned_as_ends(pendulum):
    # Every Pendulum episode ends by truncation at 200 steps; those steps must still say "continue".
    buffer = pendulum.held_out_buffer
    last = np.flatnonzero(buffer.truncated)
    assert len(last) > 0 and not buffer.terminated.any()
    batch = buffer.transitions(last)
    assert pendulum.predict(batch.obs, batch.action, deterministic=True).continue_prob.min().item() > 0.99


def test_uncertainty_is_larger_far_from_the_data(pendulum, walker):
    for fitted in (pendulum, walker):
        batch = fitted.held_out_transitions()
        on_data = fitted.predict(batch.obs, batch.action, deterministic=True).uncertainty
        far = fitted.predict(10 * batch.obs + 5, batch.action, deterministic=True).uncertainty
        assert (on_data >= 0).all() and torch.isfinite(on_data).all()
        assert far.median() > 10 * on_data.median()


def test_save_load_round_trip_reproduces_outputs_exactly(pendulum, tmp_path):
    model = pendulum.model
    model.save_pretrained(tmp_path / "pendulum")
    again = from_pretrained(tmp_path / "pendulum", device="cpu")
    assert type(again) is type(model) and again.preset == "ci"
    for name, value in model.state_dict().items():  # normalisation and elites are saved too
        assert torch.equal(again.state_dict()[name], value), name
    batch = pendulum.held_out_transitions()
    for deterministic in (True, False):
        a = model.transition(
            model.encode(batch.obs), batch.action, deterministic=deterministic,
            generator=torch.Generator().manual_seed(3),
        )  # fmt: skip
        b = again.transition(
            again.encode(batch.obs), batch.action, deterministic=deterministic,
            generator=torch.Generator().manual_seed(3),
        )  # fmt: skip
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_same_seed_same_samples_other_seed_other_samples(pendulum):
    batch = pendulum.held_out_transitions()

    def sample(seed: int):
        generator = torch.Generator().manual_seed(seed)
        return pendulum.predict(batch.obs, batch.action, generator=generator)

    first, again, other = sample(0), sample(0), sample(1)
    assert torch.equal(first.obs, again.obs) and torch.equal(first.reward, again.reward)
    assert not torch.equal(first.obs, other.obs)


def test_report_uncertainty_off_gives_the_same_predictions(walker):
    batch = walker.held_out_transitions()
    for deterministic in (True, False):
        on, off = (
            walker.predict(
                batch.obs,
                batch.action,
                deterministic=deterministic,
                generator=torch.Generator().manual_seed(5),
                report_uncertainty=report,
            )  # fmt: skip
            for report in (True, False)
        )
        torch.testing.assert_close(off.obs, on.obs, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(off.reward, on.reward, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(off.continue_logits, on.continue_logits, rtol=1e-5, atol=1e-5)
        assert torch.isfinite(on.uncertainty).all()
        assert torch.isnan(off.uncertainty).all()  # not measured, and says so


def test_samples_follow_the_elite_mixture(pendulum):
    # Many copies of one state: the sample mean is the mixture mean, i.e. the mean of elite means.
    batch = pendulum.held_out_transitions()
    obs, action = batch.obs[:1].expand(20000, -1), batch.action[:1].expand(20000, -1)
    generator = torch.Generator().manual_seed(0)
    sampled = pendulum.predict(obs, action, generator=generator, report_uncertainty=False)
    mean = pendulum.predict(obs[:1], action[:1], deterministic=True)
    spread = sampled.obs.std(dim=0)
    assert (spread > 0).all()  # it does sample
    assert ((sampled.obs.mean(dim=0) - mean.obs[0]).abs() < 5 * spread / np.sqrt(20000) + 1e-4).all()
    # Batch of one: still a valid single-member step.
    single = pendulum.predict(obs[:1], action[:1], generator=generator, report_uncertainty=False)
    assert single.obs.shape == (1, 3) and torch.isfinite(single.obs).all()


def test_noise_scale_scales_the_sampled_deviation_from_each_rows_member(pendulum):
    batch = pendulum.held_out_transitions()
    model = copy.deepcopy(pendulum.model)

    def sample(scale: float):
        model.config.noise_scale = scale  # the same generator seed: the same members and draws
        state = model.transition(
            model.encode(batch.obs), batch.action, generator=torch.Generator().manual_seed(7)
        )  # fmt: skip
        return model.decode(state)

    member_mean, half, full = sample(0.0), sample(0.5), sample(1.0)
    assert (full.obs - member_mean.obs).abs().mean() > 1e-3  # noise at full scale
    torch.testing.assert_close(
        half.obs - member_mean.obs, 0.5 * (full.obs - member_mean.obs), rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(half.reward - member_mean.reward, 0.5 * (full.reward - member_mean.reward))


def test_the_noise_scale_dream_option_samples_with_a_view_that_leaves_the_model_alone(pendulum):
    model = pendulum.model
    assert model.config.noise_scale == 1.0
    quiet = model.with_noise_scale(0.25)
    assert quiet.config.noise_scale == 0.25 and model.config.noise_scale == 1.0
    assert quiet.elite_index is model.elite_index  # the same weights, not a copy

    def first_steps(**options):
        dream = DreamBatch(model, 64, starts="bank", start_bank=np.zeros((1, 3), np.float32), **options)
        dream.reset(seed=3)
        return dream.step(torch.zeros(64, 1)).obs

    copied = copy.deepcopy(model)
    copied.config.noise_scale = 0.25
    by_option, default = first_steps(noise_scale=0.25), first_steps()
    dream = DreamBatch(copied, 64, starts="bank", start_bank=np.zeros((1, 3), np.float32))
    dream.reset(seed=3)
    torch.testing.assert_close(by_option, dream.step(torch.zeros(64, 1)).obs)
    assert not torch.allclose(by_option, default)
    assert model.config.noise_scale == 1.0
    with pytest.raises(ConfigError, match="noise_scale must be a finite number >= 0"):
        first_steps(noise_scale=-0.5)


def test_tsinf_keeps_each_row_on_one_elite_member(pendulum, pendulum_spaces):
    batch = pendulum.held_out_transitions()
    model = copy.deepcopy(pendulum.model)
    model.config.noise_scale = 0.0  # each row's member mean, so the member shows

    def step(seed: int, report_uncertainty: bool = True) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        state = model.transition(
            model.encode(batch.obs), batch.action, generator=generator, report_uncertainty=report_uncertainty
        )  # fmt: skip
        return model.decode(state).obs

    elites = model.elite_index.tolist()
    alone = []
    for member in elites:  # one elite alone, deterministic: that member's mean
        single = copy.deepcopy(model)
        single.elite_index = torch.tensor([member])
        state = single.transition(single.encode(batch.obs), batch.action, deterministic=True)
        alone.append(single.decode(state).obs)
    rows = torch.arange(len(batch.obs))
    model.config.propagation = "ts1"
    assert not torch.allclose(step(1), step(2))  # a random member per row and step
    model.config.propagation = "tsinf"
    expected = torch.stack(alone)[rows % len(elites), rows]
    for seed in (1, 2):
        torch.testing.assert_close(step(seed), expected)
        torch.testing.assert_close(step(seed, report_uncertainty=False), expected)  # only own members run
    with pytest.raises(ConfigError, match="propagation"):
        create_world_model("ensemble:ci", *pendulum_spaces, propagation="ts2")


def test_validate_picks_the_best_members_as_elites(pendulum, tmp_path):
    model = copy.deepcopy(pendulum.model)
    batch = pendulum.held_out_transitions()
    model.validate(batch)
    worst = int(model.elite_index[0])  # break the current best member
    with torch.no_grad():
        model.output_layer.weight[worst] += torch.randn_like(model.output_layer.weight[worst])
    metrics = model.validate(batch)
    assert worst not in model.elite_index.tolist()
    assert metrics["elite_mse"] < metrics["mse"]  # elites beat the ensemble average
    # Imagination uses elites only, so predictions stay good; the choice is saved with the weights.
    predicted = model.decode(model.transition(model.encode(batch.obs), batch.action, deterministic=True))
    assert _mse(predicted.obs, batch.next_obs) < 0.1 * _mse(batch.obs, batch.next_obs)
    model.save_pretrained(tmp_path / "elites")
    assert (
        from_pretrained(tmp_path / "elites", device="cpu").elite_index.tolist() == model.elite_index.tolist()
    )


def test_discrete_actions_cartpole(cartpole):
    batch = cartpole.held_out_transitions()
    assert batch.action.dtype == torch.int64 and batch.action.dim() == 1
    predicted = cartpole.predict(batch.obs, batch.action, deterministic=True).obs
    assert _mse(predicted, batch.next_obs) < 0.5 * _mse(batch.obs, batch.next_obs)
    # Pushing right (1) instead of left (0) raises the cart's next velocity (obs[1]).
    left = cartpole.predict(batch.obs, torch.zeros(len(batch), dtype=torch.long), deterministic=True).obs
    right = cartpole.predict(batch.obs, torch.ones(len(batch), dtype=torch.long), deterministic=True).obs
    assert (right[:, 1] > left[:, 1]).float().mean().item() > 0.95
    # The pole falls (~5% of random steps): the continue head, on the imagined next observation,
    # beats the base rate and catches a good share of the falls (measured: BCE 0.14 vs 0.20, recall 0.7).
    fell = batch.terminated.float()
    p_end = cartpole.predict(batch.obs, batch.action, deterministic=True).termination_prob.clamp(
        1e-6, 1 - 1e-6
    )
    bce = torch.nn.functional.binary_cross_entropy(p_end, fell).item()
    base_bce = torch.nn.functional.binary_cross_entropy(fell.mean().expand_as(fell), fell).item()
    assert bce < 0.85 * base_bce
    assert ((p_end > 0.5) & batch.terminated).sum().item() > 0.4 * batch.terminated.sum().item()


def _termination_balanced_accuracy(fitted: Fitted) -> float:
    batch = fitted.held_out_transitions()
    alarm = fitted.predict(batch.obs, batch.action, deterministic=True).termination_prob > 0.5
    return ((alarm[batch.terminated].float().mean() + (~alarm[~batch.terminated]).float().mean()) / 2).item()


def test_weighting_terminal_steps_sharpens_a_rare_termination_rule(cartpole, cartpole_weighted):
    # Same data, seed and updates; only the weight of the terminal transitions in the BCE differs.
    plain = _termination_balanced_accuracy(cartpole)
    weighted = _termination_balanced_accuracy(cartpole_weighted)
    assert weighted > plain + 0.03 and weighted > 0.9, (plain, weighted)


def test_calibrated_terminations_come_as_often_as_real_ones(cartpole_weighted):
    # A head trained with terminal steps weighted 10x overstates the odds of ending; corrected, its
    # mean termination probability on held-out steps is the real rate (about 1 step in 20 here).
    batch = cartpole_weighted.held_out_transitions()
    real = batch.terminated.float().mean().item()
    model = cartpole_weighted.model
    mean_probability = {}
    try:
        for calibrated in (False, True):
            model.config.calibrate_terminations = calibrated
            out = cartpole_weighted.predict(batch.obs, batch.action, deterministic=True)
            mean_probability[calibrated] = out.termination_prob.mean().item()
    finally:
        model.config.calibrate_terminations = False
    raw_error, calibrated_error = abs(mean_probability[False] - real), abs(mean_probability[True] - real)
    assert calibrated_error < 0.5 * raw_error, (real, mean_probability)


def test_state_and_outputs_shapes(pendulum_spaces):
    model = create_world_model("ensemble:ci", *pendulum_spaces)
    state = model.encode(torch.zeros(4, 3))
    assert set(state) == {"obs", "reward", "continue_logits", "uncertainty"}
    assert (model.decode(state).continue_prob > 0.99).all() and (state["uncertainty"] == 0).all()
    out = model.decode(model.transition(state, torch.zeros(4, 1)))
    assert out.obs.shape == (4, 3)
    assert out.reward.shape == out.continue_logits.shape == out.uncertainty.shape == (4,)
    assert model.io_contract()["predictions"] == ["obs", "reward", "continue_logits", "uncertainty"]


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_beta_nll_weighs_a_rows_mean_error_by_its_variance_to_the_power_beta_minus_one(
    pendulum, pendulum_spaces, monkeypatch, beta
):
    """Two rows with the same mean error, predicted with log-variances b (narrow) and a (wide): plain
    NLL pulls the narrow row's mean e^(a-b) times harder than the wide one's, beta-NLL e^((1-beta)(a-b))
    times (beta 1: alike, as plain squared error would)."""
    batch = pendulum.held_out_transitions()
    steps = TransitionBatch(*(t[:2] for t in dataclasses.astuple(batch)))
    model = create_world_model("ensemble:ci", *pendulum_spaces, nll_beta=beta)
    members, d = model.config.members, model.target_dim
    mean = (model._targets(steps) + 0.5).expand(members, -1, -1).clone().requires_grad_(True)
    raw_logvar = torch.tensor([-4.0, 0.0]).view(1, 2, 1).expand(members, 2, d)
    monkeypatch.setattr(model, "_forward", lambda x: torch.cat([mean, raw_logvar], dim=-1))
    model.loss(steps).loss.backward()
    logvar = model._split(torch.cat([mean, raw_logvar], dim=-1))[1].detach()
    narrow_over_wide = (mean.grad[:, 0] / mean.grad[:, 1]).flatten()
    expected = torch.exp((beta - 1.0) * (logvar[:, 0] - logvar[:, 1])).flatten()
    torch.testing.assert_close(narrow_over_wide, expected, rtol=1e-4, atol=0.0)


def test_spaces_and_config_errors(pendulum_spaces):
    with pytest.raises(SpaceError, match="dreamer"):
        create_world_model("ensemble:ci", spaces.Box(0, 255, (64, 64, 3), np.uint8), pendulum_spaces[1])
    with pytest.raises(ConfigError, match="elites"):
        create_world_model("ensemble:ci", *pendulum_spaces, members=2, elites=3)
    with pytest.raises(ConfigError, match="sequence_length"):
        create_world_model("ensemble:ci", *pendulum_spaces, sequence_length=0)
    with pytest.raises(ConfigError, match="noise_scale"):
        create_world_model("ensemble:ci", *pendulum_spaces, noise_scale=-1.0)
    with pytest.raises(ConfigError, match="termination_positive_weight"):
        create_world_model("ensemble:ci", *pendulum_spaces, termination_positive_weight=0.0)
    with pytest.raises(ConfigError, match="nll_beta must be in"):
        create_world_model("ensemble:ci", *pendulum_spaces, nll_beta=2.0)


def test_presets_in_the_catalog():
    from worldflux_gym.core import catalog

    entries = {e.name: e for e in catalog() if e.family == "ensemble"}
    assert entries["ensemble:ci"].maturity == "test"
    assert entries["ensemble:default"].maturity == "experimental"
    # 7 members x (23*200 + 3*200*200 + 200*36 weights + 4*200 + 36 biases) + 2*18 logvar bounds
    # + the termination MLP on the next observation (17 -> 64 -> 64 -> 1)
    termination = 17 * 64 + 64 + 64 * 64 + 64 + 64 + 1
    assert (
        entries["ensemble:default"].parameters
        == 7 * (23 * 200 + 3 * 200 * 200 + 200 * 36 + 4 * 200 + 36) + 36 + termination
    )


def test_cached_elite_weights_follow_weight_updates(pendulum):
    # Imagination caches the elites' gathered weights; an in-place update must invalidate the cache.
    model = copy.deepcopy(pendulum.model)
    batch = pendulum.held_out_transitions()
    with torch.inference_mode():
        before = model.transition(model.encode(batch.obs), batch.action, deterministic=True)["obs"]
    with torch.no_grad():
        model.output_layer.bias[model.elite_index] += 1.0  # shifts every elite's predicted change
    with torch.inference_mode():
        after = model.transition(model.encode(batch.obs), batch.action, deterministic=True)["obs"]
    fresh = copy.deepcopy(model)  # no cache carried over: new storage
    fresh.__dict__.pop("_weight_cache", None)
    with torch.inference_mode():
        expected = fresh.transition(fresh.encode(batch.obs), batch.action, deterministic=True)["obs"]
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected)


def test_large_cpu_batches_in_slices_give_the_same_step(walker, monkeypatch):
    import worldflux_gym.models.ensemble.cpu_kernels as ensemble_model

    batch = walker.held_out_transitions()
    obs, action = batch.obs.repeat(3, 1), batch.action.repeat(3, 1)  # > 2 slices per member either way

    def step(report: bool):
        return walker.predict(
            obs, action, generator=torch.Generator().manual_seed(2), report_uncertainty=report
        )

    whole = [step(True), step(False)]
    monkeypatch.setattr(ensemble_model, "_CPU_CHUNK_FLOATS", 1)  # slices of 256 rows (the floor)
    sliced = [step(True), step(False)]
    for a, b in zip(whole, sliced):
        torch.testing.assert_close(a.obs, b.obs)
        torch.testing.assert_close(a.continue_logits, b.continue_logits)
    torch.testing.assert_close(whole[0].uncertainty, sliced[0].uncertainty)


def test_cpu_imagination_computes_what_training_computes(walker, monkeypatch):
    # Imagination on the CPU runs member by member through oneDNN's fused product + SiLU, or
    # F.linear where a build has no oneDNN; training runs one batched product per layer. All three
    # must be the same function of the weights.
    import worldflux_gym.models.ensemble.cpu_kernels as ensemble_model

    model, batch = walker.model, walker.held_out_transitions()
    x = model._features(batch.obs, batch.action).expand(model.config.members, -1, -1)
    with torch.enable_grad():
        reference = model._forward(x).detach()
        reference_continue = model._continue_logits(batch.next_obs).detach()
    outputs = {}
    for name, fused in (("oneDNN", ensemble_model._FUSED_LINEAR), ("plain", None)):
        monkeypatch.setattr(ensemble_model, "_FUSED_LINEAR", fused)
        with torch.inference_mode():
            outputs[name] = (model._forward(x), model._continue_logits(batch.next_obs))
    for name, (out, continue_logits) in outputs.items():
        torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4, msg=name)
        torch.testing.assert_close(continue_logits, reference_continue, rtol=1e-4, atol=1e-4, msg=name)


def test_a_model_loaded_under_inference_mode_is_an_ordinary_model(pendulum, tmp_path):
    pendulum.model.save_pretrained(tmp_path / "model")
    batch = pendulum.held_out_transitions()
    with torch.inference_mode():
        model = from_pretrained(tmp_path / "model", device="cpu")
        dreamed = model.transition(model.encode(batch.obs), batch.action, deterministic=True)["obs"]
    assert not any(p.is_inference() for p in model.parameters())  # it could be fine-tuned
    model.train()
    model.loss(batch).loss.backward()
    assert model.output_layer.bias.grad is not None
    torch.testing.assert_close(
        dreamed.clone(),
        pendulum.model.transition(pendulum.model.encode(batch.obs), batch.action, deterministic=True)["obs"],
    )


def test_a_model_built_under_inference_mode_dreams_and_sees_weight_updates(pendulum):
    # Weights made under inference_mode are inference tensors, which track no version: the cached
    # member weights must neither fail on them nor go stale when they change in place.
    batch = pendulum.held_out_transitions()
    source = pendulum.model
    with torch.inference_mode():
        model = type(source)(source.config, source.observation_space, source.action_space)
        model.load_state_dict(source.state_dict())
        model.eval()
        assert model.output_layer.bias.is_inference()
        before = model.transition(model.encode(batch.obs), batch.action, deterministic=True)["obs"]
        expected = pendulum.model.transition(
            pendulum.model.encode(batch.obs), batch.action, deterministic=True
        )["obs"]
        model.output_layer.bias[model.elite_index] += 1.0
        after = model.transition(model.encode(batch.obs), batch.action, deterministic=True)["obs"]
    torch.testing.assert_close(before, expected)
    assert not torch.allclose(before, after)
