"""The policy audit: intervals, agents, unsure share, real replay, Spearman, reports and the CLI.

One small ensemble is fitted on real Pendulum data for the whole module (``ensemble:ci``, a few
hundred updates); audits use short horizons and few episodes to stay fast.
"""

from __future__ import annotations

import json
from xml.etree import ElementTree

import gymnasium as gym
import numpy as np
import pytest

from worldflux_gym.audit import (
    AuditConfig,
    AuditResult,
    Calibration,
    DreamRollouts,
    RealComparison,
    ScenarioResult,
    audit_agent,
    bootstrap_ci,
    rankdata,
    real_rollouts,
    spearman,
    split_half_spearman,
    write_report,
)
from worldflux_gym.audit.scenarios import summarise
from worldflux_gym.cli import main
from worldflux_gym.core.checkpoint import from_pretrained
from worldflux_gym.core.errors import ConfigError

DREAM_ID = "WorldFlux/Ensemble-Pendulum-v0"
FAST = {"what_if": False, "horizon": 30}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from worldflux_gym.training import fit_world_model

    run = tmp_path_factory.mktemp("audit") / "pendulum-ensemble"
    fit_world_model("Pendulum-v1", "ensemble:ci", run, steps=300, collect_steps=3000, progress=False)
    return run


def zero_torque(obs: np.ndarray) -> np.ndarray:
    return np.zeros((len(obs), 1), dtype=np.float32)


def pd_controller(obs: np.ndarray) -> np.ndarray:
    """A fixed, reasonable Pendulum controller: push towards upright, damp the speed."""
    theta = np.arctan2(obs[:, 1], obs[:, 0])
    return np.clip(-2.0 * theta - 0.5 * obs[:, 2], -2.0, 2.0)[:, None].astype(np.float32)


# --- statistics ------------------------------------------------------------------------------------
def test_bootstrap_interval_contains_the_mean_and_shrinks_with_more_values():
    rng = np.random.default_rng(0)
    small, large = rng.normal(5.0, 2.0, 20), rng.normal(5.0, 2.0, 500)
    a, b = bootstrap_ci(small), bootstrap_ci(large)
    for interval, values in ((a, small), (b, large)):
        assert interval.low < values.mean() < interval.high
        assert interval.mean == pytest.approx(values.mean())
    assert (b.high - b.low) < 0.5 * (a.high - a.low)  # ~ 1/sqrt(n): sqrt(20/500) = 0.2
    assert bootstrap_ci(small) == a  # seeded: the same values give the same interval


def test_spearman_on_known_inputs():
    assert spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)  # monotone, not linear
    # ties share their mean rank: y ranks (1, 4, 2.5, 2.5) against (1, 2, 3, 4) -> 1.5 / sqrt(5 * 4.5)
    assert rankdata([1, 3, 2, 2]).tolist() == [1.0, 4.0, 2.5, 2.5]
    assert spearman([1, 2, 3, 4], [1, 3, 2, 2]) == pytest.approx(1.5 / np.sqrt(22.5))
    assert spearman([1, 2, 3], [7, 7, 7]) is None  # undefined: no spread


def test_split_half_spearman_tells_a_reproducible_ranking_from_noise():
    rng = np.random.default_rng(0)
    # five agents 10 apart with episode noise 1: any half of the episodes ranks them the same way
    graded = [rng.normal(10.0 * k, 1.0, 50) for k in range(5)]
    assert split_half_spearman(graded) == pytest.approx(1.0)
    # five agents of one quality: one half's order says nothing of the other's (0 on average)
    same = [split_half_spearman([rng.normal(0.0, 1.0, 50) for _ in range(5)], splits=200) for _ in range(20)]
    assert abs(np.mean(same)) < 0.2
    # two close pairs: reproducible between the pairs (ranks 1-2 vs 3-4), a coin toss within them;
    # one pair swapped gives 0.8, both 0.6, none 1.0
    pairs = [rng.normal(m, 1.0, 50) for m in (0.0, 0.05, 10.0, 10.05)]
    assert 0.6 <= split_half_spearman(pairs) < 1.0
    assert split_half_spearman([np.ones(5)]) is None and split_half_spearman([np.ones(5), [1.0]]) is None


# --- the unsure share on a constructed case ----------------------------------------------------------
def test_unsure_share_and_return_share_on_a_constructed_case():
    # two episodes of three steps; episode 1 ended after two steps (its third step is not counted)
    rewards = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
    uncertainty = np.array([[0.1, 5.0], [5.0, 0.1], [5.0, np.nan]])
    alive = np.array([[True, True], [True, True], [True, False]])
    rollouts = DreamRollouts(rewards, uncertainty, alive, np.array([False, True]), np.zeros(0), np.zeros(0))
    calibration = Calibration(1.0, 0.99, 100, "constructed", reward_floor=0.0, real_quantiles={})
    s = summarise("case", "", rollouts, calibration, AuditConfig(flag_share=0.1))
    # unsure: (t=1, ep 0) r=3, (t=2, ep 0) r=5, (t=0, ep 1) r=2 -> 3 of 5 live steps, 10 of 15 reward
    assert s.unsure_share == pytest.approx(3 / 5)
    assert s.return_share_unsure == pytest.approx(10 / 15)
    assert s.unsure_share_per_episode.tolist() == pytest.approx([2 / 3, 1 / 2])
    assert s.reward_rate_unsure == pytest.approx(10 / 3) and s.reward_rate_sure == pytest.approx(5 / 2)
    assert s.flagged  # unsure most of the time, and earning more than its share there
    assert s.returns.tolist() == [9.0, 6.0] and s.lengths.tolist() == [3, 2]
    assert s.flag_reason == "exploitation"
    # unsure where the reward is low: 2 of 5 steps unsure but earning less there: no exploitation ...
    rollouts.uncertainty = np.array([[5.0, 5.0], [0.1, 0.1], [0.1, np.nan]])
    low = summarise("case", "", rollouts, calibration, AuditConfig(flag_share=0.1, off_data_share=0.5))
    assert low.unsure_share == pytest.approx(2 / 5) and low.return_share_unsure == pytest.approx(3 / 15)
    assert not low.flagged
    # ... but off the data when more than off_data_share of the steps are unsure
    off = summarise("case", "", rollouts, calibration, AuditConfig(flag_share=0.1, off_data_share=0.3))
    assert off.flag_reason == "off the data"
    # rewards above the highest real reward (4.5 + 1% margin): the 5.0 step of episode 0
    capped = Calibration(1.0, 0.99, 100, "constructed", 0.0, {}, reward_ceiling=4.5)
    above = summarise("case", "", rollouts, capped, AuditConfig())
    assert above.reward_above_real_share == pytest.approx(1 / 5)
    # dreamed rewards below the lowest real reward count 0, so shares stay in [0, 1]
    floored = Calibration(1.0, 0.99, 100, "constructed", 2.5, {})
    below = summarise("case", "", rollouts, floored, AuditConfig())
    assert below.return_share_unsure == pytest.approx(0.0)  # the unsure rewards 1 and 2 are below 2.5


def test_starts_far_from_the_data_are_mostly_unsure(checkpoint):
    near = audit_agent(zero_torque, DREAM_ID, checkpoint=checkpoint, episodes=16, **FAST)
    far_starts = np.tile(
        np.array([[4.0, -4.0, 30.0]], np.float32), (16, 1)
    )  # |cos|, |sin| > 1: no real state
    far = audit_agent(zero_torque, DREAM_ID, checkpoint=checkpoint, starts=far_starts, **FAST)
    assert near.calibration.threshold == far.calibration.threshold  # the same real data
    assert "held-out" in near.calibration.source and str(checkpoint) in near.calibration.source
    # a model loaded beforehand still calibrates on its own held-out data, not on fresh random steps
    loaded = audit_agent(zero_torque, DREAM_ID, checkpoint=from_pretrained(checkpoint), episodes=16, **FAST)
    assert (
        loaded.calibration == near.calibration
        and loaded.nominal.returns.tolist() == near.nominal.returns.tolist()
    )
    assert near.nominal.unsure_share < 0.2
    assert far.nominal.unsure_share > 0.8
    assert far.nominal.uncertainty_mean > 3 * near.nominal.uncertainty_mean


# --- audits ------------------------------------------------------------------------------------------
def test_dream_interval_contains_the_mean_and_shrinks_with_more_episodes(checkpoint):
    few = audit_agent(pd_controller, DREAM_ID, checkpoint=checkpoint, episodes=8, **FAST).nominal
    many = audit_agent(pd_controller, DREAM_ID, checkpoint=checkpoint, episodes=96, **FAST).nominal
    for s in (few, many):
        assert s.interval.low <= s.returns.mean() <= s.interval.high
        assert len(s.returns) == len(s.lengths)
    assert len(many.returns) == 96
    assert many.interval.high - many.interval.low < few.interval.high - few.interval.low


def test_an_sb3_zip_and_a_callable_give_the_same_audit(checkpoint, tmp_path):
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", gym.make("Pendulum-v1"), seed=0, device="cpu")
    model.save(tmp_path / "ppo.zip")

    def as_callable(obs):
        return model.predict(obs, deterministic=True)[0]

    from_zip = audit_agent(tmp_path / "ppo.zip", DREAM_ID, checkpoint=checkpoint, episodes=6, **FAST)
    from_callable = audit_agent(as_callable, DREAM_ID, checkpoint=checkpoint, episodes=6, **FAST)
    assert from_zip.agent == "ppo" and from_zip.agent_path.endswith("ppo.zip")
    np.testing.assert_allclose(from_zip.nominal.returns, from_callable.nominal.returns, rtol=1e-5)


def test_real_replay_starts_pendulum_exactly_where_the_dream_started():
    rng = np.random.default_rng(1)
    theta, speed = rng.uniform(-np.pi, np.pi, 5), rng.uniform(-6, 6, 5)
    starts = np.stack([np.cos(theta), np.sin(theta), speed], axis=1).astype(np.float32)
    replay = real_rollouts("Pendulum-v1", pd_controller, starts, seeds=list(range(5)), horizon=50)
    assert replay.state_set.all()
    np.testing.assert_allclose(replay.start_obs, starts, atol=1e-6)
    # an independent single-env run from the same state earns the same return
    env = gym.make("Pendulum-v1")
    for i in range(5):
        obs, _ = env.reset(seed=123)
        env.unwrapped.state = np.array([theta[i], speed[i]])
        obs, total = env.unwrapped._get_obs(), 0.0
        for _ in range(50):
            obs, reward, *_ = env.step(pd_controller(obs[None])[0])
            total += reward
        assert replay.returns[i] == pytest.approx(total, rel=1e-4)
    assert replay.lengths.tolist() == [50] * 5


def _audit_with_replay(dream: list[float], real: list[float], **config) -> AuditResult:
    """An audit whose nominal dream and real replay hold these per-episode returns."""
    dream_returns, real_returns = np.asarray(dream), np.asarray(real)
    lengths = np.full(len(dream), 300)
    nominal = ScenarioResult(
        "nominal", "", dream_returns, lengths, bootstrap_ci(dream_returns), 0.0,
        unsure_share=0.02, return_share_unsure=0.01,
    )  # fmt: skip
    replay = RealComparison(
        "Walker2d-v5", "constructed", dream_returns, real_returns, lengths, lengths,
        np.ones(len(dream), dtype=bool), bootstrap_ci(real_returns),
        bootstrap_ci(dream_returns - real_returns), None,
    )  # fmt: skip
    calibration = Calibration(1.0, 0.99, 100, "constructed", reward_floor=0.0, real_quantiles={})
    return AuditResult(
        "agent", None, "Walker2d-v5", None, AuditConfig(**config), calibration, {"nominal": nominal}, [],
        real=replay,
    )  # fmt: skip


def test_a_replay_that_falls_where_the_dream_walks_flags_the_dream_as_overrated():
    # session 21's exploit: few unsure steps (the members agree), yet reality drops the gait
    real = [538.0, 591.0, 564.0, 522.0, 534.0, 521.0, 542.0, 523.0, 556.0, 545.0]
    dream = [-11.0, 521.0, 31.0, 801.0, 3691.0, 708.0, 418.0, 3933.0, 2053.0, 2707.0]
    exploit = _audit_with_replay(dream, real)
    assert exploit.nominal.flag_reason is None  # the uncertainty alone does not see it
    assert exploit.flagged and exploit.flag_reason == "overrated in reality"
    assert exploit.verdict().startswith("FLAGGED (overrated in reality): on the 10 replayed starts")
    assert exploit.as_dict()["flag_reason"] == "overrated in reality"
    # a model without uncertainty (no calibration, no unsure share) is flagged by the replay too
    exploit.calibration, exploit.nominal.unsure_share = None, None
    assert exploit.verdict().startswith("FLAGGED (overrated in reality)")
    # a dream that underrates, or overrates within the share or within chance, is not flagged
    assert not _audit_with_replay([v - 300 for v in real], real).flagged
    assert not _audit_with_replay([v * 1.2 for v in real], real).flagged
    assert _audit_with_replay([v * 1.2 for v in real], real, overrate_share=0.1).flagged
    assert not _audit_with_replay([v + s for v, s in zip(real, [2000, -2000] * 5)], real).flagged
    # negative returns (Pendulum): overrating means less negative; the share is of |real|
    assert _audit_with_replay([-100.0, -110.0, -90.0], [-200.0, -210.0, -190.0]).flagged
    assert not _audit_with_replay([-190.0, -200.0, -180.0], [-200.0, -210.0, -190.0]).flagged
    with pytest.raises(ConfigError, match="overrate_share"):
        AuditConfig(overrate_share=-0.1)


@pytest.mark.parametrize("env_id", ["Walker2d-v5", "CartPole-v1"])
def test_real_replay_sets_mujoco_and_cartpole_states_from_mid_episode_observations(env_id):
    env = gym.make(env_id)
    env.action_space.seed(0)
    starts = []
    for seed in range(3):  # states a few random steps into an episode, not just resets
        obs, _ = env.reset(seed=seed)
        for _ in range(4):
            obs, *_ = env.step(env.action_space.sample())
        starts.append(obs)
    env.close()
    starts = np.stack(starts)
    act = (
        (lambda o: np.zeros(len(o), np.int64))
        if env_id.startswith("CartPole")
        else (lambda o: np.zeros((len(o), 6)))
    )
    replay = real_rollouts(env_id, act, starts, seeds=[10, 11, 12], horizon=3)
    assert replay.state_set.all()
    np.testing.assert_allclose(replay.start_obs, starts, atol=1e-6)


def test_real_episodes_replays_the_first_starts_only(checkpoint, tmp_path):
    options = {"checkpoint": checkpoint, "episodes": 8, "real": True, "deterministic": True, **FAST}
    every = audit_agent(pd_controller, DREAM_ID, **options)
    first = audit_agent(pd_controller, DREAM_ID, real_episodes=3, **options)
    np.testing.assert_array_equal(first.nominal.returns, every.nominal.returns)  # all 8 dreamed
    assert len(first.real.real_returns) == 3 and first.real.start_reproduced.all()
    np.testing.assert_allclose(first.real.real_returns, every.real.real_returns[:3], rtol=1e-5)
    np.testing.assert_array_equal(first.real.dream_returns, every.nominal.returns[:3])
    assert len(first.real.dream_lengths) == 3
    markdown = (write_report(first, tmp_path / "report") / "report.md").read_text()
    assert "Starts replayed (the first 3 of the dreamed starts, with" in markdown
    replayed = {c["start"]: c.get("real_return") for c in first.worst_cases if c["scenario"] == "nominal"}
    assert all((value is not None) == (start < 3) for start, value in replayed.items())
    for bad in (0, 9):
        with pytest.raises(ConfigError, match="real_episodes"):
            audit_agent(pd_controller, DREAM_ID, real_episodes=bad, **options)


# --- report and command line -------------------------------------------------------------------------
def test_report_files_hold_every_figure(checkpoint, tmp_path):
    config = AuditConfig(episodes=8, horizon=20, cem_iterations=2, cem_population=8, adversarial_bases=3)
    result = audit_agent(pd_controller, DREAM_ID, checkpoint=checkpoint, real=True, config=config)
    assert set(result.scenarios) == {"nominal", "start_noise", "action_noise", "adversarial"}
    assert result.real.start_reproduced.all()
    np.testing.assert_allclose(result.real.gaps, result.nominal.returns - result.real.real_returns)
    out = write_report(result, tmp_path / "report")
    data = json.loads((out / "report.json").read_text())
    assert data["scenarios"]["nominal"]["interval"]["method"].startswith("percentile bootstrap")
    assert len(data["scenarios"]["nominal"]["returns"]) == 8
    assert len(data["real"]["real_returns"]) == 8 and data["calibration"]["threshold"] > 0
    # Lengths side by side: Pendulum never terminates, so both run the 20-step horizon.
    np.testing.assert_array_equal(result.real.dream_lengths, result.nominal.lengths)
    assert data["real"]["real_lengths"] == [20] * 8 == data["real"]["dream_lengths"]
    assert len(data["scenarios"]["nominal"]["uncertainty_per_step"]["mean"]) == 20
    assert sum(c["scenario"] == "adversarial" for c in data["worst_cases"]) == 3
    assert data["figures"] == ["dream_vs_real.svg", "returns.svg", "uncertainty.svg"]
    markdown = (out / "report.md").read_text()
    for name in data["figures"]:
        root = ElementTree.fromstring((out / name).read_text())  # well-formed SVG
        assert root.tag.endswith("svg") and len(root) > 10 and f"]({name})" in markdown
    assert all(c["real_return"] is not None for c in data["worst_cases"])  # every worst start replayed
    assert "## Dream vs real (Pendulum-v1)" in markdown and "## Worst cases" in markdown
    assert "Median episode length: dream 20, real 20 steps." in markdown
    assert "*FLAG: overrated in reality* (the verdict, from the real replay below)" in markdown


def test_cli_audit_ranks_two_agents(checkpoint, tmp_path, capsys):
    from stable_baselines3 import PPO

    paths = []
    for seed in (0, 1):
        paths.append(tmp_path / f"agent{seed}.zip")
        PPO("MlpPolicy", gym.make("Pendulum-v1"), seed=seed, device="cpu").save(paths[-1])
    out = tmp_path / "ranking"
    code = main(
        ["audit", *map(str, paths), DREAM_ID, "--checkpoint", str(checkpoint), "--episodes", "4",
         "--horizon", "15", "--real", "--no-what-if", "--videos", "0", "--deterministic", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "Spearman rank correlation" in printed and "agent0" in printed and "agent1" in printed
    assert "median length" in printed and "15 / 15" in printed  # dream / real, the horizon on both
    data = json.loads((out / "report.json").read_text())
    assert [row["rank"] for row in data["rows"]] == [1, 2]
    assert data["real_split_half_spearman"] in (-1.0, 1.0)  # two agents: the halves agree or not
    assert "Reproducibility of the real ranking" in printed
    assert "Reproducibility of the dream ranking" in printed
    assert data["dream_split_half_spearman"] in (-1.0, 1.0)
    assert data["rows"][0]["dream_return"]["mean"] >= data["rows"][1]["dream_return"]["mean"]
    assert (out / "agent0" / "report.md").is_file() and (out / "ranking.svg").is_file()
    agent_report = json.loads((out / "agent0" / "report.json").read_text())
    assert agent_report["config"]["deterministic"] is True
    assert "cover the spread of starts only" in (out / "agent0" / "report.md").read_text()


def test_ranking_over_several_models_averages_their_dream_means(checkpoint):
    import copy

    import torch

    from worldflux_gym.audit import rank_agents
    from worldflux_gym.audit.ranking import estimate_errors
    from worldflux_gym.audit.report import ranking_text
    from worldflux_gym.core.errors import ConfigError

    fitted = from_pretrained(checkpoint, device="cpu")
    models = []
    for member in fitted.elite_index[:2].tolist():  # two different models: one elite member each
        models.append(copy.deepcopy(fitted))
        models[-1].elite_index = torch.tensor([member])
    agents = {"zero": zero_torque, "pd": pd_controller}
    options = {"episodes": 6, "real": True, "deterministic": True, **FAST}
    alone = [rank_agents(agents, DREAM_ID, checkpoint=model, **options) for model in models]
    both = rank_agents(agents, DREAM_ID, checkpoints=models, **options)

    per_model = np.stack([r.dream_means for r in alone])
    assert not np.allclose(per_model[0], per_model[1])
    np.testing.assert_allclose(both.dream_means_per_model, per_model)
    np.testing.assert_allclose(both.dream_means, per_model.mean(axis=0))
    np.testing.assert_allclose(both.model_spread, np.abs(per_model[0] - per_model[1]) / np.sqrt(2))
    np.testing.assert_allclose(both.real_means, alone[0].real_means)  # one real replay serves all models
    rho, mae, relative = estimate_errors(both.dream_means, both.real_means)
    assert (both.spearman, both.mean_absolute_error, both.relative_error) == (rho, mae, relative)
    assert alone[0].dream_means_per_model is None and alone[0].model_spread is None
    rows = both.as_dict()["rows"]
    assert [row["agent"] for row in rows] == [both.names[i] for i in both.order()]
    assert rows[0]["dream_return"]["per_model"] == per_model[:, both.order()[0]].tolist()
    assert "sd over 2 models" in ranking_text(both) and "[95% CI]" in ranking_text(alone[0])
    # the dream's own reproducibility: halves of every model's dreamed episodes pooled per agent
    pooled = [np.concatenate([r.audits[i].nominal.returns for r in alone]) for i in range(len(agents))]
    assert both.dream_split_half_spearman == split_half_spearman(pooled)
    assert alone[0].dream_split_half_spearman == split_half_spearman(
        [a.nominal.returns for a in alone[0].audits]
    )

    with pytest.raises(ConfigError, match="not both"):
        rank_agents(agents, DREAM_ID, checkpoint=models[0], checkpoints=models, **options)


def test_cli_audit_with_several_checkpoints_ranks_over_them(checkpoint, tmp_path, capsys):
    from stable_baselines3 import PPO

    agent = tmp_path / "agent.zip"
    PPO("MlpPolicy", gym.make("Pendulum-v1"), seed=0, device="cpu").save(agent)
    out = tmp_path / "ranking"
    code = main(
        ["audit", str(agent), DREAM_ID, "--checkpoint", str(checkpoint), str(checkpoint), "--episodes", "3",
         "--horizon", "10", "--no-what-if", "--videos", "0", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    assert "sd over 2 models" in capsys.readouterr().out  # one agent, two models: a ranking over them
    data = json.loads((out / "report.json").read_text())
    assert data["models"] == 2
    assert data["rows"][0]["dream_return"]["model_spread"] == 0.0  # the same run twice: no spread


def test_cli_audit_real_episodes_needs_real(checkpoint, tmp_path, capsys):
    code = main(
        ["audit", "x.zip", DREAM_ID, "--checkpoint", str(checkpoint), "--real-episodes", "2",
         "--out", str(tmp_path / "out")]
    )  # fmt: skip
    assert code != 0
    assert "add --real" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
