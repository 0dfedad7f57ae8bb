"""worldflux-gym: trained world models as Gymnasium "dream" environments.

Importing the package registers the shipped dream envs (``WorldFlux/<Family>-<Env>-v0``) with
Gymnasium and the world-model families with the model registry.
"""

__version__ = "0.1.0"

from worldflux_gym.core import (  # noqa: E402
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
from worldflux_gym.dream.registration import register_envs  # noqa: E402

# the shipped dream envs (envs/*.json) become Gymnasium ids: gym.make("WorldFlux/Dreamer-Walker-v0")
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
