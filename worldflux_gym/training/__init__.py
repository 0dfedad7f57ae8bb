"""Fitting world models: the trainer (any family, through ``loss``), the run directory it writes,
the one-call fit from a real env id, uncertainty heads fitted onto a frozen dreamer or tdmpc2
model, and a termination head refitted on the model's own predictions (``end_head``).

:func:`fit_world_model` goes from a real env id to a fitted checkpoint in one call: it collects
real episodes (random actions unless given a policy) into ``RUN/data``, fits ``family:preset``
for ``steps`` updates, and saves the model in ``RUN``. A rerun resumes. The run dreams through
any registered id of the same real env (``gym.make(id, checkpoint=RUN)``):

>>> import gymnasium as gym
>>> import worldflux_gym
>>> from worldflux_gym.training import fit_world_model
>>> model = fit_world_model(
...     "Pendulum-v1", "ensemble:ci", "runs/pendulum", steps=100, collect_steps=2000, progress=False
... )
>>> env = gym.make("WorldFlux/Ensemble-Pendulum-v0", checkpoint="runs/pendulum")
>>> obs, info = env.reset(seed=0)

The loops built on top of it, the Dyna loop and the closed-loop fine-tune, are in
:mod:`worldflux_gym.pipelines` (``docs/dyna.md``).
"""

from worldflux_gym.training.end_head import fit_end_head
from worldflux_gym.training.fit import fit_world_model
from worldflux_gym.training.run_dir import RunDirectory, inspect_run_dir, trainer_state
from worldflux_gym.training.trainer import Trainer, TrainerConfig
from worldflux_gym.training.uncertainty import fit_uncertainty_heads, with_uncertainty_heads

__all__ = [
    "RunDirectory",
    "Trainer",
    "TrainerConfig",
    "fit_end_head",
    "fit_uncertainty_heads",
    "fit_world_model",
    "inspect_run_dir",
    "trainer_state",
    "with_uncertainty_heads",
]
