"""Fitting world models: the trainer (any family, through ``loss``), the one-call pipeline, and the
closed-loop fine-tune of an ensemble under the policies that logged its data, and uncertainty heads
fitted onto a frozen dreamer or tdmpc2 model.

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

``docs/dyna.md`` shows the Dyna loop (:mod:`worldflux_gym.training.dyna`) and the fine-tune.
"""

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
