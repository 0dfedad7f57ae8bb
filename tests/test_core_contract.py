"""The world-model contract: state, batches, outputs, registry and catalog."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from worldflux_gym.core import (
    ConfigError,
    ModelOutput,
    SequenceBatch,
    SpaceError,
    State,
    catalog,
    create_world_model,
)
from worldflux_gym.core.spaces import action_features, space_from_json, space_to_json


def test_state_moves_selects_and_joins():
    s = State({"a": torch.arange(6.0).reshape(3, 2), "b": torch.tensor([1, 2, 3])}, {"tag": 1})
    assert s.batch_size == 3 and s.device.type == "cpu"
    picked = s.select(torch.tensor([True, False, True]))
    assert picked["b"].tolist() == [1, 3] and picked.meta == {"tag": 1}
    joined = State.cat([s, picked])
    assert joined.batch_size == 5 and joined["a"][3:].tolist() == [[0.0, 1.0], [4.0, 5.0]]
    mixed = s.replace_rows(torch.tensor([False, True, False]), State({"a": -s["a"], "b": -s["b"]}))
    assert mixed["b"].tolist() == [1, -2, 3] and mixed["a"][1].tolist() == [-2.0, -3.0]
    with pytest.raises(ValueError, match="batch size"):
        State({"a": torch.zeros(2), "b": torch.zeros(3)})
    with pytest.raises(ValueError, match="names"):
        State.cat([s, State({"a": torch.zeros(1, 2)})])


def test_sequence_batch_alignment_and_transitions():
    # One episode o0..o3 with a1 ending in a real termination and a mask past the end.
    obs = torch.tensor([[[0.0], [1.0], [2.0], [3.0]]])
    action = torch.tensor([[[10.0], [11.0], [12.0]]])
    reward = torch.tensor([[0.1, 0.2, 0.0]])
    terminated = torch.tensor([[False, True, False]])
    truncated = torch.zeros(1, 3, dtype=torch.bool)
    mask = torch.tensor([[True, True, False]])
    batch = SequenceBatch(obs, action, reward, terminated, truncated, mask, torch.tensor([True]))
    assert batch.continue_target().tolist() == [[1.0, 0.0, 1.0]]
    steps = batch.transitions()
    # reward[t] and terminated[t] belong to o_{t+1}, reached by a_t from o_t
    assert steps.obs.squeeze(-1).tolist() == [0.0, 1.0]
    assert steps.next_obs.squeeze(-1).tolist() == [1.0, 2.0]
    assert steps.action.squeeze(-1).tolist() == [10.0, 11.0]
    assert steps.reward.tolist() == pytest.approx([0.1, 0.2])
    assert steps.terminated.tolist() == [False, True]
    with pytest.raises(ValueError, match="T\\+1"):
        SequenceBatch(obs[:, :3], action, reward, terminated, truncated, mask, torch.tensor([True]))


def test_truncation_is_not_a_termination_target():
    obs = torch.zeros(1, 3, 1)
    batch = SequenceBatch(
        obs,
        torch.zeros(1, 2, 1),
        torch.zeros(1, 2),
        torch.tensor([[False, False]]),
        torch.tensor([[False, True]]),
        torch.ones(1, 2, dtype=torch.bool),
        torch.tensor([True]),
    )
    assert batch.continue_target().tolist() == [[1.0, 1.0]]


def test_model_output_names_logits_and_probabilities():
    out = ModelOutput(continue_logits=torch.tensor([0.0, 100.0, -100.0]))
    assert out.continue_prob.tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert out.termination_prob.tolist() == pytest.approx([0.5, 0.0, 1.0])
    assert ModelOutput().continue_prob is None


@pytest.mark.parametrize(
    "space",
    [
        spaces.Box(-1.0, 1.0, (6,), np.float32),
        spaces.Box(np.array([0.0, -np.inf]), np.array([1.0, np.inf]), dtype=np.float64),
        spaces.Box(0, 255, (64, 64, 3), np.uint8),
        spaces.Discrete(3, start=1),
    ],
)
def test_space_json_round_trip(space):
    again = space_from_json(space_to_json(space))
    assert again == space


def test_discrete_actions_become_one_hot():
    feats = action_features(torch.tensor([1, 3]), spaces.Discrete(3, start=1))
    assert feats.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]


def test_factory_builds_for_box_and_discrete(pendulum_spaces):
    obs_space, act_space = pendulum_spaces
    model = create_world_model("tiny-mlp:ci", obs_space, act_space)
    assert model.family == "tiny-mlp" and model.preset == "ci" and model.config.hidden == 16
    state = model.encode(torch.zeros(4, 3))
    out = model.decode(model.transition(state, torch.zeros(4, 1)))
    assert out.obs.shape == (4, 3) and out.reward.shape == (4,)

    cartpole = gym.make("CartPole-v1")
    model = create_world_model("tiny-mlp:wide", cartpole.observation_space, cartpole.action_space, hidden=8)
    out = model.decode(model.transition(model.encode(torch.zeros(2, 4)), torch.tensor([0, 1])))
    assert out.obs.shape == (2, 4) and model.config.hidden == 8 and model.config.layers == 3


def test_factory_errors_name_the_valid_choices(pendulum_spaces):
    obs_space, act_space = pendulum_spaces
    with pytest.raises(ConfigError, match="registered families:.*tiny-mlp"):
        create_world_model("nope:ci", obs_space, act_space)
    with pytest.raises(ConfigError, match=r"presets of 'tiny-mlp': \['ci', 'wide'\]"):
        create_world_model("tiny-mlp:huge", obs_space, act_space)
    with pytest.raises(
        ConfigError, match=r"unknown override\(s\) \['widht'\].*valid fields: \['hidden', 'layers'\]"
    ):
        create_world_model("tiny-mlp:ci", obs_space, act_space, widht=3)
    with pytest.raises(SpaceError, match="Box or Discrete|1-D Box"):
        create_world_model("tiny-mlp:ci", obs_space, spaces.MultiDiscrete([2, 2]))
    with pytest.raises(SpaceError, match="FlattenObservation"):
        create_world_model("tiny-mlp:ci", spaces.Dict({"a": obs_space}), act_space)


def test_catalog_parameter_counts_match_built_models():
    entries = {e.name: e for e in catalog()}
    assert {"tiny-mlp:ci", "tiny-mlp:wide"} <= set(entries)
    for entry in entries.values():
        from worldflux_gym.core.registry import _PRESETS

        preset = _PRESETS[entry.family][entry.preset]
        built = create_world_model(entry.name, preset.observation_space, preset.action_space)
        assert entry.parameters == sum(p.numel() for p in built.parameters()), entry.name
        assert entry.maturity in ("stable", "experimental", "test")
    assert entries["tiny-mlp:wide"].parameters > entries["tiny-mlp:ci"].parameters


def test_rollout_stacks_time_first(pendulum_spaces):
    model = create_world_model("tiny-mlp:ci", *pendulum_spaces)
    traj = model.rollout(model.encode(torch.zeros(5, 3)), torch.zeros(5, 7, 1))
    assert traj.horizon == 7 and traj.obs.shape == (7, 5, 3) and traj.continue_prob.shape == (7, 5)
    assert ((traj.continue_prob >= 0) & (traj.continue_prob <= 1)).all()


@pytest.mark.parametrize("name", ["ensemble:ci", "dreamer:ci", "tdmpc2:ci"])
def test_a_model_created_under_inference_mode_can_be_trained(name):
    real = gym.make("Pendulum-v1")
    with torch.inference_mode():
        model = create_world_model(name, real.observation_space, real.action_space)
    assert not any(p.is_inference() for p in model.parameters())
    first = next(p for p in model.parameters() if p.requires_grad)
    (first.sum() * 0.0).backward()  # an inference tensor would refuse to take part in autograd
    assert first.grad is not None
