"""Dreams you can watch: recording videos and playing a dream by keyboard.

- :func:`record_dream` (``worldflux-gym video``): a dreamed rollout to ``.mp4`` / ``.gif``,
  optionally beside the real env (``compare=True``);
- :func:`play` (``worldflux-gym play``): drive a dream with the keyboard, switch to the real env.

Both draw through the dream's own renderer (:class:`worldflux_gym.dream.DreamRenderer`, what
``render_mode="rgb_array"`` / ``"human"`` use on every dream env): pixel models show their decoded
frames, state models are drawn by the real simulator from the predicted state, latent models say
why they cannot be. Imports are light: MuJoCo, moviepy and pygame load only when something is drawn.
"""

from worldflux_gym.video.record import record_dream

__all__ = ["record_dream"]
