"""Closed-loop fine-tuning: behaviour policies as differentiable functions, finding which policy logged
an episode, and a fine-tune that lowers the held-out closed-loop error without touching the source."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC

from worldflux_gym.audit.dream import calibration_buffer
from worldflux_gym.core.checkpoint import from_pretrained
from worldflux_gym.core.errors import ConfigError, TrainingError
from worldflux_gym.data import EpisodeStore, collect_to_store
from worldflux_gym.data.store import is_validation_episode
from worldflux_gym.pipelines import ClosedLoopConfig, fine_tune_closed_loop
from worldflux_gym.pipelines.closed_loop import (
    CLOSED_LOOP_JSON,
    RESUME_DIR,
    RESUME_JSON,
    behaviour_labels,
    closed_loop_record,
    differentiable_policy,
)
from worldflux_gym.training import fit_world_model

ENV = "Pendulum-v1"


def _ppo(seed: int, path) -> PPO:
    """An untrained PPO whose mean action is steep enough to use the whole action range (and clip)."""
    agent = PPO("MlpPolicy", ENV, seed=seed, device="cpu")
    with torch.no_grad():
        agent.policy.action_net.weight.mul_(40.0)
    agent.save(path)
    return agent


@pytest.fixture(scope="module")
def behaviour(tmp_path_factory):
    """Two deterministic PPO policies and a store of their episodes plus random-action ones."""
    folder = tmp_path_factory.mktemp("closed_loop")
    paths = [folder / "ppo_a.zip", folder / "ppo_b.zip"]
    agents = [_ppo(seed, path) for seed, path in zip((1, 2), paths)]
    data = folder / "data"
    collect_to_store(ENV, 400, data, seed=0, progress=False)  # random: 2 episodes
    for i, path in enumerate(paths):
        collect_to_store(ENV, 2000, data, policy=path, seed=100 * (i + 1), progress=False)  # 10 each
    return folder, paths, agents, data


def test_differentiable_policy_is_what_predict_returns():
    obs = np.random.default_rng(0).uniform(-1, 1, size=(64, 3)).astype(np.float32)
    for agent in (_ppo_in_memory(), SAC("MlpPolicy", ENV, seed=0, device="cpu")):
        act = differentiable_policy(agent, agent.action_space)
        expected, _ = agent.predict(obs, deterministic=True)
        x = torch.tensor(obs, requires_grad=True)
        action = act(x)
        np.testing.assert_allclose(action.detach().numpy(), expected, atol=1e-5)
        action.sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0  # gradients reach the observations
    with pytest.raises(ConfigError, match="stable-baselines3"):
        differentiable_policy(lambda obs: obs, _ppo_in_memory().action_space)


def _ppo_in_memory() -> PPO:
    agent = PPO("MlpPolicy", ENV, seed=3, device="cpu")
    with torch.no_grad():
        agent.policy.action_net.weight.mul_(40.0)  # some actions clip at the bounds, as predict does
    return agent


def test_behaviour_labels_name_the_policy_that_logged_each_episode(behaviour):
    _, paths, agents, data = behaviour
    store = EpisodeStore(data)
    episodes = store.episodes("all")
    acting = [differentiable_policy(agent, agent.action_space) for agent in agents]
    buffer = store.buffer("train")
    labels = behaviour_labels(buffer, acting)
    # appended in order: random, then policy a's, then policy b's; the store splits every 10th off
    logged_by = [-1] * 2 + [0] * 10 + [1] * 10
    assert len(episodes) == len(logged_by)
    expected = [who for index, who in enumerate(logged_by) if not is_validation_episode(index, 0.1)]
    assert labels.tolist() == expected
    # a policy that logged nothing labels nothing
    other = differentiable_policy(_ppo_in_memory(), agents[0].action_space)
    assert (behaviour_labels(buffer, [other]) == -1).all()


def test_fine_tune_lowers_the_held_out_closed_loop_error_and_keeps_the_source(behaviour):
    folder, paths, agents, data = behaviour
    run = folder / "fit"
    fit_world_model(ENV, "ensemble:ci", run, data_dir=data, steps=300, progress=False)
    source_weights = hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()
    out = folder / "fit_closed_loop"
    config = ClosedLoopConfig(horizon=16, truncate=4, windows_per_policy=16, updates=200, learning_rate=1e-3)
    model = fine_tune_closed_loop(run, paths, out, config, device="cpu", progress=False)
    # the same updates on the model's own loss alone (weight 0): the baseline the term must beat
    plain = folder / "fit_plain"
    config_plain = dataclasses.replace(config, weight=0.0)
    fine_tune_closed_loop(run, paths, plain, config_plain, device="cpu", progress=False)

    record = closed_loop_record(out)
    error = record["held_out_closed_loop_error"]
    plain_error = closed_loop_record(plain)["held_out_closed_loop_error"]
    assert error["before"] == plain_error["before"]
    assert error["after"] < 0.8 * error["before"], error
    assert error["after"] < 0.9 * plain_error["after"], (error, plain_error)
    train_episodes = EpisodeStore(data).buffer("train")
    labels = behaviour_labels(train_episodes, [differentiable_policy(a, a.action_space) for a in agents])
    counts = {"ppo_a": int((labels == 0).sum()), "ppo_b": int((labels == 1).sum())}
    assert record["episodes_per_policy"] == counts
    assert min(record["episodes_per_policy"].values()) >= 8
    assert record["data"]["store"] == str(data.resolve())
    assert json.loads((out / CLOSED_LOOP_JSON).read_text()) == record
    assert hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest() == source_weights
    assert model.elite_index.numel() == 2
    assert from_pretrained(out).config.noise_scale == config.noise_scale == 0.35  # its dreams' noise
    assert from_pretrained(run).config.noise_scale == 1.0
    # the audit calibrates the fine-tuned model on the held-out episodes of the same store
    _, source = calibration_buffer(out, None)
    assert "held-out" in source and str(data.resolve()) in source

    # a fine-tune can be fine-tuned further, on the store it names, from its own weights: the
    # second one's "before" is the first one's "after"
    again = folder / "fit_closed_loop_again"
    shorter = dataclasses.replace(config, updates=20)
    fine_tune_closed_loop(out, paths, again, shorter, device="cpu", progress=False)
    second = closed_loop_record(again)
    assert second["source"] == str(out.resolve()) and second["data"] == record["data"]
    assert second["held_out_closed_loop_error"]["before"] == pytest.approx(error["after"], rel=1e-5)

    # a checkpoint that records no store (a shipped one, as a Dyna round starts from) is tuned on the
    # store it is given, and refused without one before anything is saved
    bare, tuned = folder / "bare", folder / "bare_tuned"
    from_pretrained(out).save_pretrained(bare)
    with pytest.raises(TrainingError, match="records no episode store"):
        fine_tune_closed_loop(bare, paths, tuned, shorter, device="cpu", progress=False)
    assert closed_loop_record(tuned) is None
    fine_tune_closed_loop(bare, paths, tuned, shorter, device="cpu", progress=False, store=data)
    third = closed_loop_record(tuned)
    assert third["source"] == str(bare.resolve()) and third["data"] == record["data"]
    assert third["held_out_closed_loop_error"]["before"] == pytest.approx(error["after"], rel=1e-5)

    with pytest.raises(TrainingError, match="already holds a model"):
        fine_tune_closed_loop(run, paths, out, config, device="cpu", progress=False)
    with pytest.raises(ConfigError, match="logged by"):
        fine_tune_closed_loop(run, [_ppo_in_memory()], folder / "other", config, device="cpu", progress=False)
    assert closed_loop_record(run) is None


def test_a_recent_share_fits_the_steps_after_recent_from_better(behaviour):
    """A Dyna round's new episodes come last in its store; ``recent_share`` gives them weight."""
    folder, paths, agents, data = behaviour
    run = folder / "fit_for_recent"
    fit_world_model(ENV, "ensemble:ci", run, data_dir=data, steps=50, progress=False)
    train = EpisodeStore(data).buffer("train")
    labels = behaviour_labels(train, [differentiable_policy(a, a.action_space) for a in agents])
    first = int(np.flatnonzero(labels == 1)[0])
    assert (labels[first:] == 1).all()  # ppo_b logged the last episodes
    recent_from = int(train.step_start[first])
    config = ClosedLoopConfig(
        horizon=8, truncate=4, windows_per_policy=2, updates=100, learning_rate=1e-3, weight=0.0
    )
    uniform = fine_tune_closed_loop(run, paths, folder / "uniform", config, device="cpu", progress=False)
    recent_config = dataclasses.replace(config, recent_share=1.0, recent_from=recent_from)
    recent = fine_tune_closed_loop(run, paths, folder / "recent", recent_config, device="cpu", progress=False)

    def loss(model, steps: np.ndarray) -> float:
        with torch.no_grad():
            return float(model.loss(train.transitions(steps)).loss)

    later, earlier = np.arange(recent_from, train.num_steps), np.arange(recent_from)
    assert loss(recent, later) < loss(uniform, later)
    assert loss(recent, earlier) > loss(uniform, earlier)
    assert closed_loop_record(folder / "recent")["config"]["recent_from"] == recent_from

    past = dataclasses.replace(recent_config, recent_from=train.num_steps)
    with pytest.raises(ConfigError, match="past the"):
        fine_tune_closed_loop(run, paths, folder / "past", past, device="cpu", progress=False)
    with pytest.raises(ConfigError, match="recent_share"):
        dataclasses.replace(config, recent_share=1.5).check()


def test_a_killed_fine_tune_resumes_from_its_last_resume_point_to_the_same_model(behaviour, monkeypatch):
    folder, paths, _, data = behaviour
    run = folder / "fit_for_resume"
    fit_world_model(ENV, "ensemble:ci", run, data_dir=data, steps=50, progress=False)
    config = ClosedLoopConfig(horizon=8, truncate=4, windows_per_policy=4, updates=10, checkpoint_every=3)
    whole = fine_tune_closed_loop(run, paths, folder / "whole", config, device="cpu", progress=False)

    class Killed(Exception):
        pass

    clip = torch.nn.utils.clip_grad_norm_
    calls = []

    def clip_then_kill(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8:  # in the 8th iteration, after the resume point of the 6th
            raise Killed
        return clip(*args, **kwargs)

    out = folder / "killed"
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_then_kill)
    with pytest.raises(Killed):
        fine_tune_closed_loop(run, paths, out, config, device="cpu", progress=False)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    assert json.loads((out / RESUME_DIR / RESUME_JSON).read_text())["done"] == 6
    assert not (out / "config.json").exists()

    with pytest.raises(TrainingError, match="another config"):  # other settings do not go on from it
        other = dataclasses.replace(config, learning_rate=1e-3)
        fine_tune_closed_loop(run, paths, out, other, device="cpu", progress=False)
    calls.clear()
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: calls.append(1) or clip(*a, **k))
    resumed = fine_tune_closed_loop(run, paths, out, config, device="cpu", progress=False)
    assert len(calls) == 4  # iterations 7 to 10 only
    for name, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    assert closed_loop_record(out) == closed_loop_record(folder / "whole")
    assert not (out / RESUME_DIR).exists()


def test_cli_fine_tune(behaviour, capsys):
    from worldflux_gym.cli import main

    folder, paths, _, data = behaviour
    run = folder / "fit_for_cli"
    fit_world_model(ENV, "ensemble:ci", run, data_dir=data, steps=100, progress=False)
    out = folder / "cli_closed_loop"
    args = ["fine-tune", str(run), "--policy", *map(str, paths), "--out", str(out), "--horizon", "8"]
    assert main([*args, "--updates", "5", "--noise-scale", "0.25", "--device", "cpu"]) == 0
    record = closed_loop_record(out)
    assert record["config"]["horizon"] == 8 and record["config"]["updates"] == 5
    assert from_pretrained(out).config.noise_scale == 0.25
    assert f"--checkpoint {out}" in capsys.readouterr().out

    # a manual Dyna round: fitted on the early episodes, tuned on the store they grew into
    early = folder / "early_data"
    collect_to_store(ENV, 400, early, seed=0, progress=False)
    collect_to_store(ENV, 2000, early, policy=paths[0], seed=100, progress=False)
    recent_from = EpisodeStore(early).num_steps("train")
    early_run = folder / "fit_on_early"
    fit_world_model(ENV, "ensemble:ci", early_run, data_dir=early, steps=50, progress=False)
    tuned = folder / "cli_round"
    round_args = ["fine-tune", str(early_run), "--policy", *map(str, paths), "--out", str(tuned)]
    grown = ["--data", str(data), "--recent-share", "0.5", "--recent-from", str(recent_from)]
    assert main([*round_args, *grown, "--horizon", "8", "--updates", "2", "--device", "cpu"]) == 0
    record = closed_loop_record(tuned)
    assert record["data"]["store"] == str(data.resolve())
    assert (record["config"]["recent_share"], record["config"]["recent_from"]) == (0.5, recent_from)
    past = ["--data", str(early), "--recent-share", "0.5", "--recent-from", str(recent_from)]
    assert main([*round_args[:-1], str(folder / "cli_past"), *past, "--device", "cpu"]) != 0
    assert "past the" in capsys.readouterr().err
    assert main([*round_args[:-1], str(folder / "cli_nowhere"), "--data", str(folder / "nowhere")]) != 0
    assert "is not an episode store" in capsys.readouterr().err
    assert not (folder / "cli_past").exists() and not (folder / "cli_nowhere").exists()  # refused: none made


def test_fine_tune_without_held_out_episodes_of_the_policies(tmp_path, capsys):
    """Held out (every tenth episode, the fifth first) are random-action episodes only: the fine-tune
    runs, records no before/after figure rather than one measured on the wrong policies, and says so."""
    from worldflux_gym.cli import main

    path = tmp_path / "ppo_a.zip"
    _ppo(1, path)
    data = tmp_path / "data"
    collect_to_store(ENV, 1000, data, seed=0, progress=False)  # random: episodes 0-4, 4 held out
    collect_to_store(ENV, 1600, data, policy=path, seed=100, progress=False)  # episodes 5-12, all train
    assert [i for i in range(13) if is_validation_episode(i, 0.1)] == [4]
    run = tmp_path / "fit"
    fit_world_model(ENV, "ensemble:ci", run, data_dir=data, steps=50, progress=False)
    out = tmp_path / "tuned"
    args = ["fine-tune", str(run), "--policy", str(path), "--out", str(out), "--horizon", "8"]
    assert main([*args, "--updates", "5", "--device", "cpu"]) == 0
    record = closed_loop_record(out)
    assert record["held_out_closed_loop_error"] == {"before": None, "after": None}
    assert record["episodes_per_policy"] == {"ppo_a": 8}
    assert "no held-out episode of these policies" in capsys.readouterr().out
    assert from_pretrained(out).config.noise_scale == ClosedLoopConfig().noise_scale
