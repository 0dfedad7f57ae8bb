"""Fitting world models: the trainer (any family, through ``loss``), the one-call pipeline, and the
closed-loop fine-tune of an ensemble under the policies that logged its data, and uncertainty heads
fitted onto a frozen dreamer or tdmpc2 model."""

from worldflux_gym.training.closed_loop import ClosedLoopConfig, fine_tune_closed_loop
from worldflux_gym.training.fit import fit_world_model
from worldflux_gym.training.trainer import Trainer, TrainerConfig, inspect_run_dir, trainer_state
from worldflux_gym.training.uncertainty import fit_uncertainty_heads, with_uncertainty_heads

__all__ = [
    "ClosedLoopConfig",
    "Trainer",
    "TrainerConfig",
    "fine_tune_closed_loop",
    "fit_uncertainty_heads",
    "fit_world_model",
    "inspect_run_dir",
    "trainer_state",
    "with_uncertainty_heads",
]
