"""The scripts of ``envs/``: ``fit_shipped.py``'s Dyna round (agents trained in an earlier shipped
dream as data sources) and ``behaviour.py``'s checkpoint scores."""

import json
import sys
from pathlib import Path

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
    fit_shipped.train_dream_agents(spec, tmp_path)
    agents = fit_shipped.dream_agents(spec, tmp_path)
    assert [a["path"].name for a in agents] == ["pendulum_ppo_s0.zip", "pendulum_ppo_s1.zip"]
    trained = [a["path"].stat().st_mtime_ns for a in agents]
    fit_shipped.train_dream_agents(spec, tmp_path)  # a rerun keeps the agents it finds
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
