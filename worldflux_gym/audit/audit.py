"""Auditing a policy inside the imagination: what return to expect, where the model is unsure, and
whether the return comes from there.

An agent that practised in a dream can learn the model's mistakes instead of the task (World
Models: 2086 in the dream, 193 in reality). The audit runs the agent in the dream from many real
starts and reports, per scenario:

- the expected return with a 95% **percentile bootstrap** interval over episodes;
- the model's per-step uncertainty (its ensemble members' or uncertainty heads' disagreement) over time;
- the **unsure share**: the share of dreamed steps whose uncertainty exceeds the ``quantile``
  (0.99 by default) of the model's uncertainty on *real* transitions (held-out episodes of the
  checkpoint's data when it has them, else fresh random-action steps of the real env, the data the
  shipped models are fitted on). On real data 1% of steps lie above this level by construction,
  so an agent that spends far more of its time there is off the data the model knows;
- the **return share unsure**: the share of the return earned on those steps, with each reward
  counted above the lowest real reward in the same data, and dreamed rewards below it as 0 (so
  that a share means something for envs whose rewards are all negative, like Pendulum);
- the share of dreamed steps whose reward is above the highest real reward in the same data
  (rewards the real env never paid: a model error the agent may be living on, whatever the
  ensemble's agreement);
- a **flag**, for one of three reasons. *Exploitation*: more than ``flag_share`` (25%) of the return
  is earned on unsure steps and the agent earns more there than elsewhere (return share unsure >
  unsure share). *Off the data*: more than ``off_data_share`` (30%, thirty times the real data's
  rate) of the steps are unsure, whatever is earned there: the return of an agent that lives off
  the data is unverified, and the ensemble can agree on the same wrong extrapolation (the
  benchmark's exploiter earns part of its inflated dream return where its members agree). Both
  levels were set on the Pendulum benchmark, between the shares of sound agents and of a
  dream-trained exploiter (``benchmarks/RESULTS.md``, "Exploitation"); the flag is about returns
  the dream may inflate. They are heuristics, not guarantees (``docs/audit.md``). With a real
  replay a third reason comes first: *overrated in reality*, the dream above the real return on the
  same starts beyond chance and by more than ``overrate_share`` (25%) of it.

Scenarios: ``nominal`` (real starts), ``start_noise`` (Gaussian noise on the start observation, in
units of the real data's per-dimension std), ``action_noise`` (Gaussian noise on every action, in
units of half the action range), and ``adversarial``: a cross-entropy-method (CEM) search over
bounded start perturbations for the starts with the lowest dream return. With ``real``, the
nominal starts and the adversarial worst starts are replayed in the real env (``real.py``) and the
report gives the dream-minus-real return gap per episode.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from worldflux_gym.audit.dream import (
    Calibration,
    DreamRollouts,
    calibrate,
    calibration_buffer,
    dream_rollouts,
)
from worldflux_gym.audit.real import check_real_env, draw_real_starts, replay_in_real_env
from worldflux_gym.audit.results import AuditConfig, AuditResult, ScenarioResult, jsonable
from worldflux_gym.audit.scenarios import flat_box, summarise, value_at, what_if
from worldflux_gym.core.errors import ConfigError
from worldflux_gym.core.model import WorldModel
from worldflux_gym.core.validate import check_optional_positive_int
from worldflux_gym.data.policy import Agent, agent_name, as_policy
from worldflux_gym.dream.latent import latent_observation_space
from worldflux_gym.dream.registration import find_spec
from worldflux_gym.dream.resolve import ResolvedDream, resolve_dream


# --- the dream an audit runs in -------------------------------------------------------------------
def _dream_setup(
    dream_id: str | None,
    checkpoint: str | Path | WorldModel | None,
    real_env: str | None,
    horizon: int | None,
) -> ResolvedDream:
    """The model, real env and horizon (:func:`~worldflux_gym.dream.resolve.resolve_dream`) of a
    registered dream id (``checkpoint`` replaces its weights), or of a bare checkpoint / model with
    ``real_env`` and ``horizon`` given. The checkpoint's directory (``setup.checkpoint``) holds the
    data that calibrates the audit; its weights render the videos."""
    horizon = check_optional_positive_int(horizon, "horizon")
    variant_of = find_spec(dream_id).variant_of if dream_id and dream_id.startswith("WorldFlux/") else None
    if variant_of:
        raise ConfigError(
            f"{dream_id} is a dream to train in: its short, penalised dreams estimate no real return. "
            f"Audit in {variant_of}, the same weights at the options that mirror the real env"
        )
    setup = resolve_dream(dream_id, checkpoint, real_env=real_env)
    setup.horizon = horizon if horizon is not None else setup.horizon
    if setup.horizon is None:
        raise ConfigError("a bare checkpoint has no episode limit: pass horizon=")
    return setup


# --- the audit ------------------------------------------------------------------------------------
def audit_agent(
    agent: Agent,
    dream_id: str | None = None,
    *,
    checkpoint: str | Path | WorldModel | None = None,
    real: bool | str = False,
    config: AuditConfig | None = None,
    starts: np.ndarray | None = None,
    real_env: str | None = None,
    calibration: Calibration | None = None,
    name: str | None = None,
    **overrides: Any,
) -> AuditResult:
    """Audit ``agent`` in the dream ``dream_id`` (a ``WorldFlux/*`` id; ``checkpoint`` replaces its
    weights) or in a bare ``checkpoint`` / model (then give ``real_env`` and ``horizon``).

    ``agent``: an SB3 ``.zip``, an SB3 model, or a callable from a batch of observations to a batch
    of actions. ``real``: ``True`` replays the starts in the dream's real env, a string names
    another env id. ``starts``: the start observations ``[N, *obs_shape]`` to use instead of
    ``config.episodes`` real resets. ``overrides``: :class:`AuditConfig` fields
    (``audit_agent(a, id, episodes=50)``). See the module docstring for what is measured and
    ``docs/audit.md`` for how to read the result; ``write_report`` writes it to a folder.

    >>> import numpy as np
    >>> from worldflux_gym.audit import audit_agent
    >>> def still(obs):  # no torque
    ...     return np.zeros((len(obs), 1), np.float32)
    >>> result = audit_agent(
    ...     still, "WorldFlux/Ensemble-Pendulum-v0", episodes=10, what_if=False, calibration_steps=500
    ... )
    >>> result.nominal.returns.shape, result.flagged
    ((10,), False)
    """
    config = config or AuditConfig()
    if overrides:
        unknown = set(overrides) - set(AuditConfig.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown audit settings {sorted(unknown)}; see AuditConfig")
        config = AuditConfig(**{**asdict(config), **overrides})
    if config.real_episodes is not None and not 1 <= config.real_episodes <= config.episodes:
        raise ConfigError(
            f"real_episodes={config.real_episodes}: replay between 1 and episodes={config.episodes} "
            "of the dreamed starts in the real env (None: all of them)"
        )
    started = time.perf_counter()
    setup = _dream_setup(dream_id, checkpoint, real_env, config.horizon)
    model, horizon = setup.model, setup.horizon
    assert horizon is not None  # _dream_setup refuses a dream without one
    real_id = setup.real_env if real is True else (real or None)
    env_for_starts = real_id or setup.real_env
    if isinstance(real, str) and real:
        check_real_env(real, model)
    policy = as_policy(
        agent,
        observation_space=model.observation_space
        if model.capabilities.decodes_observations
        else latent_observation_space(model),
        action_space=model.action_space,
        where=f"the dream {setup.dream_id or setup.checkpoint}",
        hint="audit it in a dream of the env it was trained for",
    )
    notes: list[str] = []

    # real data: the uncertainty threshold and the scale of perturbations
    buffer, source = calibration_buffer(
        setup.checkpoint, env_for_starts, config.calibration_steps, config.seed
    )
    if calibration is None:
        calibration = calibrate(model, buffer, source, config.unsure_quantile, seed=config.seed)
    if calibration is None:
        notes.append(f"this {model.family!r} model reports no uncertainty: no unsure share, no flag")
    scale = buffer.obs.reshape(len(buffer.obs), -1).std(axis=0).astype(np.float32)
    scale = np.where(scale > 1e-6, scale, 1.0)

    if starts is None:
        if env_for_starts is None:
            raise ConfigError("without a real env to reset, pass the start observations (starts=)")
        starts, seeds = draw_real_starts(env_for_starts, config.episodes, config.seed)
        start_source = f"{len(starts)} seeded resets of {env_for_starts} (seeds {seeds[0]}..{seeds[-1]})"
        reset_seeds = True
    else:
        starts = np.asarray(starts, dtype=np.float32)
        seeds = [config.seed + i for i in range(len(starts))]
        start_source = f"{len(starts)} start observations given by the caller"
        reset_seeds = False  # the seeds only seed the real envs before their state is set
    notes.append(f"starts: {start_source}")

    def run(name: str, description: str, start_obs: np.ndarray, **kwargs: Any) -> ScenarioResult:
        kwargs.setdefault("deterministic", config.deterministic)
        rollouts = dream_rollouts(model, policy, start_obs, horizon, seed=config.seed, **kwargs)
        rollouts_by_name[name] = rollouts
        return summarise(name, description, rollouts, calibration, config)

    rollouts_by_name: dict[str, DreamRollouts] = {}
    scenarios = {"nominal": run("nominal", "real starts, the agent's own actions", starts)}
    worst_cases: list[dict[str, Any]] = []
    worst_start = None
    if config.what_if and flat_box(model.observation_space):
        worst_start = what_if(
            run, scenarios, worst_cases, starts, scale, setup, env_for_starts, policy, config
        )
    elif config.what_if:
        notes.append(f"what-if scenarios need a 1-D Box observation space, not {model.observation_space}")
    nominal = scenarios["nominal"]
    for i in np.argsort(nominal.returns)[: config.worst_cases]:
        worst_cases.append(
            {
                "scenario": "nominal",
                "start": int(i),
                "seed": seeds[i] if reset_seeds else None,  # the real reset this start came from
                "start_obs": starts[i],
                "dream_return": float(nominal.returns[i]),
                "unsure_share": value_at(nominal.unsure_share_per_episode, i),
            }
        )
    comparison = None
    if real_id:
        comparison = replay_in_real_env(
            real_id, setup, policy, nominal, starts, seeds, worst_start, worst_cases, notes, config
        )

    result = AuditResult(
        agent=name or agent_name(agent),
        dream_id=setup.dream_id,
        real_env=real_id or setup.real_env,
        checkpoint=str(setup.checkpoint) if setup.checkpoint else None,
        config=config,
        calibration=calibration,
        scenarios=scenarios,
        worst_cases=jsonable(worst_cases),
        real=comparison,
        notes=notes,
        rollouts=rollouts_by_name,
        agent_path=str(agent) if isinstance(agent, (str, Path)) else None,
    )
    result.seconds = round(time.perf_counter() - started, 2)
    return result
