"""Make the README's picture, docs/dream_vs_real.png, with the library's own recorder.

    MUJOCO_GL=egl python docs/make_picture.py

``record_dream(..., compare=True)`` records the shipped ``WorldFlux/Dreamer-Walker-v1`` dream beside
the real Walker2d-v5: same real start, same actions (random, at a fifth of the action range). This
script keeps a few of those frames and lays them out in two rows, real above dream.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from PIL import Image

from worldflux_gym.video import record_dream

DREAM = "WorldFlux/Dreamer-Walker-v1"
STEPS = (0, 15, 30, 45, 60, 75)
PANEL = 200  # pixels per side of one panel
OUT = Path(__file__).resolve().parent / "dream_vs_real.png"


class SmallRandomActions:
    """Uniform random actions at ``scale`` x the range: the walker stays up long enough to compare."""

    def __init__(self, scale: float, seed: int = 0):
        self.scale, self.rng = scale, np.random.default_rng(seed)

    def predict(self, obs, deterministic=True):
        return self.scale * self.rng.uniform(-1.0, 1.0, 6).astype(np.float32), None


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "compare.mp4"
        record_dream(
            DREAM, video, agent=SmallRandomActions(0.2), steps=max(STEPS) + 1, compare=True,
            width=PANEL, height=PANEL, seed=0,
        )  # fmt: skip
        frames = [frame for frame in imageio.get_reader(video)]
    columns = [frames[t] for t in STEPS]
    real = np.concatenate([frame[:, :PANEL] for frame in columns], axis=1)
    dream = np.concatenate([frame[:, PANEL : 2 * PANEL] for frame in columns], axis=1)
    gap = np.full((4, real.shape[1], 3), 255, np.uint8)
    picture = Image.fromarray(np.concatenate([real, gap, dream]))
    picture = picture.quantize(256, method=Image.Quantize.FASTOCTREE)  # a palette: a small file
    picture.save(OUT, optimize=True)
    print(f"{OUT}: {OUT.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
