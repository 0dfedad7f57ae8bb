import os

import pytest
import torch

# Tests run on 2 cores next to other work: one thread each keeps them predictable.
torch.set_num_threads(1)
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("MUJOCO_GL", "egl")  # headless MuJoCo rendering; set before mujoco loads

import minimal_family  # noqa: E402,F401  (registers the "tiny-mlp" family used by contract tests)


@pytest.fixture
def pendulum_spaces():
    import gymnasium as gym

    env = gym.make("Pendulum-v1")
    yield env.observation_space, env.action_space
    env.close()
