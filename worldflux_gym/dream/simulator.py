"""Drawing predicted states with the real simulator.

A state model (the ensemble, Dreamer on vector observations) predicts the real env's observation,
and for the envs below the observation pins down the simulator state well enough to draw it:

- MuJoCo locomotion (Walker2d, Hopper, HalfCheetah): the observation is ``qpos[1:]`` then ``qvel``
  (Gymnasium's default ``exclude_current_positions_from_observation=True``). The missing ``x`` is
  integrated by the caller from the x-velocity ``qvel[0]`` times ``dt``; then ``mj_forward`` fills
  in the kinematics and the env's own renderer draws them.
- Classic control: CartPole's observation *is* its state; Pendulum's is ``(cos, sin, thetadot)``,
  so ``theta = atan2(sin, cos)``.

MuJoCo frames for video are drawn without shadows, reflections and multisample antialiasing by
default: under software EGL each of them costs a multiple of the frame time (the shadow map alone is
4096 x 4096), see ``benchmarks/bench_video.py``. Several MuJoCo renderers in one
process each own a GL context: :meth:`SimulatorCanvas.draw` makes its own current before drawing,
otherwise a frame comes out black or shows another env.
"""

from __future__ import annotations

import math
import os

# Offscreen MuJoCo needs a headless GL backend, chosen before mujoco is first imported; an
# explicit MUJOCO_GL from the user wins.
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from worldflux_gym.core.envs import make_env  # noqa: E402
from worldflux_gym.core.errors import ConfigError  # noqa: E402
from worldflux_gym.dream.frames import MUJOCO_VIEW_SIZE  # noqa: E402

MUJOCO_ENVS = ("Walker2d", "Hopper", "HalfCheetah")
CLASSIC_ENVS = ("CartPole", "Pendulum")
DRAWABLE_ENVS = MUJOCO_ENVS + CLASSIC_ENVS


def env_family(env_id: str) -> str:
    """``"Walker2d-v5"`` -> ``"Walker2d"`` (the name without namespace and version)."""
    return env_id.split("/")[-1].split("-v")[0]


def can_draw(env_id: str | None) -> bool:
    return env_id is not None and env_family(env_id) in DRAWABLE_ENVS


def make_render_env(
    env_id: str,
    width: int | None = None,
    height: int | None = None,
    *,
    shadows: bool = False,
    reflections: bool = False,
    antialias: bool = False,
    track: bool = True,
    **make_kwargs,
) -> gym.Env:
    """The real env ``env_id`` with ``render_mode="rgb_array"``, set up the way videos draw it.

    MuJoCo envs get ``width`` x ``height`` frames (default 480 x 480, Gymnasium's), shadows,
    reflections and multisample antialiasing as asked, and with ``track`` a camera that follows the
    torso (Gymnasium's own camera stays where the episode started, so a walker leaves the picture).
    Classic-control envs draw at their own size. Used both for the real env in ``--compare`` videos
    and for drawing dreamed states, so that both look the same.
    """
    if env_family(env_id) in MUJOCO_ENVS:
        make_kwargs.setdefault("width", width or MUJOCO_VIEW_SIZE)
        make_kwargs.setdefault("height", height or MUJOCO_VIEW_SIZE)
    env = make_env(env_id, "real_env", render_mode="rgb_array", **make_kwargs)
    env.reset(seed=0)  # MuJoCo envs need a reset before the first render; classic ones need a state
    if env_family(env_id) in MUJOCO_ENVS:
        _setup_mujoco_view(env, shadows=shadows, reflections=reflections, antialias=antialias, track=track)
    return env


def _setup_mujoco_view(
    env: gym.Env, *, shadows: bool, reflections: bool, antialias: bool, track: bool
) -> None:
    import mujoco

    renderer = env.unwrapped.mujoco_renderer
    quality = env.unwrapped.model.vis.quality
    # read when the GL context is made (the first render): without shadows no shadow map is
    # allocated, without antialiasing the offscreen buffer has one sample per pixel
    if not shadows:
        quality.shadowsize = 0
    if not antialias:
        quality.offsamples = 0
    env.render()  # creates the offscreen viewer (and its GL context), whose scene we configure
    viewer = renderer.viewer
    viewer.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = int(shadows)
    viewer.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = int(reflections)
    if track and renderer.camera_id == -1:
        # Gymnasium passes camera_id=-1 on every render, which resets the camera to FREE; with
        # None it leaves our tracking camera alone. trackbodyid comes from the env's camera config.
        renderer.camera_id = None
        viewer.cam.type = mujoco.mjtCamera.mjCAMERA_TRACKING
        if viewer.cam.trackbodyid < 0:
            viewer.cam.trackbodyid = 1


def render_frame(env: gym.Env) -> np.ndarray:
    """``env.render()`` with the env's GL context made current first (needed with several renderers)."""
    renderer = getattr(env.unwrapped, "mujoco_renderer", None)
    if renderer is not None and renderer.viewer is not None:
        renderer.viewer.make_context_current()
    return env.render()


def close_render_env(env: gym.Env) -> None:
    """Close ``env``, first freeing its MuJoCo render context inside its own GL context.

    Gymnasium's ``close()`` destroys the GL context but leaves the ``MjrContext`` to the garbage
    collector, which frees its GL objects in whatever context is current then: another renderer's,
    whose framebuffer disappears (its frames come out blank from that moment on).
    """
    renderer = getattr(env.unwrapped, "mujoco_renderer", None)
    if renderer is not None:
        for viewer in getattr(renderer, "_viewers", {}).values():
            viewer.make_context_current()
            viewer.con.free()
    env.close()


class SimulatorCanvas:
    """Draws observations of ``env_id`` through the real simulator (see the module docstring).

    Args:
        env_id: the real env the model was fitted on (Walker2d, Hopper, HalfCheetah, CartPole or
            Pendulum, any version).
        width, height: MuJoCo frame size (default 480 x 480); classic control draws at its own size.
        shadows, reflections, antialias: MuJoCo shadows, floor reflections and multisampling (off by
            default: several times faster under software GL).
        track: MuJoCo camera follows the body.
    """

    def __init__(
        self,
        env_id: str,
        width: int | None = None,
        height: int | None = None,
        *,
        shadows: bool = False,
        reflections: bool = False,
        antialias: bool = False,
        track: bool = True,
    ):
        family = env_family(env_id)
        if family not in DRAWABLE_ENVS:
            raise ConfigError(
                f"the dream of {env_id!r} cannot be drawn: rendering a state model needs a simulator that "
                f"can be set from the observation, which exists for {', '.join(DRAWABLE_ENVS)}. Record the "
                f"real env beside the dream instead: `worldflux-gym video DREAM_ID --compare`"
            )
        self.env_id = env_id
        self.family = family
        self.env = make_render_env(
            env_id, width, height, shadows=shadows, reflections=reflections, antialias=antialias, track=track
        )
        self.unwrapped = self.env.unwrapped
        self.fps = int(self.env.metadata.get("render_fps", 30))
        self.dt = float(getattr(self.unwrapped, "dt", getattr(self.unwrapped, "tau", 1.0 / self.fps)))
        self.is_mujoco = family in MUJOCO_ENVS
        if self.is_mujoco:
            model = self.unwrapped.model
            self.nq, self.nv = int(model.nq), int(model.nv)
            expected = self.nq - 1 + self.nv
            obs_dim = int(np.prod(self.env.observation_space.shape))
            if obs_dim != expected:
                raise ConfigError(
                    f"{env_id} observations have {obs_dim} values, not qpos[1:] + qvel = {expected}: make "
                    "the real env with its default observation "
                    "(exclude_current_positions_from_observation=True)"
                )

    @property
    def x_velocity_index(self) -> int | None:
        """Where ``qvel[0]`` (the forward velocity) sits in the observation (MuJoCo only)."""
        return self.nq - 1 if self.is_mujoco else None

    def draw(self, obs: np.ndarray, x: float = 0.0) -> np.ndarray:
        """An ``(H, W, 3)`` uint8 frame of the simulator put in the state ``obs`` (``x``: MuJoCo's x)."""
        obs = np.asarray(obs, dtype=np.float64).reshape(-1)
        env = self.unwrapped
        if self.is_mujoco:
            import mujoco

            qpos = np.concatenate([[x], obs[: self.nq - 1]])
            qvel = obs[self.nq - 1 : self.nq - 1 + self.nv]
            env.data.qpos[:] = qpos
            env.data.qvel[:] = qvel
            mujoco.mj_forward(env.model, env.data)
        elif self.family == "CartPole":
            env.state = obs[:4].copy()
        else:  # Pendulum: (cos, sin, thetadot)
            env.state = np.array([math.atan2(obs[1], obs[0]), obs[2]])
            env.last_u = None  # the torque arrow belongs to an action we do not draw
        return render_frame(self.env)

    def close(self) -> None:
        close_render_env(self.env)
