"""``worldflux-gym play``: drive a dream with the keyboard, and switch to the real env to compare.

Keys (:class:`KeyMap`):

===================  ====================================================================
Box actions          every dimension is 0 (or its bounds' midpoint when 0 is outside them)
                     unless a key holds it: RIGHT / LEFT set dimension 0 to its high / low,
                     UP / DOWN dimension 1, number key ``k`` (1-9) sets dimension ``k-1`` to its
                     high, SHIFT + ``k`` to its low. Pendulum: LEFT / RIGHT torque.
Discrete actions     number key ``k`` (1-9) takes action ``k-1``; LEFT takes action 0 and RIGHT
                     action 1 (CartPole: push left / right); no key held: action 0.
TAB                  switch between the dream and the real env. Switching to the dream starts
                     it from the real env's current observation: "what does the model think
                     happens next from here?"
R                    start a new episode in the world on screen.
ESC / Q              quit (so does closing the window).
===================  ====================================================================

An episode that ends restarts in the same world: the real env with its next seed, the dream from
a fresh real reset. Headless machines run it with ``SDL_VIDEODRIVER=dummy`` (tests post key
events and run a bounded number of frames).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from worldflux_gym.core.errors import ConfigError
from worldflux_gym.core.spaces import is_image_space
from worldflux_gym.dream.core import Autoreset, DreamBatch
from worldflux_gym.dream.frames import draw_text
from worldflux_gym.dream.render import PIXEL_VIEW_SIZE, DreamRenderer, latent_render_error
from worldflux_gym.dream.starts import RealResetStarts, Start, StartSource, as_model_tensor
from worldflux_gym.dream.window import FrameWindow
from worldflux_gym.video.record import _RealSide, resolve_source

DREAM, REAL = "dream", "real"


class KeyMap:
    """Held keys -> an action of ``space`` (see the module docstring for the mapping)."""

    def __init__(self, space: gym.Space):
        import pygame

        self.space = space
        self.pygame = pygame
        self.numbers = [getattr(pygame, f"K_{k}") for k in range(1, 10)]
        if isinstance(space, gym.spaces.Discrete):
            self.discrete = True
        elif isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
            self.discrete = False
            low, high = space.low.astype(np.float64), space.high.astype(np.float64)
            self.rest = np.where((low <= 0) & (high >= 0), 0.0, (low + high) / 2).astype(space.dtype)
        else:
            raise ConfigError(f"play drives Discrete or 1-D Box actions, not {space}")

    def action(self, held: set[int], shift: bool = False) -> Any:
        pg = self.pygame
        if self.discrete:
            n, start = int(self.space.n), int(self.space.start)
            for index, key in enumerate(self.numbers):
                if key in held and index < n:
                    return np.int64(start + index)
            if pg.K_RIGHT in held and n > 1:
                return np.int64(start + 1)
            return np.int64(start)
        action = self.rest.copy()
        low, high = self.space.low, self.space.high
        pairs = [(0, pg.K_RIGHT, pg.K_LEFT), (1, pg.K_UP, pg.K_DOWN)]
        for dim, plus, minus in pairs:
            if dim < len(action):
                if plus in held:
                    action[dim] = high[dim]
                elif minus in held:
                    action[dim] = low[dim]
        for dim, key in enumerate(self.numbers[: len(action)]):
            if key in held:
                action[dim] = low[dim] if shift else high[dim]
        return action

    def help(self) -> str:
        if self.discrete:
            return f"1-{min(9, int(self.space.n))}/arrows act  TAB real/dream  R reset  ESC quit"
        return "arrows/1-9 (+SHIFT) act  TAB real/dream  R reset  ESC quit"


class _PlayStarts(StartSource):
    """Real resets, unless the player just switched: then the real env's current observation."""

    def __init__(self, fallback: RealResetStarts):
        self.fallback = fallback
        self.pending: Start | None = None

    def seed(self, seed: int) -> None:
        self.fallback.seed(seed)

    def sample(self, n: int) -> Start:
        if self.pending is not None:
            start, self.pending = self.pending, None
            return start
        return self.fallback.sample(n)

    def close(self) -> None:
        self.fallback.close()


@dataclass
class _World:
    """One side's episode counters."""

    name: str
    episode: int = 0
    step: int = 0
    ret: float = 0.0
    reward: float = 0.0
    uncertainty: float | None = None

    def new_episode(self) -> None:
        self.episode += 1
        self.step, self.ret, self.reward, self.uncertainty = 0, 0.0, 0.0, None


@dataclass
class PlayLog:
    """What happened in a session: frames shown, every action taken in each world, switches."""

    frames: int = 0
    actions: dict[str, list[Any]] = field(default_factory=lambda: {DREAM: [], REAL: []})
    switches: int = 0
    episodes: dict[str, int] = field(default_factory=lambda: {DREAM: 0, REAL: 0})
    quit: bool = False


class DreamPlayer:
    """A keyboard-driven session over a dream and its real env (see the module docstring).

    Args:
        dream: a ``WorldFlux/*`` id, a dream env, or a checkpoint directory (with ``real_env``).
        checkpoint: a fitted run instead of an id's shipped weights.
        seed: the first real reset.
        fps: frames per second to keep to (default: the real env's, ``1 / dt``); 0: no waiting.
        width, height: MuJoCo and pixel-model frame size.
    """

    def __init__(
        self,
        dream: str | Path | gym.Env,
        *,
        checkpoint: str | Path | None = None,
        real_env: str | None = None,
        seed: int = 0,
        fps: float | None = None,
        width: int | None = None,
        height: int | None = None,
    ):
        source, real_id = resolve_source(dream, checkpoint, real_env)
        model = source.model
        if not model.capabilities.decodes_observations:
            raise latent_render_error(model.family)
        pixels = is_image_space(model.observation_space)
        view = {"width": width, "height": height}
        self.view_size = (height or PIXEL_VIEW_SIZE, width or PIXEL_VIEW_SIZE)
        image_shape = model.observation_space.shape if pixels else None
        self.real = _RealSide(real_id, image_shape, view, model=source.model)
        # the dream's own starts come from a second real env, so that they never move the real one
        start_env = _RealSide(real_id, image_shape, view).env if pixels else real_id
        self.starts = _PlayStarts(RealResetStarts(start_env, model.device, block=1))
        self.dream = DreamBatch(
            model,
            1,
            starts=self.starts,
            real_env=real_id,
            max_episode_steps=source.horizon,
            autoreset=Autoreset.DISABLED,
            clip_actions=True,
            **{"report_uncertainty": None, **source.options},
        )
        self.renderer = DreamRenderer(self.dream, "rgb_array", real_env=real_id, **view)
        self.keys = KeyMap(self.dream.action_space)
        self.seed = int(seed)
        self.worlds = {DREAM: _World(DREAM), REAL: _World(REAL)}
        self.active = DREAM
        self.held: set[int] = set()
        self.shift = False
        self.log = PlayLog()
        self.window = FrameWindow("worldflux-gym play", fps=self.renderer.fps if fps is None else fps)
        self.real.reset(self.seed)
        self.dream.reset(seed=self.seed)

    # --- input ------------------------------------------------------------------------------
    def handle(self, event: Any) -> None:
        """One pygame event: keys held for actions, TAB, R, ESC/Q, window close."""
        pg = self.keys.pygame
        if event.type == pg.QUIT:
            self.log.quit = True
        elif event.type == pg.KEYDOWN:
            self.shift = bool(getattr(event, "mod", 0) & pg.KMOD_SHIFT)
            if event.key in (pg.K_ESCAPE, pg.K_q):
                self.log.quit = True
            elif event.key == pg.K_TAB:
                self.switch()
            elif event.key == pg.K_r:
                self.restart(self.active)
            else:
                self.held.add(event.key)
        elif event.type == pg.KEYUP:
            self.held.discard(event.key)
            self.shift = bool(getattr(event, "mod", 0) & pg.KMOD_SHIFT)

    def switch(self) -> None:
        """Dream <-> real. Entering the dream starts it from the real env's current observation."""
        self.log.switches += 1
        if self.active == REAL:
            self.starts.pending = Start(as_model_tensor(np.asarray(self.real.obs)[None], self.dream.device))
            self.dream.reset()
            self.renderer.reset_position()
            self.worlds[DREAM].new_episode()
            self.active = DREAM
        else:
            self.active = REAL

    def restart(self, name: str) -> None:
        world = self.worlds[name]
        world.new_episode()
        self.log.episodes[name] += 1
        if name == REAL:
            self.real.reset(self.seed + world.episode)
        else:
            self.dream.reset()

    # --- stepping ---------------------------------------------------------------------------
    def step(self) -> None:
        """One step of the world on screen with the action the held keys make."""
        action = self.keys.action(self.held, self.shift)
        world = self.worlds[self.active]
        self.log.actions[self.active].append(action)
        if self.active == REAL:
            _, reward, ended = self.real.step(action)
            world.uncertainty = None
        else:
            result = self.dream.step(self.dream.check_actions(action, batched=False))
            reward = float(result.reward[0])
            ended = bool(result.terminated[0] or result.truncated[0])
            world.uncertainty = None if result.uncertainty is None else float(result.uncertainty[0])
        world.step += 1
        world.reward, world.ret = reward, world.ret + reward
        if ended:
            self.restart(self.active)

    def frame(self) -> np.ndarray:
        world = self.worlds[self.active]
        picture = self.real.frame(self.view_size) if self.active == REAL else self.renderer.frames([0])[0]
        lines = [
            f"{world.name.upper()}  episode {world.episode}  step {world.step}",
            f"reward {world.reward:+.3f}  return {world.ret:.1f}",
        ]
        if world.uncertainty is not None:
            lines.append(f"uncertainty {world.uncertainty:.3f}")
        picture = draw_text(picture, lines)
        return draw_text(
            picture, [self.keys.help()], corner="bottom-left", size=max(12, picture.shape[0] // 32)
        )

    def run(self, max_frames: int | None = None, on_frame: Any = None) -> PlayLog:
        """Show, read keys, step; until quit or ``max_frames``. ``on_frame(player, i)`` runs before
        each frame's events are read (tests post key events from it)."""
        pg = self.keys.pygame
        try:
            while not self.log.quit and (max_frames is None or self.log.frames < max_frames):
                if on_frame is not None:
                    on_frame(self, self.log.frames)
                for event in pg.event.get():
                    self.handle(event)
                if self.log.quit:
                    break
                self.step()
                self.window.show(self.frame())
                self.log.frames += 1
                if self.window.closed:
                    self.log.quit = True
        finally:
            self.close()
        return self.log

    def close(self) -> None:
        self.window.close()
        self.renderer.close()
        self.dream.close()
        self.real.close()


def play(
    dream: str | Path | gym.Env,
    *,
    checkpoint: str | Path | None = None,
    real_env: str | None = None,
    seed: int = 0,
    max_frames: int | None = None,
    fps: float | None = None,
    width: int | None = None,
    height: int | None = None,
) -> PlayLog:
    """Open a window and drive ``dream`` with the keyboard (see the module docstring for the keys)."""
    player = DreamPlayer(
        dream, checkpoint=checkpoint, real_env=real_env, seed=seed, fps=fps, width=width, height=height
    )
    return player.run(max_frames)
