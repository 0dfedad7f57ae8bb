"""How good is a fitted world model on held-out real episodes?

Three figures, computed the same way for every family:

- open-loop observation error at horizon ``h``: burn in ``context`` real steps with ``observe``,
  imagine ``h`` steps with the real actions (deterministic), compare with the real ``o_{t+h}``.
  Reported relative to the persistence baseline (predict that nothing changes), in units of the
  per-dimension standard deviation of the data; below 1.0 beats persistence. Families that decode
  no observations are compared in their latent space, against the encoding of the real observation.
- reward correlation: Pearson correlation of one-step predicted and real rewards.
- termination balanced accuracy: mean of the true-positive and true-negative rates of
  ``termination_prob > 0.5`` on one-step predictions (terminations are rare, plain accuracy is not
  informative). The true-positive rate is taken at every terminal step of the episodes (after
  ``context`` steps), the true-negative rate on the sampled windows: terminal steps are a few
  percent of the sampled windows, too few for a steady rate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from worldflux_gym.core.model import WorldModel
from worldflux_gym.data.buffer import EpisodeBuffer


@dataclass
class ModelQuality:
    open_loop_error: dict[int, float | None]  # horizon -> model error / persistence error
    reward_correlation: float | None
    termination_balanced_accuracy: float | None
    windows: int
    terminal_steps: int = 0  # the real terminations the balanced accuracy's true-positive rate is on

    def as_dict(self) -> dict:
        data = asdict(self)
        data["open_loop_error"] = {str(k): v for k, v in self.open_loop_error.items()}
        return data


def _prediction(model: WorldModel, state) -> torch.Tensor:
    out = model.decode(state)
    if model.capabilities.decodes_observations:
        return out.obs.float().flatten(1)
    return out.extras["latent"].float()


def _target(model: WorldModel, obs: torch.Tensor) -> torch.Tensor:
    if model.capabilities.decodes_observations:
        return obs.float().flatten(1)
    return model.decode(model.encode(obs)).extras["latent"].float()


@torch.inference_mode()
def open_loop_error(
    model: WorldModel,
    buffer: EpisodeBuffer,
    horizon: int,
    context: int,
    windows: int,
    rng: np.random.Generator,
) -> float | None:
    """Model / persistence error at ``horizon`` (see the module docstring); ``None`` without data."""
    try:
        obs, action = buffer.sample_contexts(windows, context + horizon, rng)
    except ValueError:
        return None
    state = model.observe(obs[:, : context + 1], action[:, :context])
    for t in range(horizon):
        state = model.transition(state, action[:, context + t], deterministic=True, report_uncertainty=False)
    predicted = _prediction(model, state)
    real = _target(model, obs[:, context + horizon])
    last = _target(model, obs[:, context])
    scale = torch.as_tensor(buffer.obs.reshape(len(buffer.obs), -1).std(0), device=real.device).float()
    if not model.capabilities.decodes_observations:
        scale = torch.ones_like(real[0])
    scale = scale.clamp_min(1e-6)
    model_error = ((predicted - real) / scale).pow(2).mean()
    persistence_error = ((last - real) / scale).pow(2).mean()
    return float(model_error / persistence_error.clamp_min(1e-12))


@torch.inference_mode()
def one_step_predictions(
    model: WorldModel, buffer: EpisodeBuffer, context: int, windows: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Predicted and real reward, predicted termination probability and real termination, one step
    after a burned-in context, over windows that may end at an episode's real termination."""
    batch = buffer.sample_sequences(windows, context + 1, rng)
    valid = batch.mask.all(dim=1)
    state = model.observe(batch.obs[valid, : context + 1], batch.action[valid, :context])
    state = model.transition(
        state, batch.action[valid, context], deterministic=True, report_uncertainty=False
    )
    out = model.decode(state)
    term = out.termination_prob
    return (
        out.reward.float().cpu().numpy() if out.reward is not None else None,
        batch.reward[valid, context].cpu().numpy(),
        term.cpu().numpy() if term is not None else None,
        batch.terminated[valid, context].cpu().numpy(),
    )


@torch.inference_mode()
def terminal_step_predictions(model: WorldModel, buffer: EpisodeBuffer, context: int) -> np.ndarray | None:
    """Predicted termination probability at every terminal step of ``buffer`` that has ``context``
    steps before it (one step after the burned-in context, as :func:`one_step_predictions`)."""
    terminal = np.flatnonzero(buffer.terminated & (buffer.step_time >= context))
    if len(terminal) == 0:
        return np.zeros(0)
    batch = buffer.sequences(terminal - context, context + 1)
    state = model.observe(batch.obs[:, : context + 1], batch.action[:, :context])
    state = model.transition(state, batch.action[:, context], deterministic=True, report_uncertainty=False)
    probability = model.decode(state).termination_prob
    return None if probability is None else probability.cpu().numpy()


def evaluate_model(
    model: WorldModel,
    buffer: EpisodeBuffer,
    horizons: tuple[int, ...] = (1, 5, 10, 25, 50),
    context: int = 5,
    windows: int = 512,
    seed: int = 0,
) -> ModelQuality:
    """All figures of the module docstring on ``buffer`` (held-out episodes)."""
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    errors = {h: open_loop_error(model, buffer, h, context, windows, rng) for h in horizons}
    reward_pred, reward_real, term_prob, term_real = one_step_predictions(
        model, buffer, context, windows, rng
    )
    correlation = None
    if reward_pred is not None and reward_real.std() > 0 and reward_pred.std() > 0:
        correlation = float(np.corrcoef(reward_pred, reward_real)[0, 1])
    at_terminal = terminal_step_predictions(model, buffer, context)
    terminal_steps = 0 if at_terminal is None else len(at_terminal)
    balanced = balanced_accuracy(term_prob, term_real, at_terminal)
    model.train(was_training)
    return ModelQuality(errors, correlation, balanced, windows, terminal_steps)


def balanced_accuracy(
    term_prob: np.ndarray | None, term_real: np.ndarray, at_terminal: np.ndarray | None
) -> float | None:
    """The module docstring's balanced accuracy from the predicted probabilities at the sampled
    windows' steps and at every terminal step; ``None`` where the model predicts no termination or
    the data hold no terminal or no non-terminal step."""
    if term_prob is None or at_terminal is None or not len(at_terminal) or term_real.all():
        return None
    true_positive = (at_terminal > 0.5).mean()
    return float((true_positive + (term_prob[~term_real] <= 0.5).mean()) / 2)


def termination_balanced_accuracy(
    model: WorldModel, buffer: EpisodeBuffer, context: int = 5, windows: int = 512, seed: int = 0
) -> float | None:
    """The termination balanced accuracy alone, measured as :func:`evaluate_model` does (one step
    after ``context`` burned-in real steps); ``seed`` draws the windows, so calls with one seed on
    one buffer compare heads on the same steps."""
    was_training = model.training
    model.eval()
    _, _, term_prob, term_real = one_step_predictions(
        model, buffer, context, windows, np.random.default_rng(seed)
    )
    balanced = balanced_accuracy(term_prob, term_real, terminal_step_predictions(model, buffer, context))
    model.train(was_training)
    return balanced
