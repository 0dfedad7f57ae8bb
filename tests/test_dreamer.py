"""The ``dreamer`` family learns real dynamics, and keeps the alignment and termination conventions.

Learning is tested by learning: a tiny model is fitted on random-action data from Pendulum-v1 and
Walker2d-v5 and judged on held-out episodes against the persistence baseline (the last context
observation repeated). Synthetic episodes check what a one-step-off reward head or a continue head
trained on time limits would get wrong.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from PIL import Image

from worldflux_gym.core import ConfigError, SequenceBatch, create_world_model, from_pretrained
from worldflux_gym.data import Episode, EpisodeBuffer, collect_episodes
from worldflux_gym.training import Trainer, TrainerConfig

CONTEXT, HORIZON = 8, 10


# --- helpers ---------------------------------------------------------------------------------------
def new_model(observation_space, action_space, seed: int = 0, **overrides):
    """A fresh ``dreamer:ci`` model with seeded initial weights."""
    torch.manual_seed(seed)
    return create_world_model("dreamer:ci", observation_space, action_space, **overrides)


def split(
    episodes: list[Episode], held_out: float = 0.2, seed: int = 0
) -> tuple[EpisodeBuffer, EpisodeBuffer]:
    order = np.random.default_rng(seed).permutation(len(episodes))
    n = max(1, int(len(episodes) * held_out))
    return EpisodeBuffer([episodes[i] for i in order[n:]]), EpisodeBuffer([episodes[i] for i in order[:n]])


def fit(model, train: EpisodeBuffer, steps: int, batch: int = 32, lr: float = 3e-3, seed: int = 0):
    """``steps`` updates of the project's Trainer (AdamW, clipped); returns the training losses.

    The updates are driven one by one so that the losses can be checked; nothing is written to disk.
    """
    torch.manual_seed(seed)
    config = TrainerConfig(steps=steps, batch_size=batch, learning_rate=lr, seed=seed, progress=False)
    with warnings.catch_warnings():  # validation is done by the tests themselves
        warnings.filterwarnings("ignore", "no validation episodes")
        trainer = Trainer(model, (train, None), config, Path(tempfile.gettempdir()) / "dreamer-unused")
    trainer.adapt()  # the data's statistics, as Trainer.fit fits them first
    model.train()
    losses = [trainer.update(trainer.sample_batch())["loss"] for _ in range(steps)]
    model.eval()
    return losses


def open_loop_errors(model, held: EpisodeBuffer, n: int = 256):
    """Mean squared observation error per horizon step, of the model and of persistence: ``[HORIZON]``.

    The model burns in ``CONTEXT`` real steps with ``observe``, then rolls out open loop with the
    real actions (prior mode, deterministic). Persistence predicts the last context observation.
    """
    obs, action = held.sample_contexts(n, CONTEXT + HORIZON, np.random.default_rng(1))
    with torch.no_grad():
        state = model.observe(obs[:, : CONTEXT + 1], action[:, :CONTEXT])
        predicted = model.rollout(state, action[:, CONTEXT:], deterministic=True).obs.transpose(0, 1)
    real = obs[:, CONTEXT + 1 :]
    model_error = ((predicted - real) ** 2).mean((0, 2))
    persistence = ((obs[:, CONTEXT : CONTEXT + 1] - real) ** 2).mean((0, 2))
    return model_error, persistence


def one_step_rewards(model, held: EpisodeBuffer, n: int = 256):
    """Dreamed reward after a burned-in context and one real action, next to the real reward."""
    batch = held.sample_sequences(n, CONTEXT + 1, np.random.default_rng(2))
    with torch.no_grad():
        state = model.observe(batch.obs[:, : CONTEXT + 1], batch.action[:, :CONTEXT])
        state = model.transition(state, batch.action[:, CONTEXT], deterministic=True)
        predicted = model.decode(state).reward
    valid = batch.mask[:, CONTEXT]
    return predicted[valid].numpy(), batch.reward[:, CONTEXT][valid].numpy()


# --- learning on real envs -------------------------------------------------------------------------
LEARNING = {  # env id -> (random-action steps collected, updates, windows per update)
    "Pendulum-v1": (3000, 500, 64),
    "Walker2d-v5": (2500, 250, 32),
}


@pytest.fixture(scope="module", params=sorted(LEARNING))
def trained(request):
    env_id = request.param
    collect, steps, batch = LEARNING[env_id]
    train, held = split(collect_episodes(env_id, collect, seed=0, progress=False))
    env = gym.make(env_id)
    model = new_model(env.observation_space, env.action_space)
    losses = fit(model, train, steps, batch=batch)
    return env_id, model, train, held, losses


def test_open_loop_prediction_beats_persistence(trained):
    env_id, model, train, held, losses = trained
    model_error, persistence = open_loop_errors(model, held)
    print(f"{env_id}: loss {losses[0]:.2f} -> {np.mean(losses[-20:]):.2f}")
    print(f"{env_id}: model {model_error.numpy().round(3)}")
    print(f"{env_id}: persistence {persistence.numpy().round(3)}")
    assert model_error[0] < persistence[0], "1-step prediction is worse than repeating the last observation"
    assert model_error[HORIZON - 1] < persistence[HORIZON - 1], "10-step open-loop prediction is worse"


def test_dreamed_rewards_follow_real_rewards(trained):
    env_id, model, _, held, _ = trained
    predicted, real = one_step_rewards(model, held)
    correlation = np.corrcoef(predicted, real)[0, 1]
    print(f"{env_id}: reward correlation {correlation:.3f}")
    assert correlation > 0.6


# --- alignment and termination on synthetic episodes -----------------------------------------------
def synthetic_episodes(n: int, seed: int = 0) -> list[Episode]:
    """A 1-D walk ``x' = x + a``: reward = ``a`` (the action alone), terminated at ``x' >= 1.5``.

    The walk is *truncated* (never terminated) at ``x' <= -1.5`` and at a 20-step time limit, so a
    continue head that learned truncations would predict an end at the low wall.
    """
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(n):
        x, obs, actions = 0.0, [[0.0]], []
        terminated = truncated = False
        while not (terminated or truncated):
            a = rng.uniform(-1, 1)
            x += a
            obs.append([x])
            actions.append([a])
            terminated = x >= 1.5
            truncated = not terminated and (x <= -1.5 or len(actions) == 20)
        last = np.arange(len(actions)) == len(actions) - 1
        action = np.asarray(actions, np.float32)
        episodes.append(
            Episode(
                np.asarray(obs, np.float32), action, action[:, 0].copy(), last & terminated, last & truncated
            )
        )
    return episodes


WALK_SPACES = (spaces.Box(-np.inf, np.inf, (1,), np.float32), spaces.Box(-1.0, 1.0, (1,), np.float32))


def dream_one_step(model, held: list[Episode]) -> tuple[np.ndarray, np.ndarray]:
    """For every step ``t`` of every held-out walk the real history up to ``o_t`` is filtered and
    ``a_t`` is dreamed (prior mode): the rewards and termination probabilities of the states after
    ``a_t``, ``[N, T_max]`` (padded past each walk's end)."""
    steps = max(len(e) for e in held)
    obs = torch.zeros(len(held), steps + 1, 1)
    action = torch.zeros(len(held), steps, 1)
    for i, e in enumerate(held):
        obs[i, : len(e) + 1], action[i, : len(e)] = torch.as_tensor(e.obs), torch.as_tensor(e.action)
    rewards, ends = torch.zeros(len(held), steps), torch.zeros(len(held), steps)
    with torch.no_grad():
        state = model.encode(obs[:, 0])
        for t in range(steps):
            out = model.decode(model.transition(state, action[:, t], deterministic=True))
            rewards[:, t], ends[:, t] = out.reward, out.termination_prob
            state = model.update(state, action[:, t], obs[:, t + 1])
    return rewards.numpy(), ends.numpy()


@pytest.fixture(scope="module")
def walk_dreams():
    """A model fitted on synthetic walks, 100 held-out walks, and its one-step dreams along them."""
    model = new_model(*WALK_SPACES, sequence_length=8)
    # 400 updates: training windows run past the walks' ends (mostly padding here), so an update
    # holds fewer real steps than the windows' length says
    fit(model, EpisodeBuffer(synthetic_episodes(400)), 400)
    held = synthetic_episodes(100, seed=1)
    return (model, held, *dream_one_step(model, held))


def test_reward_belongs_to_the_state_after_the_action(walk_dreams):
    model, held, rewards, _ = walk_dreams
    predicted = np.concatenate([rewards[i, : len(e) - 1] for i, e in enumerate(held)])
    taken = np.concatenate([e.action[:-1, 0] for e in held])
    next_taken = np.concatenate([e.action[1:, 0] for e in held])
    # Reward = a_t exactly, and the actions are independent: only a model that predicts reward[t]
    # from the state after a_t can get it; one shifted by a step would follow a_{t+1} or a_{t-1},
    # which are independent noise.
    assert np.corrcoef(predicted, taken)[0, 1] > 0.9
    assert abs(np.corrcoef(predicted, next_taken)[0, 1]) < 0.3

    # From one state, the dreamed reward follows whichever action is taken.
    with torch.no_grad():
        state = model.encode(torch.zeros(2, 1))
        reward = model.decode(
            model.transition(state, torch.tensor([[-0.8], [0.8]]), deterministic=True)
        ).reward
    assert reward[0] < -0.4 and reward[1] > 0.4, reward


def test_continue_learns_terminations_not_truncations(walk_dreams):
    _, held, _, ends = walk_dreams
    last = {"terminated": [], "truncated at the wall": []}
    running = np.concatenate([ends[i, : len(e) - 1] for i, e in enumerate(held)])
    for i, e in enumerate(held):
        if e.terminated[-1]:
            last["terminated"].append(ends[i, len(e) - 1])
        elif e.obs[-1, 0] <= -1.5:
            last["truncated at the wall"].append(ends[i, len(e) - 1])
    mean = {k: float(np.mean(v)) for k, v in last.items()} | {"running": float(running.mean())}
    print("termination probability", mean)
    assert len(last["terminated"]) > 10 and len(last["truncated at the wall"]) > 10
    assert mean["terminated"] > 0.5, mean
    assert mean["truncated at the wall"] < 0.1 and mean["running"] < 0.1, mean


def test_weighting_terminal_steps_sharpens_a_rare_termination_rule():
    # About 5% of the walks' steps are terminal. Same data, seed and 60 updates; only the weight of
    # the terminal steps in the continue BCE differs. The heads as trained (not calibrated).
    train, held = EpisodeBuffer(synthetic_episodes(400)), synthetic_episodes(100, seed=1)
    accuracy = {}
    for weight in (1.0, 10.0):
        model = new_model(
            *WALK_SPACES, sequence_length=8, termination_positive_weight=weight, calibrate_terminations=False
        )
        fit(model, train, 60)
        _, ends = dream_one_step(model, held)
        at_end = np.array([ends[i, len(e) - 1] for i, e in enumerate(held) if e.terminated[-1]])
        running = np.concatenate([ends[i, : len(e) - 1] for i, e in enumerate(held)])
        accuracy[weight] = ((at_end > 0.5).mean() + (running < 0.5).mean()) / 2
    assert accuracy[10.0] > accuracy[1.0] + 0.05 and accuracy[10.0] > 0.85, accuracy


# --- contract details ------------------------------------------------------------------------------
def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="termination_positive_weight must be > 0"):
        new_model(*WALK_SPACES, termination_positive_weight=0.0)
    with pytest.raises(ConfigError, match="uncertainty_heads must be 0"):
        new_model(*WALK_SPACES, uncertainty_heads=1)


def test_masked_steps_do_not_change_the_loss(pendulum_spaces):
    model = new_model(*pendulum_spaces)
    B, T = 3, 6
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 3:] = False
    no = torch.zeros(B, T, dtype=torch.bool)
    obs, action, reward = torch.randn(B, T + 1, 3), torch.rand(B, T, 1) * 4 - 2, torch.randn(B, T)
    batch = SequenceBatch(obs, action, reward, no, no.clone(), mask, torch.ones(B, dtype=torch.bool))
    garbage = SequenceBatch(**{k: v.clone() for k, v in vars(batch).items()})
    garbage.obs[0, 4:] = 100.0
    garbage.reward[0, 3:] = -50.0
    garbage.terminated[0, 3:] = True
    torch.manual_seed(0)
    clean = model.loss(batch).loss
    torch.manual_seed(0)
    assert torch.equal(model.loss(garbage).loss, clean)
    garbage.obs[0, 3] = 100.0  # a valid step does count
    torch.manual_seed(0)
    assert not torch.equal(model.loss(garbage).loss, clean)


def test_observe_equals_encode_then_update(pendulum_spaces):
    model = new_model(*pendulum_spaces)
    obs, action = torch.randn(4, 6, 3), torch.rand(4, 5, 1) * 4 - 2
    with torch.no_grad():
        fast = model.observe(obs, action)
        slow = model.encode(obs[:, 0])
        for t in range(5):
            slow = model.update(slow, action[:, t], obs[:, t + 1])
    assert torch.allclose(fast["deter"], slow["deter"], atol=1e-6) and torch.equal(
        fast["stoch"], slow["stoch"]
    )
    assert model.initial_state(4)["stoch"].shape == (4, 8, 8)
    # Without gradients the one-hot latents are gathered instead of multiplied: same predictions.
    with torch.no_grad():
        gathered = model.decode(model.transition(fast, action[:, 0], deterministic=True))
    dense = model.decode(model.transition(fast, action[:, 0], deterministic=True))
    for name in ("obs", "reward", "continue_logits"):
        assert torch.allclose(getattr(gathered, name), getattr(dense, name), atol=1e-5), name


def test_save_load_round_trip_and_seeded_dreams(tmp_path, pendulum_spaces):
    model = new_model(*pendulum_spaces).eval()
    obs, action = torch.randn(5, 4, 3), torch.rand(5, 12, 1) * 4 - 2
    loaded = from_pretrained(model.save_pretrained(tmp_path / "dreamer"), device="cpu")

    def dream(m, seed):
        with torch.no_grad():
            state = m.observe(obs, action[:, :3])
            return m.rollout(state, action[:, 3:], generator=torch.Generator().manual_seed(seed))

    a, b, c = dream(model, 7), dream(loaded, 7), dream(model, 8)
    assert torch.equal(a.obs, b.obs) and torch.equal(a.reward, b.reward)
    assert torch.equal(a.continue_prob, b.continue_prob)
    assert not torch.equal(a.obs, c.obs), "a different seed should give a different dream"
    assert a.obs.shape == (9, 5, 3) and a.reward.shape == (9, 5)


def test_discrete_actions_cartpole():
    env = gym.make("CartPole-v1")
    train = EpisodeBuffer(collect_episodes("CartPole-v1", 600, seed=0, progress=False))
    model = new_model(env.observation_space, env.action_space)
    losses = fit(model, train, 30, batch=16)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    with torch.no_grad():
        state = model.encode(torch.as_tensor(np.stack([env.reset(seed=i)[0] for i in range(3)])))
        out = model.decode(model.transition(state, torch.tensor([0, 1, 1])))
    assert out.obs.shape == (3, 4) and out.continue_logits.shape == (3,)


def rendered_pendulum_episode(steps: int, seed: int = 0) -> Episode:
    """Real Pendulum frames (500x500) resampled to 64x64 with PIL's antialiasing bilinear filter."""
    env = gym.make("Pendulum-v1", render_mode="rgb_array")
    env.reset(seed=seed)
    env.action_space.seed(seed)

    def frame():
        return np.asarray(Image.fromarray(env.render()).resize((64, 64), Image.Resampling.BILINEAR))

    frames, actions, rewards = [frame()], [], []
    for _ in range(steps):
        action = env.action_space.sample()
        _, reward, _, _, _ = env.step(action)
        frames.append(frame())
        actions.append(action)
        rewards.append(reward)
    env.close()
    flags = np.zeros(steps, dtype=bool)
    return Episode(np.stack(frames), np.stack(actions), np.asarray(rewards, np.float32), flags, flags)


def test_cnn_path_on_rendered_frames():
    episode = rendered_pendulum_episode(40)
    assert episode.obs.shape == (41, 64, 64, 3) and episode.obs.dtype == np.uint8
    assert episode.obs.std() > 5, "a rendered frame should not be blank"
    image_space = spaces.Box(0, 255, (64, 64, 3), np.uint8)
    model = new_model(image_space, gym.make("Pendulum-v1").action_space, sequence_length=8)
    with torch.no_grad():
        out = model.decode(model.encode(torch.as_tensor(episode.obs[:4])))
    assert out.obs.shape == (4, 64, 64, 3) and out.obs.min() >= 0.0 and out.obs.max() <= 255.0
    losses = fit(model, EpisodeBuffer([episode]), 20, batch=4)
    assert np.mean(losses[-5:]) < 0.5 * losses[0]
