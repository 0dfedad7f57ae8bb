"""Dreams you can watch: rendering dream envs, recording videos, playing a dream by keyboard.

- ``render_mode="rgb_array"`` / ``"human"`` on every dream env (:mod:`~worldflux_gym.video.render`):
  pixel models show their decoded frames, state models are drawn by the real simulator from the
  predicted state (:mod:`~worldflux_gym.video.simulator`), latent models say why they cannot be;
- :func:`record_dream` (``worldflux-gym video``): a dreamed rollout to ``.mp4`` / ``.gif``,
  optionally beside the real env (``compare=True``);
- :func:`play` (``worldflux-gym play``): drive a dream with the keyboard, switch to the real env.

Imports are light: MuJoCo and pygame load only when something is drawn.
"""

from worldflux_gym.video.record import record_dream
from worldflux_gym.video.render import DreamRenderer

__all__ = ["DreamRenderer", "record_dream"]
