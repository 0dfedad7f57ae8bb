"""Uncertainty in the latent families: the Plan2Explore heads of ``dreamer`` and ``tdmpc2``.

Learning is tested by learning: each family is fitted (the heads inside its own loss) on Pendulum-v1
data logged with small random torques (|a| <= 0.5). A policy the data never saw, full-torque energy
pumping (the pendulum spins round under actions 4x the data's), must look less certain to the model
than held-out episodes of the data's own policy; the dream env's MOPO penalty and MOReL halt and the
audit's flag must work on both families; a checkpoint saved before the heads existed must still
load, and gain heads without a refit of its world model.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

from worldflux_gym.audit import audit_agent
from worldflux_gym.audit.dream import calibrate
from worldflux_gym.core import ConfigError, create_world_model, from_pretrained
from worldflux_gym.core.checkpoint import CONFIG_FILE, METADATA_FILE
from worldflux_gym.data import EpisodeBuffer, collect_episodes
from worldflux_gym.dream import DreamEnv, DreamVectorEnv
from worldflux_gym.dream.registration import load_specs
from worldflux_gym.training import Trainer, TrainerConfig, fit_uncertainty_heads

FAMILIES = ["dreamer", "tdmpc2"]
# Short windows keep the Dreamer fit short; TD-MPC2's ci preset already uses 3 steps. 1000 Dreamer
# updates, not fewer: at 250 whether its heads flag a long dream depended on the CPU's float details.
FIT = {"dreamer": ({"sequence_length": 8}, 1000), "tdmpc2": ({}, 150)}


def small_torques(seed: int):
    rng = np.random.default_rng(seed)
    return lambda obs: rng.uniform(-0.5, 0.5, size=(len(obs), 1)).astype(np.float32)


def energy_pumping(obs: np.ndarray) -> np.ndarray:
    """Full torque along the angular velocity: the pendulum swings up and spins round."""
    return (2.0 * np.sign(obs[:, 2:3] + 1e-3)).astype(np.float32)


def spaces_of(env_id: str = "Pendulum-v1"):
    env = gym.make(env_id)
    spaces = env.observation_space, env.action_space
    env.close()
    return spaces


@pytest.fixture(scope="module", params=FAMILIES)
def fitted(request):
    """A ``family:ci`` model fitted on small-torque data, its held-out data, and unseen-policy data."""
    family = request.param
    overrides, updates = FIT[family]
    episodes = collect_episodes("Pendulum-v1", 3000, policy=small_torques(0), seed=0, progress=False)
    train, held = EpisodeBuffer(episodes[:-2]), EpisodeBuffer(episodes[-2:])
    unseen = EpisodeBuffer(
        collect_episodes("Pendulum-v1", 400, policy=energy_pumping, seed=1, progress=False)
    )
    torch.manual_seed(0)
    model = create_world_model(f"{family}:ci", *spaces_of(), **overrides)
    config = TrainerConfig(steps=updates, seed=0, progress=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "no validation episodes")
        trainer = Trainer(model, (train, None), config, Path(tempfile.gettempdir()) / "uncertainty-unused")
    model.train()
    heads_loss = [trainer.update(trainer.sample_batch())["uncertainty_heads"] for _ in range(updates)]
    model.eval()
    return SimpleNamespace(
        family=family, model=model, train=train, held=held, unseen=unseen, heads_loss=heads_loss
    )


# --- learning ----------------------------------------------------------------------------------------
def test_a_policy_the_data_never_saw_is_less_certain_than_held_out_data(fitted):
    assert np.mean(fitted.heads_loss[-20:]) < 0.2 * np.mean(fitted.heads_loss[:5])  # they learn in `loss`
    held = calibrate(fitted.model, fitted.held, max_transitions=400)
    unseen = calibrate(fitted.model, fitted.unseen, max_transitions=400)
    # the unseen policy's typical step is beyond 90% of the data's held-out steps
    assert unseen.real_quantiles["q50"] > max(1.4 * held.real_quantiles["q50"], held.real_quantiles["q90"])


def test_heads_fitted_on_a_frozen_model_learn_the_same_and_change_nothing_else(fitted):
    bare = create_world_model(
        f"{fitted.family}:ci", *spaces_of(), **FIT[fitted.family][0], uncertainty_heads=0
    )
    bare.load_state_dict(fitted.model.state_dict(), strict=False)
    before = {k: v.clone() for k, v in bare.state_dict().items()}
    rng_state = torch.random.get_rng_state()
    model = fit_uncertainty_heads(bare, fitted.train, updates=150, batch_size=32)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # the caller's RNG is left alone
    assert model.capabilities.reports_uncertainty and not bare.capabilities.reports_uncertainty
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # the world model is untouched
    held = calibrate(model, fitted.held, max_transitions=400)
    unseen = calibrate(model, fitted.unseen, max_transitions=400)
    assert unseen.real_quantiles["q50"] > max(1.4 * held.real_quantiles["q50"], held.real_quantiles["q90"])


@pytest.mark.parametrize("family", FAMILIES)
def test_heads_do_not_change_what_the_world_model_learns(family):
    """The heads' loss reaches only their own weights: the world model's gradients are the same
    with and without them."""
    spaces = spaces_of()
    episodes = collect_episodes("Pendulum-v1", 300, seed=0, progress=False)
    with_heads = create_world_model(f"{family}:ci", *spaces)
    without = create_world_model(f"{family}:ci", *spaces, uncertainty_heads=0)
    without.load_state_dict(with_heads.state_dict(), strict=False)
    batch = EpisodeBuffer(episodes).sample_sequences(8, with_heads.sequence_length, np.random.default_rng(0))
    grads = []
    for model in (with_heads, without):
        torch.manual_seed(0)  # posterior samples (dreamer), Q heads drawn (tdmpc2)
        model.loss(batch).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if not n.startswith("uncertainty_net.")})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[1].items():
        assert (grad is None and grads[0][name] is None) or torch.equal(grads[0][name], grad), name
    assert all(p.grad is not None for p in with_heads.uncertainty_net.parameters())


# --- the contract ------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_report_uncertainty_off_is_nan_and_the_same_step(family):
    model = create_world_model(f"{family}:ci", *spaces_of()).eval()
    assert model.capabilities.reports_uncertainty
    assert "uncertainty" in model.io_contract()["predictions"]
    obs = torch.as_tensor(np.stack([model.observation_space.sample() for _ in range(6)]))
    action = torch.rand(6, 1) * 4 - 2
    with torch.inference_mode():
        start = model.encode(obs)
        steps = {}
        for report in (True, False):
            generator = torch.Generator().manual_seed(3)
            steps[report] = model.transition(start, action, generator=generator, report_uncertainty=report)
        on, off = steps[True], steps[False]
        out_on, out_off = model.decode(on), model.decode(off)
    assert torch.equal(start["uncertainty"], torch.zeros(6))  # a real observation is certain
    assert torch.isnan(off["uncertainty"]).all()  # not measured, never a misleading 0
    assert torch.isfinite(on["uncertainty"]).all() and (on["uncertainty"] > 0).all()
    for name in on:
        if name != "uncertainty":
            assert torch.equal(on[name], off[name]), name
    assert torch.equal(out_on.reward, out_off.reward) and torch.equal(out_on.uncertainty, on["uncertainty"])


# --- dream envs and the audit ---------------------------------------------------------------------------
def _dream(fitted, **options):
    return DreamEnv(fitted.model, real_env="Pendulum-v1", max_episode_steps=30, **options)


def test_dream_env_penalty_and_halt(fitted):
    plain, penalised = _dream(fitted, report_uncertainty=True), _dream(fitted, uncertainty_penalty=50.0)
    plain.reset(seed=4)
    penalised.reset(seed=4)
    for _ in range(10):
        _, reward, _, _, info = plain.step(np.array([2.0], np.float32))
        _, penalised_reward, _, _, penalised_info = penalised.step(np.array([2.0], np.float32))
        assert info["uncertainty"] == penalised_info["uncertainty"] > 0
        assert penalised_reward == pytest.approx(reward - 50.0 * info["uncertainty"], rel=1e-5, abs=1e-5)

    # MOReL: uncertainty above the threshold ends the episode with reward -halt_penalty
    for threshold, halts in ((0.0, True), (1e9, False)):
        env = _dream(fitted, halt_threshold=threshold, halt_penalty=7.0)
        env.reset(seed=0)
        _, reward, terminated, truncated, info = env.step(np.array([0.0], np.float32))
        assert info["halted"] == halts and not truncated
        if halts:
            assert terminated and reward == -7.0
        else:
            assert reward != -7.0


def test_vector_env_reports_uncertainty_in_info(fitted):
    env = DreamVectorEnv(
        fitted.model, 8, real_env="Pendulum-v1", max_episode_steps=30, uncertainty_penalty=1.0
    )
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.full((8, 1), 2.0, np.float32))
    assert info["uncertainty"].shape == (8,) and info["_uncertainty"].all()
    assert np.isfinite(info["uncertainty"]).all() and (info["uncertainty"] > 0).all()
    batch = DreamVectorEnv(fitted.model, 8, real_env="Pendulum-v1", max_episode_steps=30)
    batch.reset(seed=0)
    assert "uncertainty" not in batch.step(np.zeros((8, 1), np.float32))[4]  # off by default for batches


def test_audit_measures_and_flags_on_both_families(fitted):
    """The audit's unsure share and flag work on both families, each in its own way.

    TD-MPC2 tells the unseen full torques from the data's small ones from the first step. Dreamer's
    heads do not single them out: its world model learned from the data that small torques barely
    move the pendulum, so its latent barely moves either. What they flag is its dream leaving the
    data as it runs past the 8-step windows it was trained on, whatever the policy: a short dream
    of the data's policy is sure, a long one is not."""
    calibration = calibrate(fitted.model, fitted.held, "held-out small-torque episodes")
    options = dict(checkpoint=fitted.model, real_env="Pendulum-v1", calibration=calibration, episodes=16)
    full_torque = lambda obs: np.full((len(obs), 1), 2.0, np.float32)  # noqa: E731
    if fitted.family == "tdmpc2":
        sure = audit_agent(small_torques(1), horizon=30, what_if=False, **options)
        unsure = audit_agent(full_torque, horizon=30, what_if=False, **options)
    else:
        sure = audit_agent(small_torques(1), horizon=5, what_if=False, **options)
        unsure = audit_agent(small_torques(1), horizon=60, what_if=False, **options)
    for result in (sure, unsure):
        assert result.nominal.unsure_share is not None  # the family reports uncertainty
        assert "reports no uncertainty" not in result.verdict()
    assert not sure.flagged and sure.nominal.unsure_share < 0.2
    assert unsure.nominal.unsure_share > sure.nominal.unsure_share + 0.1
    if fitted.family == "tdmpc2":
        assert unsure.flagged and unsure.nominal.unsure_share > 0.8


# --- checkpoints -----------------------------------------------------------------------------------------
def _make_old_format(directory: Path) -> None:
    """Rewrite a checkpoint's config.json as a version before the heads wrote it (no heads fields)."""
    import hashlib

    config = json.loads((directory / CONFIG_FILE).read_text())
    for name in ("uncertainty_heads", "uncertainty_hidden"):
        del config["config"][name]
    data = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
    (directory / CONFIG_FILE).write_bytes(data)
    metadata = json.loads((directory / METADATA_FILE).read_text())
    metadata["config_sha256"] = hashlib.sha256(data).hexdigest()
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")


@pytest.mark.parametrize("family", FAMILIES)
def test_a_checkpoint_without_heads_loads_runs_and_gains_them(family, tmp_path):
    spaces = spaces_of()
    torch.manual_seed(0)
    old = create_world_model(f"{family}:ci", *spaces, uncertainty_heads=0)
    assert not old.capabilities.reports_uncertainty
    assert "uncertainty" not in old.io_contract()["predictions"]
    old.save_pretrained(tmp_path / "old")
    _make_old_format(tmp_path / "old")

    loaded = from_pretrained(tmp_path / "old")  # the preset says 5 heads; the old checkpoint has none
    assert loaded.config.uncertainty_heads == 0 and not loaded.capabilities.reports_uncertainty
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in old.state_dict().items())
    env = DreamEnv(loaded, real_env="Pendulum-v1", max_episode_steps=5)
    env.reset(seed=0)
    assert "uncertainty" not in env.step(np.array([0.5], np.float32))[4]
    with pytest.raises(ConfigError, match="fit_uncertainty_heads"):
        DreamEnv(loaded, real_env="Pendulum-v1", uncertainty_penalty=1.0)

    buffer = EpisodeBuffer(collect_episodes("Pendulum-v1", 400, seed=0, progress=False))
    gained = fit_uncertainty_heads(loaded, buffer, updates=20, batch_size=8)
    assert gained.capabilities.reports_uncertainty and gained.config.uncertainty_heads == 5
    assert gained.checkpoint_dir == loaded.checkpoint_dir  # the same world model, the same data
    gained.save_pretrained(tmp_path / "new")
    again = from_pretrained(tmp_path / "new")
    assert again.config.uncertainty_heads == 5 and again.capabilities.reports_uncertainty
    env = DreamEnv(again, real_env="Pendulum-v1", max_episode_steps=5, halt_threshold=1e9)
    env.reset(seed=0)
    info = env.step(np.array([0.5], np.float32))[4]
    assert np.isfinite(info["uncertainty"]) and not info["halted"]


@pytest.mark.parametrize(
    "directory",
    sorted(spec.checkpoint for spec in load_specs() if spec.family in FAMILIES),
    ids=lambda path: path.name,
)
def test_shipped_latent_checkpoints_load_and_dream(directory):
    saved = json.loads((directory / CONFIG_FILE).read_text())["config"]
    model = from_pretrained(directory)
    heads = saved.get("uncertainty_heads", 0)  # saved before the heads existed: none
    assert model.config.uncertainty_heads == heads and model.capabilities.reports_uncertainty == (heads > 0)
    obs = torch.as_tensor(np.stack([model.observation_space.sample() for _ in range(3)]))
    action = torch.as_tensor(np.stack([model.action_space.sample() for _ in range(3)]))
    with torch.inference_mode():
        out = model.decode(model.transition(model.encode(obs), action))
    assert torch.isfinite(out.reward).all() and (out.uncertainty is None) == (heads == 0)
