"""Dream environments: a fitted world model as a Gymnasium ``Env``, ``VectorEnv`` and SB3 ``VecEnv``.

- :class:`DreamEnv`: one env (``gymnasium.Env``);
- :class:`DreamVectorEnv`: ``N`` envs stepped as one tensor batch (``gymnasium.vector.VectorEnv``);
- :class:`DreamSB3VecEnv`: the same batch behind stable-baselines3's ``VecEnv``;
- :class:`EncodeObservation`: the real env in a latent family's observation space;
- :class:`DreamRenderer`: ``render()`` of every dream env (``render.py``, with the simulator that
  draws state models, frame utilities and the pygame window it needs);
- ``registration``: the ``WorldFlux/<Family>-<Env>-v0`` ids declared in ``envs/*.json``.

All three envs share one implementation of the stepping logic, :class:`DreamBatch`.
:class:`DreamSB3VecEnv` is imported on first use, so that ``import worldflux_gym`` does not import
stable-baselines3.
"""

from typing import TYPE_CHECKING, Any

from worldflux_gym.dream.core import (
    ActionError,
    DreamBatch,
    DreamClosedError,
    DreamResetNeeded,
    ModelDivergenceError,
)
from worldflux_gym.dream.dream_env import DreamEnv
from worldflux_gym.dream.registration import (
    DreamEnvSpec,
    load_specs,
    make_sb3_vec_env,
    register_envs,
)
from worldflux_gym.dream.render import DreamRenderer
from worldflux_gym.dream.starts import (
    BankStarts,
    BranchedStarts,
    RealResetStarts,
    StartSource,
    load_starts,
    save_starts,
)
from worldflux_gym.dream.vector_env import DreamVectorEnv
from worldflux_gym.dream.wrappers import EncodeObservation

if TYPE_CHECKING:
    from worldflux_gym.dream.sb3 import DreamSB3VecEnv


def __getattr__(name: str) -> Any:
    # stable-baselines3 loads only when its VecEnv adapter is asked for
    if name == "DreamSB3VecEnv":
        from worldflux_gym.dream.sb3 import DreamSB3VecEnv

        return DreamSB3VecEnv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ActionError",
    "BankStarts",
    "BranchedStarts",
    "DreamBatch",
    "DreamClosedError",
    "DreamEnv",
    "DreamEnvSpec",
    "DreamRenderer",
    "DreamResetNeeded",
    "DreamSB3VecEnv",
    "DreamVectorEnv",
    "EncodeObservation",
    "ModelDivergenceError",
    "RealResetStarts",
    "StartSource",
    "load_specs",
    "load_starts",
    "make_sb3_vec_env",
    "register_envs",
    "save_starts",
]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
