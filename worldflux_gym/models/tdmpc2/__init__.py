"""TD-MPC2: an implicit (decoder-free) world model with a SimNorm latent, a Q ensemble and an MPPI planner."""

from worldflux_gym.models.tdmpc2.model import TDMPC2Config, TDMPC2Model
from worldflux_gym.models.tdmpc2.planner import TDMPC2Planner

__all__ = ["TDMPC2Config", "TDMPC2Model", "TDMPC2Planner"]
