"""World-model families. Importing this package registers every built-in family."""

from worldflux_gym.models import (
    dreamer,  # noqa: F401  (registers "dreamer")
    ensemble,  # noqa: F401  (registers "ensemble")
    tdmpc2,  # noqa: F401  (registers "tdmpc2")
)
