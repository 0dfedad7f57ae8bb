"""worldflux-gym play: the key mapping, and headless sessions driven by synthetic pygame key events."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pygame
from dream_helpers import fitted_checkpoint

from worldflux_gym.cli import main
from worldflux_gym.video.play import DREAM, REAL, DreamPlayer, KeyMap


def test_box_keys_push_dimensions_to_their_bounds():
    keys = KeyMap(gym.make("Pendulum-v1").action_space)  # Box(-2, 2, (1,))
    assert keys.action(set()).tolist() == [0.0]
    assert keys.action({pygame.K_RIGHT}).tolist() == [2.0]
    assert keys.action({pygame.K_LEFT}).tolist() == [-2.0]
    walker = KeyMap(gym.make("Walker2d-v5").action_space)  # Box(-1, 1, (6,))
    assert walker.action({pygame.K_UP}).tolist() == [0, 1, 0, 0, 0, 0]
    assert walker.action({pygame.K_3}).tolist() == [0, 0, 1, 0, 0, 0]
    assert walker.action({pygame.K_3}, shift=True).tolist() == [0, 0, -1, 0, 0, 0]
    assert walker.action({pygame.K_9}).tolist() == [0] * 6  # no 9th dimension: ignored
    shifted = KeyMap(gym.spaces.Box(1.0, 3.0, (1,), np.float32))
    assert shifted.action(set()).tolist() == [2.0]  # 0 is outside the bounds: rest at the midpoint


def test_discrete_keys_pick_actions():
    keys = KeyMap(gym.make("CartPole-v1").action_space)
    assert keys.action(set()) == 0
    assert keys.action({pygame.K_2}) == 1 and keys.action({pygame.K_1}) == 0
    assert keys.action({pygame.K_RIGHT}) == 1 and keys.action({pygame.K_LEFT}) == 0
    assert keys.action({pygame.K_5}) == 0  # no action 4 in Discrete(2)


def key(kind: int, code: int, mod: int = 0) -> None:
    pygame.event.post(pygame.event.Event(kind, key=code, mod=mod))


def test_headless_session_drives_the_dream_switches_to_the_real_env_and_back():
    player = DreamPlayer(fitted_checkpoint("Pendulum-v1", "ensemble:ci"), real_env="Pendulum-v1", fps=0)
    script = {
        0: [(pygame.KEYDOWN, pygame.K_RIGHT)],
        3: [(pygame.KEYUP, pygame.K_RIGHT)],
        5: [(pygame.KEYDOWN, pygame.K_TAB), (pygame.KEYDOWN, pygame.K_LEFT)],  # to the real env
        8: [(pygame.KEYUP, pygame.K_LEFT), (pygame.KEYDOWN, pygame.K_TAB)],  # back to the dream
        11: [(pygame.KEYDOWN, pygame.K_ESCAPE)],
    }
    entered_dream = {}

    def on_frame(player: DreamPlayer, frame: int) -> None:
        if frame == 9:  # one dream step after switching back: where did the dream start?
            entered_dream["active"] = player.active
        for kind, code in script.get(frame, []):
            key(kind, code)

    log = player.run(max_frames=50, on_frame=on_frame)
    assert log.quit and log.frames == 11
    assert log.switches == 2 and entered_dream["active"] == DREAM
    dream = [float(a[0]) for a in log.actions[DREAM]]
    real = [float(a[0]) for a in log.actions[REAL]]
    assert dream == [2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # frames 0-4, then 8-10
    assert real == [-2.0, -2.0, -2.0]  # frames 5-7


def test_entering_the_dream_starts_it_from_the_real_envs_current_observation():
    player = DreamPlayer(fitted_checkpoint("Pendulum-v1", "ensemble:ci"), real_env="Pendulum-v1", fps=0)
    player.switch()  # to the real env
    for _ in range(5):
        player.held = {pygame.K_LEFT}
        player.step()
    player.switch()  # back to the dream, from where the real pendulum is now
    np.testing.assert_allclose(player.dream.obs[0].numpy(), player.real.obs, rtol=1e-5)
    frame = player.frame()
    assert frame.shape == (500, 500, 3) and frame.std() > 10
    player.close()


def test_cli_play_runs_a_bounded_headless_session(capsys):
    args = ["play", str(fitted_checkpoint("Pendulum-v1", "ensemble:ci")), "--real-env", "Pendulum-v1"]
    assert main([*args, "--max-frames", "3", "--fps", "0"]) == 0
    assert "3 frames" in capsys.readouterr().out
