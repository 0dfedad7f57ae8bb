"""The tdmpc2 family: contract, alignment, learning on real Pendulum/Walker2d data, the MPPI planner.

Two small models are fitted once per module on random-action data (a plain AdamW loop) and judged
on held-out episodes only.
"""

from __future__ import annotations

import dataclasses
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import worldflux_gym.models.tdmpc2  # noqa: F401  (registers "tdmpc2")
from worldflux_gym.core import (
    ConfigError,
    SequenceBatch,
    State,
    catalog,
    create_world_model,
    from_pretrained,
)
from worldflux_gym.data import EpisodeBuffer, collect_episodes
from worldflux_gym.models.common import TwoHotSymlog
from worldflux_gym.models.tdmpc2 import TDMPC2Model, TDMPC2Planner
from worldflux_gym.models.tdmpc2.networks import SimNorm


@dataclasses.dataclass
class Fitted:
    model: TDMPC2Model
    train: EpisodeBuffer
    held: EpisodeBuffer
    env_id: str


def fit(env_id: str, steps: int, updates: int, seed: int = 0, preset: str = "ci", **overrides) -> Fitted:
    episodes = collect_episodes(env_id, steps, seed=seed, progress=False)
    held_out = max(3, len(episodes) // 5)  # whole episodes: no window of the test set is trained on
    train, held = EpisodeBuffer(episodes[:-held_out]), EpisodeBuffer(episodes[-held_out:])
    env = gym.make(env_id)
    torch.manual_seed(seed)
    model = create_world_model(f"tdmpc2:{preset}", env.observation_space, env.action_space, **overrides)
    env.close()
    model.adapt_to_data(train.all_transitions())
    # fused: one kernel for the whole update, ~15% faster per step on CPU for a model this small
    optimizer = torch.optim.AdamW(model.parameters(), lr=model.config.learning_rate, fused=True)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    model.train()
    for _ in range(updates):
        batch = train.sample_sequences(model.config.batch_size, model.sequence_length, rng)
        loss = model.loss(batch).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), model.config.grad_clip)
        optimizer.step()
    model.eval()
    elapsed = time.perf_counter() - start
    print(f"\n{env_id} tdmpc2:{preset}: {len(episodes)} episodes, {updates} updates in {elapsed:.1f}s")
    return Fitted(model, train, held, env_id)


@pytest.fixture(scope="module")
def pendulum() -> Fitted:
    return fit("Pendulum-v1", steps=6000, updates=250)


@pytest.fixture(scope="module")
def walker() -> Fitted:
    return fit("Walker2d-v5", steps=6000, updates=250)


@pytest.fixture(scope="module")
def decoded_walker() -> Fitted:
    return fit("Walker2d-v5", steps=6000, updates=250, observation_decoder=True)


# --- contract ---------------------------------------------------------------------------------
def test_contract_presets_and_meta_device(pendulum_spaces):
    model = create_world_model("tdmpc2:ci", *pendulum_spaces)
    caps = model.capabilities
    assert not caps.decodes_observations and caps.predicts_reward and caps.predicts_termination
    assert not caps.recurrent and model.batch_type is SequenceBatch
    contract = model.io_contract()
    assert contract["state"]["latent"] == [[model.latent_dim], "torch.float32"]
    assert set(contract["state"]) == {"latent", "reward", "continue_logits", "uncertainty"}
    assert contract["predictions"] == ["reward", "continue_logits", "uncertainty"]
    assert caps.reports_uncertainty  # the uncertainty heads (tests/test_uncertainty_heads.py)

    obs = torch.as_tensor(np.stack([pendulum_spaces[0].sample() for _ in range(5)]))
    state = model.encode(obs)
    latent_space = gym.spaces.Box(0.0, 1.0, (model.latent_dim,))
    assert all(latent_space.contains(z.detach().numpy()) for z in state["latent"])
    groups = state["latent"].view(5, -1, model.config.simnorm_dim).sum(-1)
    torch.testing.assert_close(groups, torch.ones_like(groups))  # SimNorm: every group is a simplex
    out = model.decode(model.transition(state, torch.zeros(5, 1)))
    assert out.obs is None and out.reward.shape == (5,) and out.continue_logits.shape == (5,)
    assert out.extras["latent"].shape == (5, model.latent_dim)

    sizes = {e.name: e.parameters for e in catalog() if e.family == "tdmpc2"}  # built on "meta"
    assert sizes["tdmpc2:ci"] < 200_000
    assert 0.7e6 < sizes["tdmpc2:small"] < 1.5e6
    assert 4e6 < sizes["tdmpc2:default"] < 7e6
    # the targets are buffers: saved with the weights but not parameters
    assert not any("target" in name for name, _ in model.named_parameters())
    assert any(name.startswith("target_q__") for name in model.state_dict())


def test_two_hot_round_trip_and_simnorm():
    two_hot = TwoHotSymlog(101, -10.0, 10.0)
    y = torch.tensor([-500.0, -3.2, 0.0, 0.7, 42.0])
    target = two_hot.target(y)
    torch.testing.assert_close(target.sum(-1), torch.ones(5))
    assert (target > 0).sum(-1).max() <= 2
    torch.testing.assert_close(two_hot.mean(torch.log(target + 1e-12)), y, rtol=1e-3, atol=1e-3)
    z = SimNorm(8)(torch.randn(3, 16) * 10)
    torch.testing.assert_close(z.view(3, 2, 8).sum(-1), torch.ones(3, 2))


def _window_batch(model: TDMPC2Model, terminated_at: int | None, truncated_at: int | None) -> SequenceBatch:
    g = torch.Generator().manual_seed(0)
    b, t = 8, 3
    terminated = torch.zeros(b, t, dtype=torch.bool)
    truncated = torch.zeros(b, t, dtype=torch.bool)
    if terminated_at is not None:
        terminated[:, terminated_at] = True
    if truncated_at is not None:
        truncated[:, truncated_at] = True
    return SequenceBatch(
        obs=torch.randn(b, t + 1, 3, generator=g),
        action=torch.rand(b, t, 1, generator=g) * 4 - 2,
        reward=torch.randn(b, t, generator=g),
        terminated=terminated,
        truncated=truncated,
        mask=torch.ones(b, t, dtype=torch.bool),
        is_first=torch.zeros(b, dtype=torch.bool),
    )


def _components(model: TDMPC2Model, batch: SequenceBatch) -> dict[str, float]:
    torch.manual_seed(0)  # the loss draws target heads and policy noise
    return model.loss(batch).components


def test_truncation_is_not_learned_and_padding_is_ignored(pendulum_spaces):
    # tau=1 so that update_targets() copies the online Qs; eval: no dropout, no target updates
    model = create_world_model("tdmpc2:ci", *pendulum_spaces, tau=1.0).eval()
    with torch.no_grad():  # the Q heads start at zero; give them values so that bootstraps matter
        model.q.net[-1].bias.normal_(0.0, 3.0)
    model.update_targets()
    plain = _components(model, _window_batch(model, None, None))
    assert _components(model, _window_batch(model, None, 2)) == plain  # a time limit changes nothing
    ended = _components(model, _window_batch(model, 2, None))
    assert ended["continue"] != plain["continue"]  # a real termination is a target...
    assert ended["value"] != plain["value"]  # ...and cuts the bootstrap

    # Steps past an episode's end (mask False) must not count, whatever they hold.
    batch = _window_batch(model, None, None)
    batch.mask[:, 2] = False
    masked = _components(model, batch)
    batch.obs[:, 3] += 100.0
    batch.action[:, 2] = -batch.action[:, 2]
    batch.reward[:, 2] = 1e4
    batch.terminated[:, 2] = True
    assert _components(model, batch) == masked


def test_terminal_steps_weigh_more_with_termination_positive_weight(pendulum_spaces):
    plain = create_world_model("tdmpc2:ci", *pendulum_spaces).eval()
    weighted = create_world_model("tdmpc2:ci", *pendulum_spaces, termination_positive_weight=10.0).eval()
    weighted.load_state_dict(plain.state_dict())
    running = _window_batch(plain, None, None)
    assert _components(weighted, running) == _components(plain, running)  # no terminal step: no change
    ended = _window_batch(plain, 2, None)
    assert _components(weighted, ended)["continue"] > _components(plain, ended)["continue"]
    with pytest.raises(ConfigError, match="termination_positive_weight must be > 0"):
        create_world_model("tdmpc2:ci", *pendulum_spaces, termination_positive_weight=0.0)


def test_targets_are_polyak_averaged_during_training_only(pendulum_spaces):
    model = create_world_model("tdmpc2:ci", *pendulum_spaces)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = _window_batch(model, None, None)
    name = next(iter(model._target_names))
    online = dict(model.q.named_parameters())[name]
    target = lambda: getattr(model, model._target_names[name]).clone()  # noqa: E731
    before = target()
    torch.testing.assert_close(before, online.detach())  # targets start as copies
    for _ in range(3):
        loss = model.loss(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    moved = target()
    assert not torch.equal(moved, before) and not torch.equal(moved, online.detach())
    # one more training-mode call moves the targets by tau towards the online weights
    expected = moved + model.config.tau * (online.detach() - moved)
    model.loss(batch)
    torch.testing.assert_close(target(), expected)
    # validation (no_grad) leaves them alone
    snapshot = target()
    model.validate(batch)
    assert torch.equal(target(), snapshot)


# --- learning -----------------------------------------------------------------------------------
def open_loop_errors(fitted: Fitted, k: int) -> tuple[float, float]:
    """Mean squared latent error after ``k`` open-loop steps, and that of the persistence baseline."""
    model = fitted.model
    batch = fitted.held.sample_sequences(512, k, np.random.default_rng(1))
    valid = batch.mask.all(1)  # whole k-step windows inside an episode
    with torch.no_grad():
        z0 = model.encode(batch.obs[valid, 0])
        rolled = model.rollout(z0, batch.action[valid]).states[-1]["latent"]
        real = model.encode(batch.obs[valid, k])["latent"]
        model_error = (rolled - real).pow(2).sum(-1).mean().item()
        persistence = (z0["latent"] - real).pow(2).sum(-1).mean().item()
    return model_error, persistence


@pytest.mark.parametrize("name", ["pendulum", "walker"])
def test_open_loop_latent_error_beats_persistence(name, request):
    fitted = request.getfixturevalue(name)
    for k in (1, 10):
        model_error, persistence = open_loop_errors(fitted, k)
        print(f"{name} {k}-step latent error {model_error:.4f} vs persistence {persistence:.4f}")
        assert persistence > 1e-3  # the latent has not collapsed to a constant
        assert model_error < 0.8 * persistence


def predicted_rewards(fitted: Fitted, shuffle: bool = False) -> tuple[np.ndarray, np.ndarray, State]:
    steps = fitted.held.all_transitions()
    action = steps.action
    if shuffle:
        action = action[torch.randperm(len(action), generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        state = fitted.model.transition(fitted.model.encode(steps.obs), action)
    return state["reward"].numpy(), steps.reward.numpy(), state


@pytest.mark.parametrize("name,min_corr", [("pendulum", 0.9), ("walker", 0.7)])
def test_reward_predictions_correlate_with_real_rewards(name, min_corr, request):
    predicted, real, _ = predicted_rewards(request.getfixturevalue(name))
    corr = np.corrcoef(predicted, real)[0, 1]
    print(f"{name} held-out reward correlation {corr:.3f}")
    assert corr > min_corr


def test_reward_depends_on_the_action_taken(walker):
    model = walker.model
    obs = torch.as_tensor(walker.held.obs[:4]).float()
    with torch.no_grad():
        state = model.encode(obs)
        assert torch.equal(state["reward"], torch.zeros(4))  # nothing earned before a step
        a = torch.zeros(4, 6)
        r1 = model.transition(state, a)["reward"]
        r2 = model.transition(state, a + 0.9)["reward"]
    assert not torch.allclose(r1, r2)
    # Walker2d's reward follows the forward velocity the action produces: the real action explains it
    # better than an action taken from another step.
    predicted, real, _ = predicted_rewards(walker)
    shuffled, _, _ = predicted_rewards(walker, shuffle=True)
    error, error_shuffled = np.mean((predicted - real) ** 2), np.mean((shuffled - real) ** 2)
    print(f"walker reward MSE with the real actions {error:.4f}, with shuffled actions {error_shuffled:.4f}")
    assert error < 0.9 * error_shuffled


def test_continue_learns_terminations_not_time_limits(walker, pendulum):
    steps = walker.held.all_transitions()
    _, _, state = predicted_rewards(walker)
    p_end = torch.sigmoid(-state["continue_logits"])
    at_end, elsewhere = p_end[steps.terminated].mean().item(), p_end[~steps.terminated].mean().item()
    print(f"walker P(termination): {at_end:.3f} at real terminations, {elsewhere:.3f} elsewhere")
    assert steps.terminated.sum() >= 10
    assert at_end > 0.5 and elsewhere < 0.1
    # Pendulum only ever ends by its time limit: the model must not learn those ends.
    steps = pendulum.held.all_transitions()
    _, _, state = predicted_rewards(pendulum)
    assert steps.truncated.sum() >= 3 and not steps.terminated.any()
    p_truncated = torch.sigmoid(-state["continue_logits"])[steps.truncated].max().item()
    print(f"pendulum P(termination) at time limits: max {p_truncated:.4f}")
    assert p_truncated < 0.05


# --- the observation decoder -------------------------------------------------------------------
def test_observation_decoder_leaves_every_other_weight_its_gradient(walker):
    """The decoder learns on detached latents: the world model learns exactly as it does without one."""
    plain = walker.model
    decoded = create_world_model(
        "tdmpc2:ci", plain.observation_space, plain.action_space, observation_decoder=True
    )
    missing, unexpected = decoded.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(n.startswith("observation_decoder.") for n in missing)
    assert decoded.capabilities.decodes_observations and not plain.capabilities.decodes_observations
    batch = walker.train.sample_sequences(32, plain.sequence_length, np.random.default_rng(1))
    grads = []
    for model in (plain, decoded):
        model.eval()  # no target update, no dropout: both losses see the same numbers
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the policy loss samples actions
        model.loss(batch).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
        model.zero_grad(set_to_none=True)
    decoder_grads = {n for n in grads[1] if n.startswith("observation_decoder.")}
    assert decoder_grads  # the decoder itself learns
    assert grads[0].keys() == grads[1].keys() - decoder_grads
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], rtol=1e-5, atol=1e-7), name


def test_observation_decoder_reads_held_out_walker_states(decoded_walker):
    model, held = decoded_walker.model, decoded_walker.held.all_transitions()
    scale = torch.as_tensor(decoded_walker.train.obs).float().std(0)
    mean = torch.as_tensor(decoded_walker.train.obs).float().mean(0)

    def error(prediction: torch.Tensor, target: torch.Tensor) -> float:
        return ((prediction - target) / scale).pow(2).mean().item()

    with torch.no_grad():
        state = model.encode(held.obs)
        reconstructed = model.decode(state).obs
        dreamed = model.decode(model.transition(state, held.action)).obs
    going_on = ~held.terminated  # a terminal step's next observation is one no dream step continues from
    baseline = error(mean.expand_as(held.obs), held.obs)
    persistence = error(held.obs[going_on], held.next_obs[going_on])
    print(
        f"held-out walker, standardised MSE: decoded {error(reconstructed, held.obs):.4f} (the training "
        f"mean {baseline:.4f}); one dreamed step {error(dreamed[going_on], held.next_obs[going_on]):.4f} "
        f"(persistence {persistence:.4f})"
    )
    assert reconstructed.shape == held.obs.shape
    assert error(reconstructed, held.obs) < 0.3 * baseline
    assert error(dreamed[going_on], held.next_obs[going_on]) < 0.6 * baseline


def test_a_dream_over_a_decoding_tdmpc2_shows_the_real_observations(decoded_walker, tmp_path):
    decoded_walker.model.save_pretrained(tmp_path / "decoded")
    env = gym.make("WorldFlux/TDMPC2-Walker-v2", checkpoint=str(tmp_path / "decoded"))
    real = gym.make("Walker2d-v5")
    assert env.observation_space == real.observation_space
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    next_obs, *_ = env.step(env.action_space.sample())
    assert obs.shape == (17,) and np.isfinite(next_obs).all() and not np.array_equal(obs, next_obs)
    env.close()
    real.close()


def test_save_load_round_trip_is_exact(pendulum, tmp_path):
    model = pendulum.model
    model.save_pretrained(tmp_path / "tdmpc2")
    loaded = from_pretrained(tmp_path / "tdmpc2", device="cpu")
    assert isinstance(loaded, TDMPC2Model) and loaded.preset == "ci"
    batch = pendulum.held.sample_sequences(16, 3, np.random.default_rng(3))
    with torch.no_grad():
        for m in (model, loaded):
            m.eval()
        a, b = model.encode(batch.obs[:, 0]), loaded.encode(batch.obs[:, 0])
        for t in range(3):
            a, b = model.transition(a, batch.action[:, t]), loaded.transition(b, batch.action[:, t])
        for name in ("latent", "reward", "continue_logits"):
            assert torch.equal(a[name], b[name])
        assert torch.equal(model.q_scale, loaded.q_scale)
    obs = batch.obs[:, 0].numpy()
    first = TDMPC2Planner(model, seed=7).act(obs)
    second = TDMPC2Planner(loaded, seed=7).act(obs)
    np.testing.assert_array_equal(first, second)


# --- planner ------------------------------------------------------------------------------------
def test_planner_returns_valid_batched_actions(walker):
    space = gym.make("Walker2d-v5").action_space
    planner = TDMPC2Planner(walker.model, seed=0)
    obs = walker.held.obs[:5]
    actions = planner.act(obs)
    assert actions.shape == (5, 6) and actions.dtype == space.dtype
    assert all(space.contains(a) for a in actions)
    single = planner.act(obs[0], deterministic=True)
    assert single.shape == (6,) and space.contains(single)
    tensor_actions = planner.act(torch.as_tensor(obs).float())
    assert isinstance(tensor_actions, torch.Tensor) and tensor_actions.shape == (5, 6)


def test_planner_handles_discrete_actions():
    env = gym.make("CartPole-v1")
    model = create_world_model("tdmpc2:ci", env.observation_space, env.action_space)
    obs = np.stack([env.observation_space.sample() for _ in range(4)])
    actions = TDMPC2Planner(model, seed=0).act(obs)
    assert actions.shape == (4,) and all(env.action_space.contains(int(a)) for a in actions)
    batch = SequenceBatch(
        obs=torch.as_tensor(np.stack([obs, obs], 1)),
        action=torch.as_tensor(actions[:, None]),
        reward=torch.ones(4, 1),
        terminated=torch.zeros(4, 1, dtype=torch.bool),
        truncated=torch.zeros(4, 1, dtype=torch.bool),
        mask=torch.ones(4, 1, dtype=torch.bool),
        is_first=torch.ones(4, dtype=torch.bool),
    )
    assert torch.isfinite(model.loss(batch).loss)


def test_planner_beats_random_actions_on_pendulum(pendulum):
    """From the same 16 real starts, 30 planned steps earn more real reward than 30 random ones."""
    returns = {}  # paired: the same start states for both
    for who in ("planner", "random"):
        envs = gym.make_vec("Pendulum-v1", num_envs=16, vectorization_mode="sync")
        envs.action_space.seed(0)
        obs, _ = envs.reset(seed=123)
        planner = TDMPC2Planner(pendulum.model, seed=0)
        total = np.zeros(16)
        for _ in range(30):
            action = planner.act(obs) if who == "planner" else envs.action_space.sample()
            obs, reward, _, _, _ = envs.step(action)
            total += reward
        envs.close()
        returns[who] = total
    gain = returns["planner"] - returns["random"]
    print(
        f"pendulum 30-step real return: planner {returns['planner'].mean():.1f}, "
        f"random {returns['random'].mean():.1f}, better in {(gain > 0).sum()}/16 starts"
    )
    # A short fit from random data plans only a little better than chance (no swing-up yet): the gain
    # is large from some starts and a small loss from others, so the test is on the paired mean.
    assert gain.mean() > 5.0


@pytest.mark.slow
def test_small_preset_learns_walker():
    """The CPU-sized preset (lr 3e-4, 256 windows per update) passes the same held-out checks.

    Measured once (600 updates, 327 s on a loaded machine): latent error 0.086 vs persistence 0.164
    after 1 step, 0.350 vs 1.595 after 10; reward correlation 0.944; P(end) 0.768 at real ends, 0.007 else.
    """
    fitted = fit("Walker2d-v5", steps=20_000, updates=600, preset="small")
    errors = {k: open_loop_errors(fitted, k) for k in (1, 10)}
    predicted, real, state = predicted_rewards(fitted)
    corr = np.corrcoef(predicted, real)[0, 1]
    steps = fitted.held.all_transitions()
    p_end = torch.sigmoid(-state["continue_logits"])
    at_end, elsewhere = p_end[steps.terminated].mean().item(), p_end[~steps.terminated].mean().item()
    for k, (model_error, persistence) in errors.items():
        print(f"small walker {k}-step latent error {model_error:.4f} vs persistence {persistence:.4f}")
    print(f"small walker reward correlation {corr:.3f}; P(end) {at_end:.3f} at ends, {elsewhere:.3f} else")
    for model_error, persistence in errors.values():
        assert persistence > 1e-3 and model_error < 0.8 * persistence
    assert corr > 0.7 and at_end > 0.5 and elsewhere < 0.1
