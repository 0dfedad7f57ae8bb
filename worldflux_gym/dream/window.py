"""A pygame window that shows frames: ``render_mode="human"`` and ``worldflux-gym play`` use it.

Headless machines (CI) run it with ``SDL_VIDEODRIVER=dummy``: everything works, nothing is shown.

Without a display SDL falls back to its ``offscreen`` driver, which renders through EGL on the same
EGL display as MuJoCo's headless renderer: creating a second window (``set_mode``) or quitting
pygame's display there destroys every MuJoCo GL context of the process, and each MuJoCo render
after it fails (``EGLError``). With that driver nothing can be seen anyway, so the window says so
once (a warning) and shows nothing: it never makes a window and never quits the display. After a
quit with any other driver, MuJoCo's EGL display is initialised again.
"""

from __future__ import annotations

import contextlib
import sys
import warnings

import numpy as np

_SHARES_EGL = ("offscreen",)  # SDL video drivers that render through the process's EGL display


class FrameWindow:
    """One pygame window showing ``(H, W, 3)`` uint8 frames at up to ``fps`` frames per second.

    The window is sized by the first frame and resized when a frame of another size comes.
    ``show`` also pumps pygame's events, so the window stays responsive; ``closed`` turns true when
    the user closes it.
    """

    def __init__(self, title: str = "worldflux-gym", fps: int | None = 30):
        import pygame

        pygame.display.init()
        # nothing can be shown, and making windows would break MuJoCo's EGL rendering (see above)
        self.headless = pygame.display.get_driver() in _SHARES_EGL
        if self.headless:
            warn_nothing_shown()
        self.pygame = pygame
        self.title = title
        self.fps = fps
        self.surface = None
        self.clock = pygame.time.Clock()
        self.closed = False

    def show(self, frame: np.ndarray) -> None:
        """Draw ``frame``, keep the window responsive and wait to keep to ``fps``."""
        pygame = self.pygame
        if self.headless:
            pygame.event.pump()
            if self.fps:
                self.clock.tick(self.fps)
            return
        height, width = frame.shape[:2]
        if self.surface is None or self.surface.get_size() != (width, height):
            self.surface = pygame.display.set_mode((width, height))
            pygame.display.set_caption(self.title)
        # pygame surfaces are indexed (x, y); frames are (row, column)
        pygame.surfarray.blit_array(self.surface, np.ascontiguousarray(frame.swapaxes(0, 1)))
        pygame.display.flip()
        if pygame.event.peek(pygame.QUIT):
            self.closed = True
        pygame.event.pump()
        if self.fps:
            self.clock.tick(self.fps)

    def close(self) -> None:
        if self.surface is not None:
            self.pygame.display.quit()
            _reinitialize_mujoco_egl()
            self.surface = None
        self.closed = True


def _reinitialize_mujoco_egl() -> None:
    """Initialise MuJoCo's EGL display again (a no-op when it is up) after SDL may have terminated it."""
    egl = sys.modules.get("mujoco.egl")
    if egl is None or getattr(egl, "EGL_DISPLAY", None) is None:
        return
    # best effort: if it fails, the next MuJoCo render reports its own error
    with contextlib.suppress(Exception):
        egl.EGL.eglInitialize(egl.EGL_DISPLAY, None, None)


def warn_nothing_shown() -> None:
    warnings.warn(
        "no display found (SDL chose its 'offscreen' video driver): render_mode='human' shows nothing "
        "here; use render_mode='rgb_array' or `worldflux-gym video` to see a dream",
        stacklevel=3,
    )
