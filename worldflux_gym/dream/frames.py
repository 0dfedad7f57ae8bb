"""Frame utilities: resampling, side-by-side layout and text overlays (drawn with ``pygame.font``).

Frames are ``(H, W, 3)`` uint8 numpy arrays throughout, as Gymnasium's ``rgb_array`` renders are.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
MUJOCO_VIEW_SIZE = 480  # MuJoCo frames drawn by the simulator, width and height: Gymnasium's default


def resample(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 frame to ``(height, width, 3)`` with a real resampler.

    Bicubic for enlarging (decoded 64 x 64 frames shown at viewing size), antialiased bilinear for
    shrinking, so that neither blocks nor aliasing appear.
    """
    if frame.shape[:2] == (height, width):
        return frame
    image = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
    enlarging = height >= frame.shape[0] and width >= frame.shape[1]
    image = torch.nn.functional.interpolate(
        image,
        size=(height, width),
        mode="bicubic" if enlarging else "bilinear",
        antialias=not enlarging,
        align_corners=False,
    )
    return image[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def fit_height(frame: np.ndarray, height: int) -> np.ndarray:
    """Resample ``frame`` to ``height`` rows, keeping its aspect ratio."""
    if frame.shape[0] == height:
        return frame
    width = max(1, round(frame.shape[1] * height / frame.shape[0]))
    return resample(frame, height, width)


def hstack(frames: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """Frames side by side (resampled to the tallest one's height), separated by ``gap`` black columns."""
    height = max(f.shape[0] for f in frames)
    parts: list[np.ndarray] = []
    for i, frame in enumerate(frames):
        if i and gap:
            parts.append(np.zeros((height, gap, 3), np.uint8))
        parts.append(fit_height(frame, height))
    return np.concatenate(parts, axis=1)


def vstack(frames: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """Frames one above the other (padded on the right to the widest), ``gap`` black rows between."""
    width = max(f.shape[1] for f in frames)
    parts: list[np.ndarray] = []
    for i, frame in enumerate(frames):
        if i and gap:
            parts.append(np.zeros((gap, width, 3), np.uint8))
        pad = width - frame.shape[1]
        parts.append(np.pad(frame, ((0, 0), (0, pad), (0, 0))) if pad else frame)
    return np.concatenate(parts, axis=0)


def grid(frames: Sequence[np.ndarray], columns: int | None = None, gap: int = 4) -> np.ndarray:
    """Frames of one size in a grid, ``columns`` wide (default: as square as it gets)."""
    columns = columns or int(np.ceil(np.sqrt(len(frames))))
    rows = [hstack(frames[i : i + columns], gap) for i in range(0, len(frames), columns)]
    return vstack(rows, gap)


def even_size(frame: np.ndarray) -> np.ndarray:
    """Pad to even height and width: H.264 with yuv420p (what players expect) needs both even."""
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    if pad_h or pad_w:
        frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)))
    return frame


def _font(size: int):
    import pygame  # pygame.font needs no display: drawing text never opens a window

    if not pygame.font.get_init():
        # pygame.quit() (classic-control envs call it on close) invalidates every loaded font
        pygame.font.init()
        _load_font.cache_clear()
    return _load_font(size)


@functools.lru_cache(maxsize=8)
def _load_font(size: int):
    import pygame

    return pygame.font.Font(None, size)  # pygame's bundled default font: no system fonts needed


def draw_text(
    frame: np.ndarray,
    lines: Sequence[str],
    *,
    corner: str = "top-left",
    size: int | None = None,
    color: tuple[int, int, int] = WHITE,
) -> np.ndarray:
    """A copy of ``frame`` with ``lines`` of text on a darkened box in a corner.

    Only the box goes through pygame (the text is drawn on a small black surface); the frame is
    darkened under it in numpy, which keeps text readable on any background (white classic-control
    frames, a dark sky) and costs a fraction of converting the whole frame to a surface and back.
    """
    import pygame

    height, width = frame.shape[:2]
    font = _font(size or max(12, height // 22))
    rendered = [font.render(line, True, color) for line in lines]
    box_w = min(width, max(r.get_width() for r in rendered) + 8)
    box_h = min(height, sum(r.get_height() for r in rendered) + 6)
    box = pygame.Surface((box_w, box_h))  # black: adds nothing where there is no glyph
    y = 3
    for r in rendered:
        box.blit(r, (4, y))
        y += r.get_height()
    text = pygame.surfarray.array3d(box).swapaxes(0, 1).astype(np.float32)
    left = 4 if "left" in corner else max(0, width - box_w - 4)
    top = 4 if "top" in corner else max(0, height - box_h - 4)
    out = frame.copy()
    region = out[top : top + box_h, left : left + box_w]
    region[:] = np.clip(region * 0.4 + text[: region.shape[0], : region.shape[1]], 0, 255).astype(np.uint8)
    return out


def label(frame: np.ndarray, text: str) -> np.ndarray:
    """``frame`` with a title in its bottom-left corner ("real", "dream" ...)."""
    return draw_text(frame, [text], corner="bottom-left")


def error_image(real: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per-pixel absolute error of two frames, as a gray-scale image (brighter: further apart)."""
    diff = np.abs(real.astype(np.int16) - predicted.astype(np.int16)).mean(axis=-1)
    return np.repeat(diff.clip(0, 255).astype(np.uint8)[..., None], 3, axis=-1)
