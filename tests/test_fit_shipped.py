"""The scripts of ``envs/``: ``fit_shipped.py``'s dream-trained data sources (agents trained in an
earlier shipped dream) and Dyna rounds (agents trained in the model fitted so far, real-env runs, held
box corners; tuned closed loop or by a fit from the base's weights), and ``behaviour.py``'s
checkpoint scores and frozen held-out runs."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import stable_baselines3
import torch

from worldflux_gym import create_world_model
from worldflux_gym.agents import evaluate_agent
from worldflux_gym.core.errors import ConfigError
from worldflux_gym.data import EpisodeBuffer, collect_episodes, collect_to_store
from worldflux_gym.pipelines.closed_loop import closed_loop_record
from worldflux_gym.training import fit_world_model, trainer_state

ENVS = Path(__file__).resolve().parents[1] / "envs"
sys.path.insert(0, str(ENVS))
import behaviour  # noqa: E402
import fit_shipped  # noqa: E402

DREAM_ID = "WorldFlux/Ensemble-Pendulum-v0"


def spec_with_dream_agents() -> dict:
    group = {
        "name": "pendulum_ppo",
        "dream_id": DREAM_ID,
        "recipe": "ppo_pendulum",
        "env_options": {"max_episode_steps": 50},
        "steps": 64,
        "seeds": [0, 1],
        "steps_per_agent": 300,
    }
    return {"real_env": "Pendulum-v1", "fit": {"seed": 0, "data": {"dream_agents": [group]}}}


def test_dream_agents_are_trained_once_then_collected_deterministic_and_sampled(tmp_path):
    spec = spec_with_dream_agents()
    agents = fit_shipped.dream_agents(spec, tmp_path)
    fit_shipped.train_dream_agents(agents)
    assert [a["path"].name for a in agents] == ["pendulum_ppo_s0.zip", "pendulum_ppo_s1.zip"]
    trained = [a["path"].stat().st_mtime_ns for a in agents]
    fit_shipped.train_dream_agents(agents)  # a rerun keeps the agents it finds
    assert [a["path"].stat().st_mtime_ns for a in agents] == trained
    summary = fit_shipped.read_training_summary(agents[1]["path"])
    assert summary["dream_id"] == DREAM_ID and summary["seed"] == 1
    assert summary["env_options"] == {"max_episode_steps": 50}

    sources = fit_shipped.sources(spec, tmp_path)
    assert [s["name"] for s in sources] == [
        "pendulum_ppo_s0_det",
        "pendulum_ppo_s0_noisy",
        "pendulum_ppo_s1_det",
        "pendulum_ppo_s1_noisy",
    ]
    assert [s["deterministic"] for s in sources] == [True, False, True, False]
    assert all(s["algorithm"] == "PPO" and s["steps"] == 150 for s in sources)
    assert len({s["seed"] for s in sources}) == len(sources)

    records = []
    for source in sources[:2]:
        store = fit_shipped.collect_source(spec, source, tmp_path / "sources" / source["name"])
        records.append(fit_shipped.provenance_of(source, store))
    assert all(r["real_steps"] >= 150 for r in records)
    summary = fit_shipped.summarise(records)
    key = f"PPO trained in {DREAM_ID} (pendulum_ppo)"
    assert summary["real_steps_by_source"] == {key: sum(r["real_steps"] for r in records)}


def test_a_dyna_round_trains_in_the_model_so_far_and_fine_tunes_it_on_the_new_episodes(tmp_path):
    group = {"name": "round1_ppo", "recipe": "ppo_pendulum", "env_options": {"max_episode_steps": 50},
             "steps": 64, "seeds": [0], "steps_per_agent": 300}  # fmt: skip
    tune = {"updates": 2, "horizon": 8, "truncate": 4, "windows_per_policy": 2, "recent_share": 0.5}
    fit = {
        "seed": 0,
        "data": {"random": {"steps": 1000}},
        "dyna_rounds": [{"dream_agents": [group], "closed_loop": tune}],
    }
    spec = {"id": DREAM_ID, "real_env": "Pendulum-v1", "fit": fit}
    work, behaviour_work = tmp_path / "work", tmp_path / "behaviour"
    store, _ = fit_shipped.collect(spec, "toy", work, behaviour_work)  # 5 random episodes, the 5th held out
    run = work / "toy" / "run"
    model = fit_world_model(
        "Pendulum-v1", "ensemble:ci", run, data_dir=store.directory, steps=20, progress=False
    )
    tuned, round_store, provenance = fit_shipped.dyna_round(
        spec, 1, model, store, "toy", work, behaviour_work
    )

    folder = work / "toy" / "dyna_round1"
    agent = behaviour_work / "Pendulum-v1" / "dream" / "round1_ppo_s0.zip"
    summary = fit_shipped.read_training_summary(agent)
    assert (
        summary["dream_id"] == DREAM_ID
        and Path(summary["checkpoint"]).resolve() == (folder / "base").resolve()
    )
    assert [p["name"] for p in provenance] == ["random_scale1.0", "round1_ppo_s0_det", "round1_ppo_s0_noisy"]
    assert provenance[-1]["trained_in"] == "Dyna round 1"
    # the fitted data comes first and keeps its split; the agent's real episodes are added after it
    assert round_store.directory == folder / "data"
    assert round_store.num_episodes("all") == store.num_episodes("all") + 2
    held_out = {e.obs[0].tobytes() for e in store.episodes("validation")}
    assert held_out <= {e.obs[0].tobytes() for e in round_store.episodes("validation")}
    record = closed_loop_record(folder / "closed_loop")
    assert record["source"] == str((folder / "base").resolve())
    assert record["data"]["store"] == str(round_store.directory.resolve())
    assert record["episodes_per_policy"] == {"round1_ppo_s0": 1}  # its deterministic episode
    # half of each batch of the model's own loss is drawn from the train steps after the fitted data's
    earlier = store.episodes("train")
    assert record["config"]["recent_from"] == sum(len(e) for e in earlier) == store.num_steps("train")
    ordered = round_store.episodes("train")
    assert [e.obs[0].tobytes() for e in ordered[: len(earlier)]] == [e.obs[0].tobytes() for e in earlier]
    assert len(ordered) > len(earlier)
    assert any(
        not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), model.state_dict().values())
    )

    trained = agent.stat().st_mtime_ns  # a rerun finds every step done and ends with the same model
    again, _, _ = fit_shipped.dyna_round(spec, 1, model, store, "toy", work, behaviour_work)
    assert agent.stat().st_mtime_ns == trained
    assert all(torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), again.state_dict().values()))

    tune["recent_from"] = 0  # the round sets it; a spec that sets it too is told to remove it
    with pytest.raises(ConfigError, match="remove it"):
        fit_shipped.dyna_round(spec, 1, model, store, "toy", work, behaviour_work)


def test_a_round_of_real_env_runs_adds_their_checkpoints_episodes_and_fine_tunes_under_them(tmp_path):
    run, behaviour_work = trained_tiny_run(tmp_path, "Pendulum-v1", "A2C")  # saved at 50 and 100 steps
    block = {"algorithm": "A2C", "seed": run.seed, "steps": run.steps, "every": run.every,
             "steps_per_checkpoint": 400}  # fmt: skip
    tune = {"updates": 2, "horizon": 8, "truncate": 4, "windows_per_policy": 2}
    fit = {
        "seed": 0,
        "data": {"random": {"steps": 1000}},
        "dyna_rounds": [{"agents": [block], "closed_loop": tune}],
    }
    spec = {"id": DREAM_ID, "real_env": "Pendulum-v1", "fit": fit}
    assert fit_shipped.data_run_blocks(fit) == [block] and fit_shipped.data_run_blocks(fit, 0) == []
    work = tmp_path / "shipped"
    store, provenance = fit_shipped.collect(spec, "toy", work, behaviour_work)
    assert [p["name"] for p in provenance] == ["random_scale1.0"]  # the fit sees no round's data
    model = fit_world_model(
        "Pendulum-v1", "ensemble:ci", work / "toy" / "run", data_dir=store.directory, steps=20, progress=False
    )
    tuned, round_store, provenance = fit_shipped.dyna_round(
        spec, 1, model, store, "toy", work, behaviour_work
    )

    names = ["a2c_s2_50_det", "a2c_s2_50_noisy", "a2c_s2_100_det", "a2c_s2_100_noisy"]
    assert [p["name"] for p in provenance] == ["random_scale1.0", *names]
    assert [p["checkpoint_steps"] for p in provenance[1:]] == [50, 50, 100, 100]
    assert all(p["real_steps"] == 200 for p in provenance[1:])  # whole 200-step episodes
    assert round_store.num_steps("all") == sum(p["real_steps"] for p in provenance)
    record = closed_loop_record(work / "toy" / "dyna_round1" / "closed_loop")
    assert sorted(record["episodes_per_policy"]) == ["a2c_s2_100", "a2c_s2_50"]
    assert record["config"]["recent_from"] == store.num_steps("train")
    assert any(
        not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), model.state_dict().values())
    )

    fit["dyna_rounds"].append({"closed_loop": tune})  # a round with nothing new is refused before any work
    with pytest.raises(ConfigError, match="adds no data"):
        fit_shipped.dyna_round(spec, 2, tuned, round_store, "toy", work, behaviour_work)
    assert not (work / "toy" / "dyna_round2").exists()


def test_a_round_of_held_corners_fine_tunes_the_fitted_weights_on_windows_from_its_new_steps(tmp_path):
    tune = {"updates": 6, "seed": 3, "overrides": {"sequence_length": 4},
            "trainer": {"batch_size": 8, "recent_share": 0.5, "tensorboard": False}}  # fmt: skip
    fit = {
        "seed": 0,
        "data": {"random": {"steps": 1000}},
        "dyna_rounds": [{"held_corners": {"steps": 400, "hold": [5, 20]}, "fine_tune": tune}],
    }
    spec = {"id": DREAM_ID, "real_env": "Pendulum-v1", "family": "ensemble", "preset": "ci", "fit": fit}
    work, behaviour_work = tmp_path / "shipped", tmp_path / "behaviour"
    store, _ = fit_shipped.collect(spec, "toy", work, behaviour_work)
    model = fit_world_model(
        "Pendulum-v1", "ensemble:ci", work / "toy" / "run", data_dir=store.directory, steps=20, progress=False
    )
    tuned, round_store, provenance = fit_shipped.dyna_round(
        spec, 1, model, store, "toy", work, behaviour_work
    )

    assert [p["name"] for p in provenance] == ["random_scale1.0", "held_corners_round1"]
    assert provenance[-1]["real_steps"] == 400 and provenance[-1]["hold"] == [5, 20]
    corners = [
        e for e in round_store.episodes("all") if np.isin(e.action, [-2.0, 2.0]).all()
    ]  # torque bounds
    assert sum(len(e) for e in corners) == 400 and round_store.num_steps("all") == 1400
    assert fit_shipped.summarise(provenance)["real_steps_by_source"] == {"random": 1000, "held_corners": 400}
    state = trainer_state(work / "toy" / "dyna_round1" / "fine_tune")
    assert state["step"] == 6 and state["trainer_config"]["seed"] == 3
    assert state["trainer_config"]["recent_from"] == store.num_steps("train")
    assert state["trainer_config"]["recent_share"] == 0.5
    assert tuned.config.sequence_length == 4
    assert torch.equal(tuned.input_mean, model.input_mean)  # fine-tuned under the fitted normalisation
    assert not torch.equal(tuned.hidden_layers[0].weight, model.hidden_layers[0].weight)

    both = {"held_corners": {"steps": 400}, "fine_tune": tune, "closed_loop": {"updates": 2}}
    for block, message in ((both, "one tuning block"), ({"fine_tune": tune}, "adds no data")):
        fit["dyna_rounds"].append(block)
        with pytest.raises(ConfigError, match=message):
            fit_shipped.dyna_round(spec, 2, tuned, round_store, "toy", work, behaviour_work)
        fit["dyna_rounds"].pop()
    assert not (work / "toy" / "dyna_round2").exists()


def test_a_fine_tune_block_with_a_typo_is_refused_before_the_round_does_any_work(tmp_path):
    fit = {"seed": 0, "data": {"random": {"steps": 200}}, "dyna_rounds": []}
    spec = {"id": DREAM_ID, "real_env": "Pendulum-v1", "family": "ensemble", "preset": "ci", "fit": fit}
    work, behaviour_work = tmp_path / "shipped", tmp_path / "behaviour"
    store, _ = fit_shipped.collect(spec, "toy", work, behaviour_work)
    corners = {"steps": 100}
    for tune, message in (
        ({"update": 5}, "fine_tune takes updates"),
        ({"updates": 5, "trainer": {"batchsize": 8}}, "unknown trainer setting"),
        ({"updates": 5, "overrides": {"sequence_lenght": 4}}, "sequence_lenght"),
    ):
        fit["dyna_rounds"] = [{"held_corners": corners, "fine_tune": tune}]
        with pytest.raises(ConfigError, match=message):
            fit_shipped.dyna_round(spec, 1, None, store, "toy", work, behaviour_work)
    assert not (work / "toy" / "dyna_round1").exists()


def test_the_dyna_loop_stage_goes_on_fitting_the_last_run_with_one_agent_and_its_own_steps(tmp_path):
    loop = {"recipe": "ppo_pendulum", "real_steps": 400, "steps_per_round": 200, "fit_steps_per_round": 3,
            "agent_steps_per_round": 64, "initial_steps": 0, "own_share": 0.5,
            "dream_horizon": 20}  # fmt: skip
    fit = {"seed": 0, "data": {"random": {"steps": 1000}}, "dyna_loop": loop}
    spec = {"id": DREAM_ID, "real_env": "Pendulum-v1", "family": "ensemble", "preset": "ci", "fit": fit}
    work, behaviour_work = tmp_path / "shipped", tmp_path / "behaviour"
    store, provenance = fit_shipped.collect(spec, "toy", work, behaviour_work)
    fitted = fit_world_model(
        "Pendulum-v1", "ensemble:ci", work / "toy" / "run", data_dir=store.directory, steps=20, progress=False
    )
    model, loop_store, source = fit_shipped.dyna_loop(spec, store, "toy", work)

    folder = work / "toy" / "dyna_loop"
    state = trainer_state(folder / "model")
    assert state["step"] == 20 + 3 * 2  # the fitted run resumed: two rounds of three updates
    assert state["trainer_config"]["recent_from"] == store.num_steps("train")
    assert state["trainer_config"]["recent_share"] == 0.5
    assert (folder / "agent.zip").is_file()
    # the fitted data come first and keep their split; the carried agent's episodes are added after them
    assert loop_store.num_steps("all") == store.num_steps("all") + 400
    for split in ("train", "validation"):
        earlier = store.episodes(split)
        assert [e.obs[0].tobytes() for e in loop_store.episodes(split)[: len(earlier)]] == [
            e.obs[0].tobytes() for e in earlier
        ]
    assert source["kind"] == "dyna_loop" and source["real_steps"] == 400 and source["episodes"] == 2
    summary = fit_shipped.summarise([*provenance, source])
    assert summary["real_steps_by_source"] == {
        "random": 1000,
        "PPO carried through the Dyna loop (ppo_pendulum)": 400,
    }
    assert not torch.equal(model.hidden_layers[0].weight, fitted.hidden_layers[0].weight)
    assert torch.equal(model.input_mean, fitted.input_mean)  # fitted on under the run's normalisation

    trained = (folder / "agent.zip").stat().st_mtime_ns  # a rerun finds the loop finished
    again, _, _ = fit_shipped.dyna_loop(spec, store, "toy", work)
    assert (folder / "agent.zip").stat().st_mtime_ns == trained
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))

    for block, message in (
        ({**loop, "own_shar": 0.5}, "own_shar"),
        ({**loop, "prior_model": "elsewhere"}, "prior_model"),
        ({k: v for k, v in loop.items() if k != "recipe"}, "missing .'recipe'."),
        ({**loop, "own_share": 2.0}, "own_share"),
    ):
        with pytest.raises(ConfigError, match=message):
            fit_shipped.check_loop_block({**fit, "dyna_loop": block})
    with pytest.raises(ConfigError, match="closed-loop fine-tune is not one"):
        fit_shipped.check_loop_block({**fit, "closed_loop": {"updates": 2}})


def test_a_spec_from_shipped_weights_collects_its_data_and_goes_on_from_them_without_a_fit(
    tmp_path, monkeypatch
):
    envs, work = tmp_path / "envs", tmp_path / "shipped"
    prior_dir = envs / "checkpoints" / "prior"
    prior = fit_world_model(
        "Pendulum-v1", "ensemble:ci", prior_dir, collect_steps=2200, steps=20, progress=False,
    )  # fmt: skip
    corners = {"held_corners": {"steps": 400}, "fine_tune": {"updates": 3, "seed": 1}}
    fit = {"seed": 0, "init_from": "checkpoints/prior", "data": {"random": {"steps": 3000}},
           "dyna_rounds": [corners]}  # fmt: skip
    spec = {"id": DREAM_ID, "real_env": "Pendulum-v1", "family": "ensemble", "preset": "ci",
            "checkpoint": "checkpoints/toy", "max_episode_steps": 200, "fit": fit}  # fmt: skip
    (envs / "toy.json").write_text(json.dumps(spec))
    monkeypatch.setattr(fit_shipped, "ENVS", envs)
    validation = fit_shipped.ship("toy", work, tmp_path / "behaviour", "all")

    assert not (work / "toy" / "run").exists()  # no fit: the shipped weights stand in for it
    assert validation["init_from"] == "checkpoints/prior" and "fit_updates" not in validation
    base = fit_shipped.from_pretrained(work / "toy" / "dyna_round1" / "base", device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(prior.state_dict().values(), base.state_dict().values()))
    assert trainer_state(work / "toy" / "dyna_round1" / "fine_tune")["step"] == 3
    shipped = fit_shipped.from_pretrained(envs / "checkpoints" / "toy", device="cpu")
    assert not torch.equal(shipped.hidden_layers[0].weight, prior.hidden_layers[0].weight)
    assert torch.equal(shipped.input_mean, prior.input_mean)  # fine-tuned under the prior's normalisation
    written = json.loads((envs / "toy.json").read_text())
    assert written["data_provenance"]["real_steps_by_source"] == {"random": 3000, "held_corners": 400}

    loop = {"recipe": "ppo_pendulum", "real_steps": 200}
    for block, message in (
        ({**fit, "fit_steps": 10}, r"remove \['fit_steps'\]"),
        ({**fit, "init_from": "checkpoints/elsewhere"}, "holds no model"),
        ({key: value for key, value in fit.items() if key != "dyna_rounds"}, "adds nothing"),
    ):
        with pytest.raises(ConfigError, match=message):
            fit_shipped.check_init_from(block)
    with pytest.raises(ConfigError, match="put a fine_tune round between"):
        fit_shipped.check_loop_block({"init_from": "checkpoints/prior", "dyna_loop": loop})


def test_the_end_head_stage_is_fitted_once_then_only_its_head_is_taken(tmp_path):
    spec = {"fit": {"seed": 0, "end_head": {"updates": 2, "batch_size": 16}}}
    data = EpisodeBuffer(collect_episodes("CartPole-v1", 300, seed=0, progress=False))
    env = gym.make("CartPole-v1")
    first = create_world_model("ensemble:ci", env.observation_space, env.action_space)
    fit_shipped.end_head(spec, first, tmp_path, data)
    assert (tmp_path / "end_head" / "config.json").is_file()

    # A rerun (the spec's noise_scale changed since) takes the saved head and keeps everything else.
    second = create_world_model("ensemble:ci", env.observation_space, env.action_space, noise_scale=0.35)
    dynamics = {k: v.clone() for k, v in second.state_dict().items() if not k.startswith("termination_net.")}
    out = fit_shipped.end_head(spec, second, tmp_path, data)
    assert out.config.noise_scale == 0.35
    for name, value in out.state_dict().items():
        expected = first.state_dict()[name] if name.startswith("termination_net.") else dynamics[name]
        assert torch.equal(value, expected), name


def test_keep_best_judges_the_end_head_on_validation_episodes_the_shipped_check_does_not_use(
    tmp_path, monkeypatch
):
    store = collect_to_store("CartPole-v1", 3000, tmp_path / "data", seed=0, progress=False)
    spec = {"fit": {"seed": 0, "end_head": {"updates": 2, "batch_size": 16, "keep_best": True}}}
    monkeypatch.setattr(fit_shipped, "HELDOUT_STEPS", 150)  # a shipped store's validation split is larger
    seen = {}
    monkeypatch.setattr(
        fit_shipped, "fit_end_head", lambda model, data, **settings: seen.update(settings) or model
    )
    env = gym.make("CartPole-v1")
    model = create_world_model("ensemble:ci", env.observation_space, env.action_space)
    fit_shipped.end_head(spec, model, tmp_path, store)

    shipped = fit_shipped.heldout_episodes(spec, store)
    judged = seen["validation"]
    assert "keep_best" not in seen and len(shipped) >= 1
    assert len(judged.lengths) == store.num_episodes("validation") - len(shipped)
    shipped_starts = {e.obs[0].tobytes() for e in shipped}
    judged_starts = {obs.tobytes() for obs in judged.initial_observations().numpy()}
    assert not shipped_starts & judged_starts


def test_a_stage_resumed_over_several_calls_records_all_their_seconds(tmp_path, monkeypatch):
    clock = iter([0.0, 5.0, 10.0, 12.5, 20.0, 21.0])
    monkeypatch.setattr(fit_shipped, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    folder = tmp_path / "walker"
    with pytest.raises(KeyboardInterrupt), fit_shipped.stage_clock(folder, "fit"):
        raise KeyboardInterrupt  # the first call is stopped half-way through the fit
    with fit_shipped.stage_clock(folder, "fit"):
        pass  # the second goes on from the fit's resume point
    with fit_shipped.stage_clock(folder, "end_head"):
        pass
    assert json.loads((folder / fit_shipped.STAGE_SECONDS).read_text()) == {"fit": 7.5, "end_head": 1.0}


def test_a_merge_without_its_completion_mark_is_redone_and_a_marked_one_is_reused(tmp_path):
    spec = {"real_env": "Pendulum-v1", "fit": {"seed": 0, "data": {"random": {"steps": 400}}}}
    store, provenance = fit_shipped.collect(spec, "pendulum", tmp_path, tmp_path / "behaviour")
    merged = tmp_path / "pendulum" / "data"
    mark = merged / fit_shipped.MERGED_RECORD
    episodes = len(list(store.episodes("all")))
    assert episodes == 2 and json.loads(mark.read_text()) == provenance

    written = mark.stat().st_mtime_ns
    _, again = fit_shipped.collect(spec, "pendulum", tmp_path, tmp_path / "behaviour")
    assert again == provenance and mark.stat().st_mtime_ns == written  # complete: read, not redone

    mark.unlink()  # a kill after the episodes were merged, before the mark
    (merged / "stray").write_text("left by the interrupted merge")
    store, again = fit_shipped.collect(spec, "pendulum", tmp_path, tmp_path / "behaviour")
    assert again == provenance and mark.is_file() and not (merged / "stray").exists()
    assert len(list(store.episodes("all"))) == episodes  # merged once, not appended twice


def test_behaviour_checkpoints_score_the_same_when_the_run_is_repeated(tmp_path):
    """A checkpoint's recorded real return is reproducible: same seed, same run, same figure."""
    run = behaviour.BehaviourRun("CartPole-v1", "A2C", seed=3, steps=100, every=50)
    records = []
    for folder in ("first", "second"):
        checkpoints = behaviour.train_behaviour(run, tmp_path / folder)
        assert sorted(checkpoints) == [50, 100]
        records.append(json.loads((run.folder(tmp_path / folder) / "run.json").read_text()))
    scores = [{s: c["real_return"] for s, c in r["checkpoints"].items()} for r in records]
    assert scores[0] == scores[1]
    # fixed resets, not one reset ten times: the episodes of a checkpoint differ
    assert any(c["real_return_std"] > 0 for c in records[0]["checkpoints"].values())


def trained_tiny_run(tmp_path, env_id: str, algorithm: str) -> tuple[behaviour.BehaviourRun, Path]:
    # SAC starts learning after 100 steps: 200 steps give its actor 100 updates
    steps = 200 if algorithm in behaviour.OFF_POLICY else 100
    run = behaviour.BehaviourRun(env_id, algorithm, seed=2, steps=steps, every=steps // 2)
    work = tmp_path / "work"
    behaviour.train_behaviour(run, work)
    return run, work


@pytest.mark.parametrize(("env_id", "algorithm"), [("CartPole-v1", "A2C"), ("InvertedPendulum-v5", "SAC")])
def test_a_frozen_checkpoint_acts_as_the_agent_it_was_frozen_from(tmp_path, env_id, algorithm):
    run, work = trained_tiny_run(tmp_path, env_id, algorithm)
    frozen = tmp_path / "held_out"
    behaviour.freeze(run, work, frozen)
    cls = getattr(stable_baselines3, algorithm)
    space = gym.make(env_id).observation_space
    space.seed(0)
    obs = np.stack([space.sample() for _ in range(256)])
    options = {"buffer_size": 1} if algorithm in behaviour.OFF_POLICY else {}
    untrained = cls("MlpPolicy", env_id, seed=run.seed, device="cpu", **options)
    record = behaviour.frozen_record(run, frozen)
    for steps, path in run.checkpoints(work).items():
        saved, copy = cls.load(path, device="cpu"), behaviour.load_frozen(run, steps, frozen)
        acted = copy.predict(obs, deterministic=True)[0]
        np.testing.assert_array_equal(acted, saved.predict(obs, deterministic=True)[0])
        if steps == run.steps:  # trained past SAC's first updates: the copy's weights were loaded
            assert not np.array_equal(acted, untrained.predict(obs, deterministic=True)[0])
        score = evaluate_agent(saved, env_id, behaviour.EVALUATION_EPISODES, behaviour.EVALUATION_SEED)
        assert record["checkpoints"][str(steps)]["real_return"] == round(float(score.mean_return), 1)
    assert sorted(int(s) for s in record["checkpoints"]) == sorted(run.checkpoints(work))
    # a frozen run is what the benchmarks load, even with the run's own saves gone
    for path in run.checkpoints(work).values():
        path.unlink()
    assert sorted(behaviour.checkpoint_agents(run, work, frozen)) == sorted(run.checkpoints(work))


def test_a_data_run_frozen_in_data_runs_collects_the_data_its_own_saves_collect(tmp_path, monkeypatch):
    run, work = trained_tiny_run(tmp_path, "CartPole-v1", "A2C")
    agents = [
        {
            "algorithm": "A2C",
            "seed": run.seed,
            "steps": run.steps,
            "every": run.every,
            "steps_per_checkpoint": 120,
        }
    ]
    spec = {"real_env": run.env_id, "fit": {"seed": 0, "data": {"agents": agents}}}
    monkeypatch.setattr(fit_shipped, "DATA_RUNS", tmp_path / "data_runs")

    def collected(sources: list[dict], where: str) -> list[tuple[dict, list]]:
        out = []
        for source in sources:
            store = fit_shipped.collect_source(spec, source, tmp_path / where / source["name"])
            provenance = fit_shipped.provenance_of(source, store)
            out.append(({k: v for k, v in provenance.items() if k != "policy"}, store.episodes("all")))
        return out

    from_saves = collected(fit_shipped.sources(spec, work), "saves")
    behaviour.freeze(run, work, tmp_path / "data_runs")
    for path in run.checkpoints(work).values():
        path.unlink()  # what a new machine has: the frozen copies only
    sources = fit_shipped.sources(spec, work)
    assert [Path(s["policy"]).suffix for s in sources] == [".safetensors"] * 4
    assert [s["deterministic"] for s in sources] == [True, False, True, False]
    from_frozen = collected(sources, "frozen")
    assert not any(p.is_file() for p in run.checkpoints(work).values())  # nothing was trained again
    for (saved_record, saved), (frozen_record, frozen) in zip(from_saves, from_frozen):
        assert saved_record == frozen_record and len(saved) == len(frozen)
        for a, b in zip(saved, frozen):
            np.testing.assert_array_equal(a.obs, b.obs)
            np.testing.assert_array_equal(a.action, b.action)


def test_a_frozen_run_of_another_length_is_refused(tmp_path):
    run, work = trained_tiny_run(tmp_path, "CartPole-v1", "A2C")
    behaviour.freeze(run, work, tmp_path / "held_out")
    longer = behaviour.BehaviourRun(run.env_id, run.algorithm, run.seed, steps=200, every=50)
    with pytest.raises(SystemExit, match="--steps 200 --every 50 --freeze"):
        behaviour.checkpoint_agents(longer, work, tmp_path / "held_out")


def test_a_run_continued_to_more_steps_says_so_when_frozen(tmp_path):
    run, work = trained_tiny_run(tmp_path, "CartPole-v1", "A2C")
    behaviour.freeze(run, work, tmp_path / "held_out")
    assert "continued_from" not in behaviour.frozen_record(run, tmp_path / "held_out")
    longer = behaviour.BehaviourRun(run.env_id, run.algorithm, run.seed, steps=200, every=50)
    behaviour.train_behaviour(longer, work)  # goes on from the 100-step save
    behaviour.freeze(longer, work, tmp_path / "held_out")
    record = behaviour.frozen_record(longer, tmp_path / "held_out")
    assert record["continued_from"] == [100]
    assert sorted(int(s) for s in record["checkpoints"]) == [50, 100, 150, 200]


def shipped_held_out_runs() -> list[behaviour.BehaviourRun]:
    runs = set()
    for spec_path in sorted(ENVS.glob("*.json")):
        spec = json.loads(spec_path.read_text())
        runs |= set(fit_shipped.behaviour_runs(spec, "held_out_agents"))
    return sorted(runs, key=lambda r: (r.env_id, r.name))


def test_every_shipped_spec_judges_its_dream_on_frozen_held_out_runs():
    runs = shipped_held_out_runs()
    assert {r.env_id for r in runs} == {"CartPole-v1", "Pendulum-v1", "Walker2d-v5"}
    for run in runs:
        record = behaviour.frozen_record(run)
        assert record is not None, f"{run.env_id} {run.name} is not frozen in envs/held_out/"
        assert sorted(int(s) for s in record["checkpoints"]) == sorted(run.checkpoints(Path(".")))
        for steps in run.checkpoints(Path(".")):
            assert behaviour.frozen_weights(run, behaviour.HELD_OUT, steps).is_file()


def test_no_run_both_logs_data_and_judges_the_dreams():
    """A policy in a dream's data cannot be one it is judged on: not in a spec, not among the frozen runs."""
    for spec_path in sorted(ENVS.glob("*.json")):
        spec = json.loads(spec_path.read_text())
        data = set(fit_shipped.behaviour_runs(spec, "agents"))
        judges = set(fit_shipped.behaviour_runs(spec, "held_out_agents"))
        both = {(r.algorithm, r.seed) for r in data} & {(r.algorithm, r.seed) for r in judges}
        assert not both, f"{spec_path.name}: {sorted(both)} both in fit.data.agents and fit.held_out_agents"
    frozen_data = {p.relative_to(behaviour.DATA_RUNS) for p in behaviour.DATA_RUNS.glob("*/*") if p.is_dir()}
    frozen_judges = {p.relative_to(behaviour.HELD_OUT) for p in behaviour.HELD_OUT.glob("*/*") if p.is_dir()}
    assert frozen_data, "envs/data_runs/ holds no frozen run"
    assert not frozen_data & frozen_judges, (
        f"frozen as data and as a judge: {sorted(frozen_data & frozen_judges)}"
    )


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_frozen_held_out_checkpoints_still_score_what_their_record_says(env_id):
    """The committed weights reproduce the returns committed beside them (each run's first save)."""
    for run in (r for r in shipped_held_out_runs() if r.env_id == env_id):
        record = behaviour.frozen_record(run)
        assert record is not None, f"{run.env_id} {run.name} is not frozen in envs/held_out/"
        agent = behaviour.load_frozen(run, run.every)
        score = evaluate_agent(agent, env_id, behaviour.EVALUATION_EPISODES, behaviour.EVALUATION_SEED)
        assert abs(score.mean_return - record["checkpoints"][str(run.every)]["real_return"]) <= 0.1
