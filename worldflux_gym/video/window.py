"""A pygame window that shows frames: ``render_mode="human"`` and ``worldflux-gym play`` use it.

Headless machines (CI) run it with ``SDL_VIDEODRIVER=dummy``: everything works, nothing is shown.
"""

from __future__ import annotations

import numpy as np


class FrameWindow:
    """One pygame window showing ``(H, W, 3)`` uint8 frames at up to ``fps`` frames per second.

    The window is sized by the first frame and resized when a frame of another size comes.
    ``show`` also pumps pygame's events, so the window stays responsive; ``closed`` turns true when
    the user closes it.
    """

    def __init__(self, title: str = "worldflux-gym", fps: int | None = 30):
        import pygame

        pygame.display.init()
        self.pygame = pygame
        self.title = title
        self.fps = fps
        self.surface = None
        self.clock = pygame.time.Clock()
        self.closed = False

    def show(self, frame: np.ndarray) -> None:
        """Draw ``frame``, keep the window responsive and wait to keep to ``fps``."""
        pygame = self.pygame
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
            self.surface = None
        self.closed = True
