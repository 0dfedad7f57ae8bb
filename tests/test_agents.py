"""Agent recipes, training in the dream, real evaluation, and the Dyna loop."""

import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from worldflux_gym.agents import available_recipes, evaluate_agent, load_recipe, train_agent
from worldflux_gym.agents.normalization import NormalizedObservation
from worldflux_gym.core.errors import ConfigError
from worldflux_gym.data.policy import read_sidecar
from worldflux_gym.data.store import EpisodeStore
from worldflux_gym.pipelines.dyna import EVAL_SEED, DynaConfig, run_dyna
from worldflux_gym.training import fit_world_model
from worldflux_gym.training.run_dir import RunDirectory, trainer_state

TINY_PPO = {
    "algorithm": "PPO",
    "num_envs": 4,
    "default_steps": 256,
    "hyperparameters": {"n_steps": 32, "batch_size": 64, "n_epochs": 2},
}


@pytest.fixture(scope="module")
def pendulum_checkpoint(tmp_path_factory):
    run = tmp_path_factory.mktemp("pendulum") / "run"
    fit_world_model("Pendulum-v1", "ensemble:ci", run, steps=200, collect_steps=1000, progress=False)
    return run


@pytest.fixture
def tiny_recipe(tmp_path):
    path = tmp_path / "tiny_ppo.json"
    path.write_text(json.dumps(TINY_PPO))
    return path


def test_every_shipped_recipe_loads():
    names = available_recipes()
    assert {"ppo_walker", "ppo_cartpole", "sac_pendulum"} <= set(names)
    for name in names:
        recipe = load_recipe(name)
        assert recipe.name == name and recipe.num_envs >= 1 and recipe.default_steps > 0


def test_bad_recipes_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="shipped recipes:.*ppo_walker"):
        load_recipe("no_such_recipe")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"algorithm": "PPO", "learning_rat": 1}))
    with pytest.raises(ConfigError, match="unknown keys \\['learning_rat'\\]"):
        load_recipe(bad)
    bad.write_text(json.dumps({"algorithm": "PPOO"}))
    with pytest.raises(ConfigError, match="'PPOO' is not one of"):
        load_recipe(bad)


def test_train_in_dream_then_evaluate_in_real_env(pendulum_checkpoint, tiny_recipe, tmp_path):
    out = tmp_path / "agent.zip"
    agent = train_agent(
        "WorldFlux/Ensemble-Pendulum-v0",
        out,
        recipe=tiny_recipe,
        checkpoint=pendulum_checkpoint,
        progress=False,
    )
    assert out.is_file() and agent.num_timesteps >= 256
    sidecar = read_sidecar(out)
    assert sidecar["real_env"] == "Pendulum-v1" and sidecar["algorithm"] == "PPO"
    assert sidecar["observation"] == "real" and sidecar["steps"] == agent.num_timesteps
    result = evaluate_agent(out, episodes=2, seed=1)
    assert result.env_id == "Pendulum-v1" and result.episodes == 2 and result.mean_length == 200
    assert -2000 < result.mean_return <= 0  # Pendulum's returns lie in [-16.3 * 200, 0]
    with pytest.raises(ConfigError, match="\\.zip"):
        train_agent("WorldFlux/Ensemble-Pendulum-v0", tmp_path / "agent.pt", recipe=tiny_recipe)


def test_agents_saved_into_one_folder_at_once_leave_each_other_alone(
    pendulum_checkpoint, tiny_recipe, tmp_path
):
    # Two seeds trained side by side into one folder once crashed on the folder's journal (the second
    # to save found the first's), after their whole training. Here another writer is in the middle of
    # a journalled write in the folder; saving an agent must neither fail on it nor touch its files.
    planted = {
        tmp_path / ".save-journal.json.tmp": b'{"files": ["other.json"]}',
        tmp_path / ".other.json.pending": b"{}",
    }
    for path, data in planted.items():
        path.write_bytes(data)
    out = tmp_path / "agent.zip"
    agent = train_agent(
        "WorldFlux/Ensemble-Pendulum-v0",
        out,
        recipe=tiny_recipe,
        checkpoint=pendulum_checkpoint,
        progress=False,
    )
    assert all(path.read_bytes() == data for path, data in planted.items())
    assert read_sidecar(out)["steps"] == agent.num_timesteps
    assert PPO.load(out, device="cpu").num_timesteps == agent.num_timesteps
    # no temporary of its own is left behind
    assert {p.name for p in tmp_path.glob(".*")} == {path.name for path in planted}


def test_time_budget_stops_training(pendulum_checkpoint, tiny_recipe, tmp_path, capsys):
    agent = train_agent(
        "WorldFlux/Ensemble-Pendulum-v0",
        tmp_path / "a.zip",
        recipe=tiny_recipe,
        steps=10**9,
        checkpoint=pendulum_checkpoint,
        progress=True,
        max_seconds=1.0,
    )
    assert agent.num_timesteps < 10**6
    # the bar runs over the time budget (SB3's would count towards the 10^9 steps)
    bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "100%" in bar and "1/1s" in bar and f"{agent.num_timesteps:,} steps" in bar


def random_return(env_id: str, episodes: int, seed: int = 0) -> float:
    env = gym.make(env_id)
    env.action_space.seed(seed)
    total = 0.0
    for k in range(episodes):
        env.reset(seed=seed + k)
        done = False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total, done = total + float(reward), terminated or truncated
    return total / episodes


def test_agent_trained_only_in_the_dream_improves_in_the_real_env(tmp_path):
    """CartPole: a model fitted on 5k random steps, PPO only in the dream, judged in reality."""
    run = tmp_path / "cartpole"
    fit_world_model("CartPole-v1", "ensemble:ci", run, steps=1500, collect_steps=5000, progress=False)
    out = tmp_path / "cartpole.zip"
    train_agent(
        "WorldFlux/Dreamer-CartPole-v2",
        out,
        recipe="ppo_cartpole",
        steps=40_000,
        checkpoint=run,
        progress=False,
    )
    baseline = random_return("CartPole-v1", episodes=10)
    after = evaluate_agent(out, episodes=10).mean_return
    assert baseline < 40 and after > 4 * baseline + 50, (baseline, after)


def test_dyna_runs_rounds_and_resumes(tmp_path, tiny_recipe):
    config = DynaConfig(
        real_steps=800,
        recipe=str(tiny_recipe),
        initial_steps=400,
        steps_per_round=200,
        fit_steps_per_round=50,
        agent_steps_per_round=128,
        dream_horizon=20,
    )
    record = run_dyna("Pendulum-v1", "ensemble:ci", tmp_path / "dyna", config, progress=False)
    assert [r["real_steps"] for r in record["rounds"]] == [600, 800]
    assert all(r["real_return"] is not None and r["real_episodes"] == 1 for r in record["rounds"])
    assert (tmp_path / "dyna" / "agent.zip").is_file()
    again = run_dyna("Pendulum-v1", "ensemble:ci", tmp_path / "dyna", config, progress=False)
    assert again["rounds"] == record["rounds"]  # budget spent: nothing more is collected
    with pytest.raises(ConfigError, match="other settings"):
        run_dyna(
            "Pendulum-v1",
            "ensemble:ci",
            tmp_path / "dyna",
            dataclasses.replace(config, real_steps=900),
            progress=False,
        )


def _files(directory) -> dict[str, bytes]:
    return {
        str(f.relative_to(directory)): f.read_bytes() for f in sorted(directory.rglob("*")) if f.is_file()
    }


def test_dyna_from_a_prior_favours_its_own_data_and_keeps_the_best_agent(tmp_path, tiny_recipe):
    prior = tmp_path / "prior"
    fit_world_model(
        "Pendulum-v1", "ensemble:ci", prior, steps=100, collect_steps=600, progress=False, hidden=24
    )
    before = _files(prior)
    config = DynaConfig(
        real_steps=400,
        recipe=str(tiny_recipe),
        initial_steps=0,
        steps_per_round=200,
        fit_steps_per_round=20,
        agent_steps_per_round=128,
        initial_agent_steps=256,
        dream_horizon=20,
        own_share=0.5,
        eval_episodes=2,
        prior_model=str(prior),
    )
    out = tmp_path / "dyna"
    record = run_dyna("Pendulum-v1", "ensemble:ci", out, config, progress=False)
    assert _files(prior) == before  # the prior is read, never written

    assert record["prior_steps"] == 600 and record["prior_updates"] == 100
    assert [r["real_steps"] for r in record["rounds"]] == [200, 400]  # the prior's steps are not spent
    assert EpisodeStore(out / "data").num_steps() == 1000
    state = trainer_state(out / "model")
    assert state["step"] == 100 + 2 * 20  # the prior's updates went on
    assert state["trainer_config"]["recent_share"] == 0.5
    assert (
        state["trainer_config"]["recent_from"]
        == record["own_from"]
        == EpisodeStore(prior / "data").num_steps("train")
    )
    assert RunDirectory(out / "model").saved_config()["config"]["hidden"] == 24  # the prior's model config

    evaluations = [r["eval_return"] for r in record["rounds"]]
    assert all(len(r["eval_returns"]) == 2 for r in record["rounds"])
    best = int(np.argmax(evaluations))
    assert record["best"] == {"round": best, "eval_return": evaluations[best]}
    # the kept agent is that round's: evaluated again on the same resets it scores the same
    again = evaluate_agent(out / "best_agent.zip", "Pendulum-v1", episodes=2, seed=EVAL_SEED, algo="PPO")
    assert again.mean_return == pytest.approx(evaluations[best], rel=1e-5)


def test_an_agent_that_acts_on_latents_is_evaluated_through_its_encoder():
    from worldflux_gym.core.errors import AgentSpaceError
    from worldflux_gym.core.registry import create_world_model
    from worldflux_gym.dream import EncodeObservation

    env = gym.make("Pendulum-v1")
    model = create_world_model("tdmpc2:ci", env.observation_space, env.action_space).eval()
    agent = PPO("MlpPolicy", EncodeObservation(env, model), n_steps=64, batch_size=64, device="cpu", seed=0)
    evaluation = evaluate_agent(agent, "Pendulum-v1", episodes=2, encoder=model)
    assert evaluation.episodes == 2 and evaluation.mean_length == 200 and np.isfinite(evaluation.mean_return)
    with pytest.raises(AgentSpaceError):
        evaluate_agent(agent, "Pendulum-v1", episodes=1)  # raw observations: not what it acts on


def test_a_normalize_recipe_leaves_its_statistics_inside_the_saved_policy(tmp_path):
    recipe = dataclasses.replace(load_recipe("ppo_pendulum"), normalize=True, num_envs=8)
    out = tmp_path / "normalized.zip"
    trained = train_agent(
        "WorldFlux/Ensemble-Pendulum-v0", out, recipe=recipe, steps=2048, progress=False, tensorboard=False
    )
    statistics = trained.get_env().obs_rms
    assert not np.allclose(statistics.mean, 0.0)  # the statistics followed the dreamed observations

    loaded = PPO.load(out, device="cpu")  # plain SB3, nothing beside the zip
    extractor = loaded.policy.features_extractor
    assert isinstance(extractor, NormalizedObservation)
    env = gym.make("Pendulum-v1")
    obs = np.stack([env.reset(seed=s)[0] for s in range(16)])
    expected = np.clip((obs - statistics.mean) / np.sqrt(statistics.var + 1e-8), -10, 10)
    with torch.no_grad():
        got = extractor(torch.as_tensor(obs, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # evaluation in the real env feeds raw observations to the same zip
    assert np.isfinite(evaluate_agent(out, episodes=1).mean_return)
