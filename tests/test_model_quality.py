"""The held-out model-quality figures: persistence scores exactly 1, a fitted model scores below."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from worldflux_gym import create_world_model
from worldflux_gym.data import EpisodeBuffer, collect_episodes
from worldflux_gym.training.model_quality import evaluate_model, terminal_step_predictions


@pytest.fixture(scope="module")
def pendulum_data():
    episodes = collect_episodes("Pendulum-v1", 2400, num_envs=2, progress=False, seed=3)
    return EpisodeBuffer(episodes[:-2]), EpisodeBuffer(episodes[-2:])


def test_persistence_model_scores_one(pendulum_data, pendulum_spaces):
    _, held_out = pendulum_data
    model = create_world_model("tiny-mlp:ci", *pendulum_spaces)
    torch.nn.init.zeros_(model.net[-1].weight)
    torch.nn.init.zeros_(model.net[-1].bias)  # predicts o_{t+1} = o_t and reward 0
    quality = evaluate_model(model, held_out, horizons=(1, 10), windows=64)
    assert quality.open_loop_error[1] == pytest.approx(1.0)
    assert quality.open_loop_error[10] == pytest.approx(1.0)
    assert quality.reward_correlation is None  # a constant prediction has no correlation
    assert quality.termination_balanced_accuracy is None  # Pendulum never terminates


def test_fitted_model_beats_persistence_and_tracks_reward(pendulum_data, pendulum_spaces):
    train, held_out = pendulum_data
    torch.manual_seed(0)
    model = create_world_model("tiny-mlp:wide", *pendulum_spaces)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(600):
        loss = model.loss(train.sample_transitions(128, rng)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    quality = evaluate_model(model, held_out, horizons=(1, 10, 500), windows=128)
    assert quality.open_loop_error[1] < 0.5
    assert quality.open_loop_error[10] < 1.0
    assert quality.open_loop_error[500] is None  # no held-out episode is that long
    assert quality.reward_correlation > 0.8


def test_termination_accuracy_is_taken_at_every_terminal_step():
    # Random CartPole episodes all end in a termination; each one longer than the context counts.
    episodes = collect_episodes("CartPole-v1", 3000, progress=False, seed=5)
    held_out, context = EpisodeBuffer(episodes), 5
    expected = sum(bool(e.terminated[-1]) and len(e) > context for e in episodes)
    env = gym.make("CartPole-v1")
    model = create_world_model("tiny-mlp:ci", env.observation_space, env.action_space)
    for ends in (True, False):
        torch.nn.init.zeros_(model.net[-1].weight)
        torch.nn.init.zeros_(model.net[-1].bias)
        with torch.no_grad():
            model.net[-1].bias[-1] = -10.0 if ends else 10.0  # the continue logit
        quality = evaluate_model(model, held_out, horizons=(1,), context=context, windows=64)
        assert quality.terminal_steps == expected > 100
        # a constant answer is right on one class only, whichever it is
        assert quality.termination_balanced_accuracy == pytest.approx(0.5)
        probability = terminal_step_predictions(model, held_out, context)
        assert len(probability) == expected and np.all((probability > 0.5) == ends)
