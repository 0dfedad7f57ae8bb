"""Pipelines over the whole library: loops that collect, fit, dream and train agents together.

- :func:`run_dyna` (``worldflux-gym dyna``, :mod:`~worldflux_gym.pipelines.dyna`): collect real
  data, fit the model, train an agent in the dream, collect with the agent, refit, ... resumable;
- :func:`fine_tune_closed_loop` (``worldflux-gym fine-tune``,
  :mod:`~worldflux_gym.pipelines.closed_loop`): fine-tune a fitted ensemble so that its dreams of
  the behaviour policies that logged its data follow that data.

They sit above the layers they drive (data, training, dream, agents); nothing below imports them.
``docs/dyna.md`` shows both.
"""

from worldflux_gym.pipelines.closed_loop import ClosedLoopConfig, fine_tune_closed_loop
from worldflux_gym.pipelines.dyna import DynaConfig, run_dyna

__all__ = ["ClosedLoopConfig", "DynaConfig", "fine_tune_closed_loop", "run_dyna"]
