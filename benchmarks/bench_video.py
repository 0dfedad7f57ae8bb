"""Video throughput: ``worldflux-gym video`` (record_dream, end to end) against the real env's rendering.

Prints frames per second, at the same frame size (Walker2d-v5, 480 x 480 by default), of:

1. the real env's own ``rgb_array`` rendering (``env.step`` + ``env.render()``) with Gymnasium's
   look (shadows, reflections, 4x multisampling: the MuJoCo model's defaults), with shadows and
   reflections switched off (scene flags only), and with everything off (worldflux-gym's video
   default: no shadow map, no reflections, no multisampling);
2. ``record_dream`` end to end, encoding included (model load, renderer and GL context set-up,
   dream steps, drawing the predicted state, overlay text, H.264 through moviepy): the dream alone
   and ``--compare`` (real env beside the dream), with the video default and with shadows,
   reflections and multisampling on. Each is given as the end-to-end rate of ``--frames`` frames
   and as the steady rate once set up, ``(frames - 1) / (t(frames) - t(1 frame))``;
3. moviepy's H.264 encoding alone, for scale.

The dream is a small ``ensemble:ci`` fitted here on a few thousand real steps (speed does not
depend on its quality), or ``--checkpoint DIR``.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/bench_video.py [--frames 60] [--size 480]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # headless MuJoCo; before mujoco is imported

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from worldflux_gym.dream.simulator import make_render_env, render_frame  # noqa: E402
from worldflux_gym.video import record_dream  # noqa: E402
from worldflux_gym.video.record import VideoWriter  # noqa: E402

ENV = "Walker2d-v5"


def real_render_fps(size: int, frames: int, look: str) -> float:
    """``env.step`` + ``env.render()`` of the real env; ``look`` is gymnasium / flags-off / all-off."""
    if look == "gymnasium":
        env = gym.make(ENV, render_mode="rgb_array", width=size, height=size)
        env.reset(seed=0)
        env.render()  # the GL context is set up outside the timing, as for the other rows
    else:
        # all-off is worldflux-gym's video default; flags-off keeps multisampling (shadows and
        # reflections off only)
        antialias = look == "flags-off"
        env = make_render_env(ENV, size, size, antialias=antialias, track=False)
    env.action_space.seed(0)
    start = time.perf_counter()
    for _ in range(frames):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
        render_frame(env)
    rate = frames / (time.perf_counter() - start)
    env.close()
    return rate


def record_seconds(
    checkpoint: Path, out: Path, frames: int, compare: bool, look_on: bool, size: int
) -> float:
    start = time.perf_counter()
    record_dream(
        checkpoint,
        out,
        real_env=ENV,
        steps=frames,
        compare=compare,
        width=size,
        height=size,
        shadows=look_on,
        reflections=look_on,
        antialias=look_on,
        overwrite=True,
    )
    return time.perf_counter() - start


def encode_fps(size: int, frames: int, out: Path) -> float:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size, 2 * size, 3), dtype=np.uint8)
    writer = VideoWriter(out, 125)
    start = time.perf_counter()
    for i in range(frames):
        writer.write(np.roll(base, i, axis=1))
    writer.close()
    return frames / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", type=int, default=480)
    parser.add_argument("--checkpoint", help="a fitted Walker2d-v5 run (default: fit ensemble:ci here)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-video-"))
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    if checkpoint is None:
        from worldflux_gym.training import fit_world_model

        checkpoint = tmp / "walker"
        t = time.perf_counter()
        fit_world_model(ENV, "ensemble:ci", checkpoint, steps=300, collect_steps=3000, progress=False)
        print(f"(fitted ensemble:ci on {ENV} in {time.perf_counter() - t:.0f} s)")
    size, frames = args.size, args.frames
    print(f"{ENV}, {size} x {size} per panel, {frames} frames, load average {os.getloadavg()[0]:.1f}")
    print(f"MUJOCO_GL={os.environ['MUJOCO_GL']}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}\n")

    width = 72
    print(f"{'what'.ljust(width)}  {'fps end to end':>14}  steady fps", flush=True)

    def row(name: str, fps: float, steady: str = "") -> None:
        print(f"{name.ljust(width)}  {fps:>14.1f}  {steady}", flush=True)

    for look, text in [
        ("gymnasium", "real env rgb_array, Gymnasium's look (shadows, reflections, 4x MSAA)"),
        ("flags-off", "real env rgb_array, shadows + reflections off (MSAA on)"),
        ("all-off", "real env rgb_array, shadows + reflections + MSAA off (video default)"),
    ]:
        row(text, real_render_fps(size, frames, look))

    for compare in (False, True):
        for look_on in (False, True):
            name = "record_dream" + (" --compare" if compare else "")
            name += ", shadows+reflections+MSAA on" if look_on else ", video default (all off)"
            one = record_seconds(checkpoint, tmp / "one.mp4", 1, compare, look_on, size)
            full = record_seconds(checkpoint, tmp / "full.mp4", frames, compare, look_on, size)
            steady = (frames - 1) / max(full - one, 1e-9)
            row(name, frames / full, f"{steady:.1f} (set-up {one:.1f} s)")

    row(f"moviepy H.264 encoding alone, {size} x {2 * size}", encode_fps(size, frames, tmp / "e.mp4"))
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
