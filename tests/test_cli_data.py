"""`worldflux-gym collect` and `worldflux-gym fit`: the happy path and every refusal, with exit code 2."""

from __future__ import annotations

import pytest

from worldflux_gym import from_pretrained
from worldflux_gym.cli import main
from worldflux_gym.data import EpisodeStore
from worldflux_gym.training import trainer_state


def _snapshot(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_collect_then_fit_then_resume(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["collect", "Pendulum-v1", "--steps", "1000", "--out", str(data), "--num-envs", "2"]) == 0
    assert "train" in capsys.readouterr().out
    store = EpisodeStore(data)
    assert (
        store.num_steps() >= 1000 and store.num_episodes("validation") == 1 and store.env_id == "Pendulum-v1"
    )

    fit = ["fit", "Pendulum-v1", "--model", "tiny-mlp:ci", "--data", str(data), "--out", str(run)]
    assert main([*fit, "--steps", "10", "--batch-size", "16", "--set", "hidden=8"]) == 0
    model = from_pretrained(run)
    assert model.config.hidden == 8 and trainer_state(run)["step"] == 10
    assert main([*fit, "--steps", "15", "--batch-size", "16", "--set", "hidden=8"]) == 0  # resumes
    assert trainer_state(run)["step"] == 15


@pytest.mark.filterwarnings("ignore:no validation episodes")
def test_fit_without_data_collects_into_the_run_dir(tmp_path):
    run = tmp_path / "run"
    args = ["fit", "CartPole-v1", "--model", "tiny-mlp:ci", "--out", str(run), "--steps", "5"]
    assert main([*args, "--collect-steps", "200", "--batch-size", "8"]) == 0
    assert EpisodeStore(run / "data").num_steps() >= 200
    assert from_pretrained(run).family == "tiny-mlp"


@pytest.mark.filterwarnings("ignore:no validation episodes")  # one 200-step episode: all training
def test_bad_input_exits_2_with_a_message_and_touches_nothing(tmp_path, capsys):
    assert main(["collect", "NoSuchEnv-v0", "--steps", "10", "--out", str(tmp_path / "d")]) == 2
    assert "cannot make the Gymnasium env 'NoSuchEnv-v0'" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()

    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["collect", "Pendulum-v1", "--steps", "200", "--out", str(data)]) == 0
    base = ["--data", str(data), "--steps", "5", "--batch-size", "8"]
    assert main(["fit", "Pendulum-v1", "--model", "tiny-mlp:ci", "--out", str(run), *base]) == 0
    before = _snapshot(run)

    assert main(["fit", "Pendulum-v1", "--model", "tiny-mlp:wide", "--out", str(run), *base]) == 2
    assert "already holds the model tiny-mlp:ci" in capsys.readouterr().err
    assert main(["fit", "CartPole-v1", "--model", "tiny-mlp:ci", "--out", str(run), *base]) == 2
    assert "fitted on Pendulum-v1" in capsys.readouterr().err
    assert _snapshot(run) == before  # the existing run is untouched

    other = tmp_path / "other"
    assert main(["fit", "CartPole-v1", "--model", "tiny-mlp:ci", "--out", str(other), *base]) == 2
    assert "holds episodes of 'Pendulum-v1', not 'CartPole-v1'" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        main(["fit", "Pendulum-v1", "--model", "tiny-mlp:ci", "--out", str(other), "--data", str(empty)]) == 2
    )
    assert "is not an episode store" in capsys.readouterr().err
    assert main(["fit", "Pendulum-v1", "--model", "nope:ci", "--out", str(other), *base]) == 2
    assert "unknown world-model family 'nope'" in capsys.readouterr().err
    assert (
        main(["fit", "Pendulum-v1", "--model", "tiny-mlp:ci", "--out", str(other), *base, "--set", "x"]) == 2
    )
    assert "--set expects KEY=VALUE" in capsys.readouterr().err
    args = [
        "fit",
        "CartPole-v1",
        "--model",
        "nope:ci",
        "--out",
        str(tmp_path / "r2"),
        "--collect-steps",
        "50",
    ]
    assert main(args) == 2  # refused before collecting anything
    assert "unknown world-model family" in capsys.readouterr().err and not (tmp_path / "r2").exists()
    assert not other.exists() or not any(other.iterdir())


def test_help_lists_the_data_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "collect" in out and "fit" in out
