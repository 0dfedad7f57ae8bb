"""Fitting world models: the trainer (any family, through ``loss``) and the one-call pipeline."""

from worldflux_gym.training.fit import fit_world_model
from worldflux_gym.training.trainer import Trainer, TrainerConfig, inspect_run_dir, trainer_state

__all__ = ["Trainer", "TrainerConfig", "fit_world_model", "inspect_run_dir", "trainer_state"]
