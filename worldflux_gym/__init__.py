"""worldflux-gym: trained world models as Gymnasium "dream" environments.

Importing the package registers the shipped dream envs (``WorldFlux/<Family>-<Env>-v0``) with
Gymnasium and the world-model families with the model registry. It does not import
stable-baselines3, moviepy or pygame: they load when an agent, a video or a window is used.

>>> import gymnasium as gym
>>> import worldflux_gym
>>> gym.register_envs(worldflux_gym)  # Gymnasium's idiom; the import above did the registering
>>> env = gym.make("WorldFlux/Ensemble-Pendulum-v0")
>>> env.observation_space.shape, env.spec.max_episode_steps
((3,), 200)

The main entry points: :func:`create_world_model`, :func:`from_pretrained`,
:func:`worldflux_gym.training.fit_world_model`, :func:`worldflux_gym.dream.make_sb3_vec_env`,
:func:`worldflux_gym.agents.train_agent` / :func:`~worldflux_gym.agents.evaluate_agent`,
:func:`worldflux_gym.video.record_dream` and :func:`worldflux_gym.audit.audit_agent` /
:func:`~worldflux_gym.audit.rank_agents`. The documentation is in ``docs/``.
"""

from worldflux_gym.core import (
    Capabilities,
    ModelOutput,
    SequenceBatch,
    State,
    TransitionBatch,
    WorldModel,
    catalog,
    create_world_model,
    from_pretrained,
)
from worldflux_gym.dream.registration import register_envs
from worldflux_gym.version import __version__

# the shipped dream envs (envs/*.json) become Gymnasium ids: gym.make("WorldFlux/Dreamer-Walker-v1")
register_envs()

__all__ = [
    "__version__",
    "Capabilities",
    "ModelOutput",
    "SequenceBatch",
    "State",
    "TransitionBatch",
    "WorldModel",
    "catalog",
    "create_world_model",
    "from_pretrained",
]
