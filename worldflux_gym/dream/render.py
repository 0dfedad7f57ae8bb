"""``render()`` for dream environments: what a dream looks like.

:class:`DreamRenderer` draws the rows of a :class:`~worldflux_gym.dream.DreamBatch`, and is what
``DreamEnv.render()`` and ``DreamVectorEnv.render()`` call. How a dream is drawn depends on the
model's observations:

- **pixel models** (the observation is an ``(H, W, 3)`` uint8 image: Dreamer's CNN path) show their
  decoded frames, resampled to viewing size (``width`` x ``height``, default 256 x 256);
- **state models** (vector observations) are drawn by the real simulator put in the predicted
  state (:class:`~worldflux_gym.dream.simulator.SimulatorCanvas`); MuJoCo's missing ``x`` is
  integrated from the predicted x-velocity, ``x += qvel[0] * dt`` per dream step;
- **latent models** (TD-MPC2: no decoded observation) cannot be drawn: asking for a render mode
  raises at construction and names the alternative, the ``--compare`` video of the real env.

``render_mode="rgb_array"`` returns frames; ``"human"`` shows them in a pygame window
(:class:`~worldflux_gym.dream.window.FrameWindow`) at the real env's frame rate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from worldflux_gym.core.errors import ConfigError
from worldflux_gym.core.spaces import is_image_space
from worldflux_gym.dream.frames import resample

if TYPE_CHECKING:
    from worldflux_gym.dream.core import DreamBatch

RENDER_MODES = ("rgb_array", "human")
PIXEL_VIEW_SIZE = 256


def latent_render_error(family: str) -> ConfigError:
    return ConfigError(
        f"the {family!r} model decodes no observations (its dream is a latent vector), so the dream "
        "cannot be drawn and render_mode is not available. Watch the real env driven by the same "
        "actions beside the dream's rewards instead: `worldflux-gym video DREAM_ID --compare` "
        "(or worldflux_gym.video.record_dream(..., compare=True))"
    )


class DreamRenderer:
    """Draws the rows of a dream batch (see the module docstring).

    Args:
        dream: the :class:`DreamBatch` to draw.
        render_mode: ``"rgb_array"`` or ``"human"``.
        width, height: frame size (MuJoCo and pixel models; classic control draws at its own size).
        shadows, reflections, antialias: MuJoCo shadows, floor reflections and multisampling, off
            by default (several times faster under software GL).
        track: the MuJoCo camera follows the body.
        real_env: the real env id to draw state models with (default: the dream's real env).
    """

    def __init__(
        self,
        dream: DreamBatch,
        render_mode: str = "rgb_array",
        *,
        width: int | None = None,
        height: int | None = None,
        shadows: bool = False,
        reflections: bool = False,
        antialias: bool = False,
        track: bool = True,
        real_env: str | None = None,
    ):
        if render_mode not in RENDER_MODES:
            raise ConfigError(f"render_mode must be one of {RENDER_MODES} or None, got {render_mode!r}")
        if not dream.decodes:
            raise latent_render_error(dream.model.family)
        self.dream = dream
        self.render_mode = render_mode
        self.pixels = is_image_space(dream.observation_space)
        self.canvas = None
        self.window = None
        if self.pixels:
            self.size = (height or PIXEL_VIEW_SIZE, width or PIXEL_VIEW_SIZE)
            self.fps = real_env_fps(real_env or dream.real_env_id)
        else:
            from worldflux_gym.dream.simulator import SimulatorCanvas

            env_id = real_env or dream.real_env_id
            if env_id is None:
                raise ConfigError(
                    "drawing a state model's dream needs the real env it was fitted on: pass "
                    "real_env='Walker2d-v5' (for example) when making the dream env"
                )
            self.canvas = SimulatorCanvas(
                env_id,
                width,
                height,
                shadows=shadows,
                reflections=reflections,
                antialias=antialias,
                track=track,
            )
            self.fps = self.canvas.fps
        # MuJoCo's x position per row, integrated from the predicted x-velocity; `_seen` is the
        # dream step each row was last drawn at, so a step counter that went back means a new episode
        self._x = np.zeros(dream.num_envs)
        self._seen = np.zeros(dream.num_envs, dtype=np.int64)

    # --- frames ----------------------------------------------------------------------------
    def _observations(self) -> np.ndarray:
        if self.dream.obs is None:
            raise gym_reset_needed()
        # the observation the agent sees: clipped to the space (images rounded to uint8)
        return self.dream._to_space(self.dream.obs).cpu().numpy()

    def frames(self, rows: list[int] | None = None) -> list[np.ndarray]:
        """Frames of the dream rows ``rows`` (all rows by default), each ``(H, W, 3)`` uint8."""
        obs = self._observations()
        rows = list(range(self.dream.num_envs)) if rows is None else rows
        elapsed = self.dream.elapsed.cpu().numpy()
        frames = []
        for row in rows:
            if self.pixels:
                frames.append(resample(obs[row].astype(np.uint8), *self.size))
                continue
            x = self._advance_x(row, int(elapsed[row]), obs[row])
            frames.append(self.canvas.draw(obs[row], x))
        return frames

    def _advance_x(self, row: int, step: int, obs: np.ndarray) -> float:
        index = self.canvas.x_velocity_index
        if index is None:
            return 0.0
        if step < self._seen[row] or step == 0:
            self._x[row] = 0.0  # a new episode starts where the real env's resets start
        else:
            # Euler over the steps since the last frame; exact when every step is drawn (videos)
            self._x[row] += float(obs[index]) * self.canvas.dt * (step - self._seen[row])
        self._seen[row] = step
        return float(self._x[row])

    def reset_position(self) -> None:
        """Forget the integrated x positions (the next frame of every row starts at x = 0)."""
        self._x[:] = 0.0
        self._seen[:] = 0

    def render(self) -> np.ndarray | None:
        """Row 0's frame (``rgb_array``), or show it in the window and return ``None`` (``human``)."""
        frame = self.frames([0])[0]
        if self.render_mode == "human":
            self.show(frame)
            return None
        return frame

    def render_batch(self, max_shown: int = 16) -> tuple[np.ndarray, ...] | None:
        """Every row's frame (``rgb_array``, as Gymnasium's vector envs return them), or a grid of the
        first ``max_shown`` rows shown in the window (``human``)."""
        if self.render_mode == "human":
            from worldflux_gym.dream.frames import grid

            self.show(grid(self.frames(list(range(min(max_shown, self.dream.num_envs))))))
            return None
        return tuple(self.frames())

    def show(self, frame: np.ndarray) -> None:
        from worldflux_gym.dream.window import FrameWindow

        if self.window is None:
            self.window = FrameWindow("worldflux-gym dream", fps=self.fps)
        self.window.show(frame)

    def close(self) -> None:
        if self.canvas is not None:
            self.canvas.close()
            self.canvas = None
        if self.window is not None:
            self.window.close()
            self.window = None


def real_env_fps(env_id: str | None, default: int = 30) -> int:
    """The real env's frame rate (its ``1 / dt``), so that dreams play at the real speed."""
    if env_id is None:
        return default
    import gymnasium as gym

    try:
        env = gym.make(env_id)
    except gym.error.Error:
        return default
    fps = int(env.metadata.get("render_fps") or default)
    env.close()
    return fps


def gym_reset_needed() -> Exception:
    from worldflux_gym.dream.core import DreamResetNeeded

    return DreamResetNeeded("call reset() before render(): there is no dream to draw yet")


def attach_renderer(
    env: Any, render_mode: str | None, options: dict[str, Any] | None
) -> DreamRenderer | None:
    """The renderer for a dream env's ``render_mode`` (``None``: no rendering), and its metadata.

    Called by ``DreamEnv`` and ``DreamVectorEnv`` at construction, so a mode that cannot work
    (a latent model, an env without a simulator to draw it) fails there, not at the first frame.
    The env's ``metadata["render_fps"]`` becomes the real env's frame rate (its ``1 / dt``).
    """
    if render_mode is None:
        return None
    renderer = DreamRenderer(env.dream, render_mode, **(options or {}))
    env.metadata = {**env.metadata, "render_modes": list(RENDER_MODES), "render_fps": renderer.fps}
    return renderer
