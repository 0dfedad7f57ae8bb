"""Recording dreamed rollouts to video: :func:`record_dream` and ``worldflux-gym video``.

A recording starts where the dream env starts, from a real reset: the real env is reset with
``seed`` and the dream begins from that very observation (a :class:`DreamBatch` whose start source
hands out that one observation). Actions come from an SB3 agent (``agent=``) or are uniformly
random (seeded). With ``compare=True`` the real env takes the same actions beside the dream, and
each frame shows both with step, reward and (ensembles) uncertainty written on them.

Pixel models (decoded images) compared with the real env follow the open-loop protocol of world-
model papers: the model first sees ``context`` real frames (burned in through ``model.observe``),
then imagines on its own; the video shows real | dream | per-pixel error, and a still grid of the
same (rows real, model, error; columns time) is written beside the video as ``*_openloop.png``.

Latent models (TD-MPC2) have no frames of their own; their ``--compare`` video shows the real env
with the dream's predicted reward beside the real one.

Files are written with moviepy: ``.mp4`` (H.264, streamed frame by frame to ffmpeg, so long
recordings need no memory) or ``.gif``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from worldflux_gym.core.envs import make_env
from worldflux_gym.core.errors import ConfigError, SpaceError
from worldflux_gym.core.model import WorldModel
from worldflux_gym.core.paths import check_output_file
from worldflux_gym.core.spaces import describe_space, is_image_space, spaces_fit
from worldflux_gym.core.validate import (
    check_int,
    check_optional_positive_int,
    check_positive_float,
    check_positive_int,
    check_seed,
)
from worldflux_gym.data.policy import as_policy
from worldflux_gym.dream.core import Autoreset, DreamBatch
from worldflux_gym.dream.frames import (
    draw_text,
    error_image,
    even_size,
    grid,
    hstack,
    label,
    resample,
    vstack,
)
from worldflux_gym.dream.render import PIXEL_VIEW_SIZE, DreamRenderer, latent_render_error
from worldflux_gym.dream.resolve import ResolvedDream, resolve_dream
from worldflux_gym.dream.starts import Start, StartSource, as_model_tensor

VIDEO_SUFFIXES = (".mp4", ".gif")
GIF_MAX_FPS = 50  # GIF delays are whole centiseconds and players clamp short ones: 50 fps at most
OPEN_LOOP_COLUMNS = 16  # time steps in the still open-loop grid


# --- writing frames --------------------------------------------------------------------------
class VideoWriter:
    """Writes frames to ``.mp4`` (streamed to ffmpeg through moviepy) or ``.gif`` (moviepy, at close).

    Every frame is brought to the first frame's size and padded to even dimensions (H.264 wants them).
    """

    def __init__(self, path: str | Path, fps: float):
        self.path = Path(path)
        if self.path.suffix.lower() not in VIDEO_SUFFIXES:
            raise ConfigError(f"the video file must end in {' or '.join(VIDEO_SUFFIXES)}, got {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = float(fps)
        self.gif = self.path.suffix.lower() == ".gif"
        self.size: tuple[int, int] | None = None
        self.frames: list[np.ndarray] = []  # gif only
        self.count = 0
        self._ffmpeg: Any = None  # moviepy's FFMPEG_VideoWriter, opened on the first frame

    def write(self, frame: np.ndarray) -> None:
        if self.size is None:
            frame = even_size(frame)
            self.size = frame.shape[:2]
        elif frame.shape[:2] != self.size:
            frame = resample(frame, *self.size)
        self.count += 1
        if self.gif:
            self.frames.append(frame)
            return
        if self._ffmpeg is None:
            from moviepy.video.io.ffmpeg_writer import FFMPEG_VideoWriter

            self._ffmpeg = FFMPEG_VideoWriter(
                str(self.path), (self.size[1], self.size[0]), self.fps, codec="libx264", preset="veryfast"
            )
        self._ffmpeg.write_frame(np.ascontiguousarray(frame))

    def close(self) -> Path:
        if self.count == 0:
            raise ConfigError(f"no frames to write to {self.path}")
        if self._ffmpeg is not None:
            self._ffmpeg.close()
            self._ffmpeg = None
        if self.gif and self.frames:
            from moviepy import ImageSequenceClip

            # above GIF's frame-rate limit, keep every k-th frame so playback keeps real time
            every = max(1, math.ceil(self.fps / GIF_MAX_FPS))
            frames = self.frames[::every]
            ImageSequenceClip(frames, fps=self.fps / every).write_gif(str(self.path), logger=None)
            self.frames = []
        return self.path


# --- what is recorded ------------------------------------------------------------------------
def resolve_source(
    dream: str | Path | gym.Env,
    checkpoint: str | Path | None = None,
    real_env: str | None = None,
) -> tuple[ResolvedDream, str]:
    """The dream to record or play (:func:`~worldflux_gym.dream.resolve.resolve_dream`: a registered
        ``WorldFlux/*`` id, a dream env, or a checkpoint directory with ``real_env``), which must know
        its real env (returned beside it): recordings start from the real env's resets and draw with
    its simulator."""
    source = resolve_dream(dream, checkpoint, real_env=real_env)
    if source.real_env is None:
        raise ConfigError(
            f"recording or playing {source.label} needs the real env it was fitted on: pass "
            "real_env='Walker2d-v5' (--real-env ID)"
        )
    return source, source.real_env


class _OneStart(StartSource):
    """Hands out the start the recorder set last: the real env's own reset observation (and context)."""

    def __init__(self) -> None:
        self.start: Start | None = None

    def seed(self, seed: int) -> None:  # the start is chosen by the real env's seeded reset
        pass

    def sample(self, n: int) -> Start:
        assert self.start is not None and n == 1
        return self.start


class _RealSide:
    """The real env a recording starts from and, with ``compare``, draws beside the dream."""

    def __init__(
        self,
        env_id: str,
        image_shape: tuple[int, ...] | None,
        view: dict[str, Any],
        drawn: bool = True,
        model: WorldModel | None = None,
    ):
        from worldflux_gym.dream.simulator import make_render_env, render_frame

        self.image_shape = image_shape
        if image_shape is not None:
            from worldflux_gym.data.collect import image_wrappers

            # the model sees rendered frames resampled to its size: so does the comparison
            env = make_env(env_id, "real_env", render_mode="rgb_array")
            for wrapper in image_wrappers(image_shape[0]):
                env = wrapper(env)
            self.env = env
        elif drawn:
            self.env = make_render_env(env_id, **view)
        else:  # only the source of starts: no renderer, no GL context to set up
            self.env = make_env(env_id, "real_env")
        self._render = render_frame
        self.fps = int(self.env.metadata.get("render_fps", 30))
        self.obs: np.ndarray | None = None
        if model is not None:
            self._check_spaces(env_id, model)

    def _check_spaces(self, env_id: str, model: WorldModel) -> None:
        """The real env has the spaces the model was fitted for (``--real-env`` of another env fails
        here, not as a tensor-size error at the first step)."""
        env = self.env
        if spaces_fit(env.observation_space, model.observation_space) and spaces_fit(
            env.action_space, model.action_space
        ):
            return
        self.close()
        raise SpaceError(
            f"real_env {env_id!r} has observations {describe_space(env.observation_space)} and actions "
            f"{describe_space(env.action_space)}, but the model was fitted for "
            f"{describe_space(model.observation_space)} and {describe_space(model.action_space)}: name "
            "the env it was fitted on (--real-env)"
        )

    def reset(self, seed: int) -> np.ndarray:
        self.obs, _ = self.env.reset(seed=seed)
        return self.obs

    def step(self, action: Any) -> tuple[np.ndarray, float, bool]:
        self.obs, reward, terminated, truncated, _ = self.env.step(action)
        return self.obs, float(reward), bool(terminated or truncated)

    def frame(self, size: tuple[int, int]) -> np.ndarray:
        if self.image_shape is not None:
            return resample(np.asarray(self.obs, np.uint8), *size)
        return self._render(self.env)

    def close(self) -> None:
        from worldflux_gym.dream.simulator import close_render_env

        close_render_env(self.env)


def _make_policy(agent: str | Path | Any | None, batch: DreamBatch, seed: int) -> Callable[[np.ndarray], Any]:
    """Observation -> action: an SB3 agent (a ``.zip`` path or a loaded model, through
    :func:`~worldflux_gym.data.policy.as_policy`), else random actions.

    An agent whose spaces do not fit the dream's (an agent of another env) is refused here."""
    if agent is None:
        action_space = copy.deepcopy(batch.action_space)  # seeding our copy leaves the env's stream alone
        action_space.seed(seed)
        return lambda obs: action_space.sample()
    return as_policy(
        agent,
        observation_space=batch.observation_space,
        action_space=batch.action_space,
        where=f"the dream of {batch.real_env_id or 'this model'}",
        hint="record it in a dream of the env it was trained for",
    )


@dataclass
class _Track:
    """Step counters and returns of the current episode on one side."""

    step: int = 0
    ret: float = 0.0
    reward: float = 0.0

    def add(self, reward: float) -> None:
        self.step += 1
        self.reward = reward
        self.ret += reward


def record_dream(
    dream: str | Path | gym.Env,
    out: str | Path,
    agent: str | Path | Any | None = None,
    steps: int = 200,
    compare: bool = False,
    checkpoint: str | Path | None = None,
    seed: int = 0,
    *,
    real_env: str | None = None,
    fps: float | None = None,
    width: int | None = None,
    height: int | None = None,
    shadows: bool = False,
    reflections: bool = False,
    antialias: bool = False,
    context: int = 5,
    overlay: bool = True,
    overwrite: bool = False,
) -> Path:
    """Record ``steps`` dreamed steps of ``dream`` to ``out`` (``.mp4`` or ``.gif``); returns ``out``.

    Args:
        dream: a ``WorldFlux/*`` id, a dream env (``gym.make(id, ...)``), or a checkpoint directory
            (then ``real_env`` names the env it was fitted on).
        agent: an SB3 agent ``.zip`` (or loaded model) that picks the actions; random actions if None.
        compare: draw the real env beside the dream, same start and same actions.
        checkpoint: a fitted run to use instead of an id's shipped weights.
        seed: the real reset the dream starts from (episode ``k`` uses ``seed + k``) and the random
            actions.
        fps: frame rate of the file (default: the real env's, ``1 / dt``).
        width, height: frame size of each panel (MuJoCo and pixel models).
        shadows, reflections, antialias: MuJoCo shadows, floor reflections and multisampling (off:
            several times faster under software GL).
        context: real frames a pixel model sees before imagining in a ``compare`` recording.
        overlay: write step, reward and uncertainty on the frames.
        overwrite: replace an existing file at ``out`` (refused otherwise, before anything is recorded).

    When an episode ends (in the dream, or in the real env with ``compare``), both start again from
    the next real reset, so the two sides always show the same episode.

    >>> from worldflux_gym.video import record_dream
    >>> record_dream("WorldFlux/Ensemble-Pendulum-v0", "dream.gif", steps=10, compare=True).name
    'dream.gif'
    """
    steps = check_positive_int(steps, "steps")
    seed = check_seed(seed)
    fps = None if fps is None else check_positive_float(fps, "fps")
    width = check_optional_positive_int(width, "width")
    height = check_optional_positive_int(height, "height")
    context = check_int(context, "context", minimum=0)
    check_output_file(out, "out", overwrite=overwrite, what="video")
    if Path(out).suffix.lower() not in VIDEO_SUFFIXES:
        raise ConfigError(f"the video file must end in {' or '.join(VIDEO_SUFFIXES)}, got {out}")
    source, real_id = resolve_source(dream, checkpoint, real_env)
    model = source.model
    decodes = model.capabilities.decodes_observations
    pixels = decodes and is_image_space(model.observation_space)
    if not decodes and not compare:
        raise latent_render_error(model.family)
    view: dict[str, Any] = {
        "width": width,
        "height": height,
        "shadows": shadows,
        "reflections": reflections,
        "antialias": antialias,
    }

    image_shape = model.observation_space.shape if pixels else None
    real = _RealSide(real_id, image_shape, view, drawn=compare, model=model)
    starts = _OneStart()
    options = {"report_uncertainty": None, **source.options}
    batch = DreamBatch(
        model,
        1,
        starts=starts,
        real_env=real_id,
        max_episode_steps=source.horizon,
        autoreset=Autoreset.DISABLED,
        clip_actions=True,
        **options,
    )
    renderer = DreamRenderer(batch, "rgb_array", real_env=real_id, **view) if decodes else None
    view_size = (height or PIXEL_VIEW_SIZE, width or PIXEL_VIEW_SIZE)
    policy = _make_policy(agent, batch, seed)
    writer = VideoWriter(out, fps or (renderer.fps if renderer else real.fps))
    open_loop: list[tuple[np.ndarray, np.ndarray]] = []  # pixel compare: (real, model) frames
    use_context = pixels and compare and context > 0 and model.capabilities.recurrent

    def dream_obs_numpy(obs: torch.Tensor) -> np.ndarray:
        return obs[0].cpu().numpy().astype(batch.observation_space.dtype, copy=False)

    def begin(episode: int) -> np.ndarray:
        """Reset the real env (seeded) and start the dream from its observation; returns the dream obs."""
        obs = real.reset(seed + episode)
        if use_context:
            obs = _real_context(episode)
        else:
            starts.start = Start(as_model_tensor(np.asarray(obs)[None], batch.device))
        if renderer is not None:
            renderer.reset_position()
        return dream_obs_numpy(batch.reset(seed=seed + episode))

    def _real_context(episode: int) -> np.ndarray:
        # the model watches `context` real steps, then imagines from the last one on its own
        frames_obs, actions = [np.asarray(real.obs)], []
        track = _Track()
        for _ in range(context):
            action = _clip(policy(frames_obs[-1]), batch.action_space)
            _, reward, _ = real.step(action)
            track.add(reward)
            frames_obs.append(np.asarray(real.obs))
            actions.append(np.asarray(action))
            frame = real.frame(view_size)
            if episode == 0:
                open_loop.append((frames_obs[-1], frames_obs[-1]))
            lines = [f"context step {track.step}", f"reward {reward:+.3f}"]
            panels = [
                _annotate(frame, ["real", *lines], overlay),
                _annotate(frame, ["context (real)"], overlay),
            ]
            error = _annotate(error_image(frame, frame), ["|real - dream|"], overlay)
            writer.write(hstack([*panels, error]))
        starts.start = Start(
            as_model_tensor(frames_obs[-1][None], batch.device),
            as_model_tensor(np.stack(frames_obs)[None], batch.device),
            as_model_tensor(np.stack(actions)[None], batch.device),
        )
        return frames_obs[-1]

    def compose(episode: int, dream_track: _Track, real_track: _Track, uncertainty: float | None):
        """One video frame: [real |] dream [| error], each with its overlay."""
        dream_lines = [
            f"dream  ep {episode}  step {dream_track.step}",
            f"reward {dream_track.reward:+.3f}  return {dream_track.ret:.1f}",
            "uncertainty n/a" if uncertainty is None else f"uncertainty {uncertainty:.3f}",
        ]
        panels = []
        dream_frame = renderer.frames([0])[0] if renderer is not None else None
        if compare:
            real_lines = [
                f"real  ep {episode}  step {real_track.step}",
                f"reward {real_track.reward:+.3f}  return {real_track.ret:.1f}",
            ]
            if renderer is None:  # a latent dream: its predictions go on the real frame
                real_lines += dream_lines[1:]
            real_frame = real.frame(view_size)
            panels.append(_annotate(real_frame, real_lines, overlay))
        if dream_frame is not None:
            panels.append(_annotate(dream_frame, dream_lines, overlay))
        if pixels and compare and dream_frame is not None:
            panels.append(_annotate(error_image(real_frame, dream_frame), ["|real - dream|"], overlay))
        return hstack(panels)

    try:
        episode = 0
        obs = begin(episode)
        dream_track, real_track = _Track(), _Track()
        writer.write(compose(episode, dream_track, real_track, None))  # the shared start
        while writer.count < steps:
            action = _clip(policy(obs), batch.action_space)
            result = batch.step(batch.check_actions(action, batched=False))
            obs = dream_obs_numpy(result.obs)
            dream_track.add(float(result.reward[0]))
            uncertainty = None if result.uncertainty is None else float(result.uncertainty[0])
            ended = bool(result.terminated[0] or result.truncated[0])
            if compare:
                real_obs, real_reward, real_ended = real.step(action)
                real_track.add(real_reward)
                ended = ended or real_ended
                if pixels and episode == 0:
                    open_loop.append((np.asarray(real_obs), np.asarray(obs)))
            writer.write(compose(episode, dream_track, real_track, uncertainty))
            if ended and writer.count < steps:
                episode += 1
                obs = begin(episode)
                dream_track, real_track = _Track(), _Track()
                writer.write(compose(episode, dream_track, real_track, None))
        path = writer.close()
        if open_loop:
            _write_open_loop_grid(open_loop, path.with_name(f"{path.stem}_openloop.png"))
        return path
    finally:
        if renderer is not None:
            renderer.close()
        batch.close()
        real.close()


def _clip(action: Any, space: gym.Space) -> Any:
    """The action both sides take: SB3 may hand back Box actions a hair outside the bounds."""
    if isinstance(space, gym.spaces.Box):
        return np.clip(np.asarray(action, dtype=space.dtype), space.low, space.high)
    return np.asarray(action).astype(np.int64).reshape(())


def _annotate(frame: np.ndarray, lines: list[str], overlay: bool) -> np.ndarray:
    if not overlay:
        return frame
    return draw_text(frame, lines) if len(lines) > 1 else label(frame, lines[0])


def _write_open_loop_grid(pairs: list[tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """Rows: real frames, the model's frames (context, then imagined), their error; columns: time."""
    import imageio.v3 as iio

    pairs = pairs[:OPEN_LOOP_COLUMNS]
    real = [np.asarray(r, np.uint8) for r, _ in pairs]
    model = [np.asarray(m, np.uint8) for _, m in pairs]
    errors = [error_image(r, m) for r, m in pairs]
    image = vstack([grid(real, len(real), 2), grid(model, len(model), 2), grid(errors, len(errors), 2)])
    iio.imwrite(path, image)
    return path
