"""Misusing the command line: every case ends in a one-line error that names the argument or file,
exits non-zero, and prints no traceback (issue 22).

Most cases run the CLI in-process through ``worldflux_gym.cli.main`` (fast); a few run it as a real
subprocess to check what a user's shell sees. Every case is refused before any real work (no env
is stepped, no model is fitted), so the table runs in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from worldflux_gym.cli import main
from worldflux_gym.dream.registration import find_spec

PENDULUM_DREAM = "WorldFlux/Ensemble-Pendulum-v0"
WALKER_DREAM = "WorldFlux/Ensemble-Walker-v3"
TINY_PPO = {
    "algorithm": "PPO",
    "num_envs": 2,
    "default_steps": 64,
    "hyperparameters": {"n_steps": 32, "batch_size": 32, "n_epochs": 1},
}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Agents of two envs, a file, a folder, a tiny recipe: what the cases point at."""
    from stable_baselines3 import PPO

    root = tmp_path_factory.mktemp("misuse")
    PPO("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=32, seed=0, device="cpu").save(root / "pend.zip")
    PPO("MlpPolicy", "Walker2d-v5", n_steps=32, batch_size=32, seed=0, device="cpu").save(root / "walker.zip")
    (root / "afile").write_text("a user's file\n")
    (root / "recipe.json").write_text(json.dumps(TINY_PPO))
    (root / "old.zip").write_bytes(b"an agent the user keeps")
    (root / "old.mp4").write_bytes(b"a video the user keeps")
    (root / "report").mkdir()
    (root / "report" / "report.json").write_text("{}")
    return root


def _read_only_dir(root: Path) -> Path | None:
    """A folder nobody may write in: chmod for ordinary users; as root (which ignores file modes),
    /sys, which refuses new files even to root. None when neither works here."""
    folder = root / "read-only"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        try:
            (candidate / ".probe").write_text("")
        except OSError:
            return candidate
        (candidate / ".probe").unlink()
    return None


@pytest.fixture(scope="module")
def read_only(work) -> Path:
    folder = _read_only_dir(work)
    if folder is None:
        pytest.skip("no folder here refuses writes to this user")
    return folder


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr of ``worldflux-gym ARGV`` run in-process (argparse exits with SystemExit)."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, expected: str) -> None:
    assert code not in (0, None), f"exit code {code}, stderr:\n{err}"
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, f"expected one error line, got:\n{err}"
    assert expected in errors[0], f"{expected!r} not in {errors[0]!r}"


# (case, the command line ({work}: a scratch folder, {ro}: one nobody may write in), the part of
# the one-line message that must be there)
CASES = [
    (
        "train-agent --steps 0",
        "train-agent {pendulum} --steps 0 --out {work}/a.zip",
        "argument --steps: must be an integer >= 1, got 0",
    ),
    (
        "train-agent --steps -1",
        "train-agent {pendulum} --steps -1 --out {work}/a.zip",
        "argument --steps: must be an integer >= 1, got -1",
    ),
    (
        "evaluate --episodes 0",
        "evaluate {work}/pend.zip --env Pendulum-v1 --episodes 0",
        "argument --episodes: must be an integer >= 1, got 0",
    ),
    (
        "audit --horizon 0",
        "audit {work}/pend.zip {pendulum} --horizon 0 --out {work}/r",
        "argument --horizon: must be an integer >= 1, got 0",
    ),
    (
        "collect --seed -1",
        "collect Pendulum-v1 --steps 10 --seed -1 --out {work}/d",
        "argument --seed: must be an integer from 0 to 2**64 - 1, got -1",
    ),
    (
        "collect --seed 2**64",
        "collect Pendulum-v1 --steps 10 --seed 18446744073709551616 --out {work}/d",
        "argument --seed: must be an integer from 0 to 2**64 - 1",
    ),
    (
        "collect --out FILE",
        "collect Pendulum-v1 --steps 10 --out {work}/afile",
        "--out {work}/afile is a file, not a folder",
    ),
    (
        "collect --out /dev/null",
        "collect Pendulum-v1 --steps 10 --out /dev/null",
        "--out /dev/null is a device, not a folder",
    ),
    (
        "collect --out FILE/sub",
        "collect Pendulum-v1 --steps 10 --out {work}/afile/sub",
        "{work}/afile is a file, so no folder can be made under it",
    ),
    ("collect --out READ-ONLY", "collect Pendulum-v1 --steps 10 --out {ro}/store", "cannot write in {ro}"),
    (
        "fit --lr nan",
        "fit Pendulum-v1 --model ensemble:ci --lr nan --out {work}/run",
        "argument --lr: must be a finite number > 0, got nan",
    ),
    (
        "fit --lr -1",
        "fit Pendulum-v1 --model ensemble:ci --lr -1 --out {work}/run",
        "argument --lr: must be a finite number > 0",
    ),
    (
        "fit --steps 1.5",
        "fit Pendulum-v1 --model ensemble:ci --steps 1.5 --out {work}/run",
        "argument --steps: must be an integer, got '1.5'",
    ),
    (
        "fit --set hidden=abc",
        "fit Pendulum-v1 --model ensemble:ci --set hidden=abc --out {work}/run",
        "--set: hidden (32 in ensemble:ci) must be an integer >= 0, got 'abc'",
    ),
    (
        "fit --set hidden=1.5",
        "fit Pendulum-v1 --model ensemble:ci --set hidden=1.5 --out {work}/run",
        "--set: hidden (32 in ensemble:ci) must be an integer >= 0, got 1.5",
    ),
    (
        "fit --set noise_scale=NaN",
        "fit Pendulum-v1 --model ensemble:ci --set noise_scale=NaN --out {work}/run",
        "noise_scale (1.0 in ensemble:ci) must be a finite number, got nan",
    ),
    (
        "fit --device banana",
        "fit Pendulum-v1 --model ensemble:ci --device banana --out {work}/run",
        "--device 'banana' is not a device torch knows",
    ),
    (
        "fit --out /dev/null",
        "fit Pendulum-v1 --model ensemble:ci --out /dev/null",
        "--out /dev/null is a device, not a folder",
    ),
    ("fit --out READ-ONLY", "fit Pendulum-v1 --model ensemble:ci --out {ro}/run", "cannot write in {ro}"),
    (
        "fine-tune --device banana",
        "fine-tune {work}/run --policy {work}/pend.zip --device banana --out {work}/ft",
        "--device 'banana'",
    ),
    (
        "fine-tune --out FILE",
        "fine-tune {work}/run --policy {work}/pend.zip --device cpu --out {work}/afile",
        "--out {work}/afile is a file, not a folder",
    ),
    (
        "fine-tune --updates 0",
        "fine-tune {work}/run --policy {work}/pend.zip --updates 0 --out {work}/ft",
        "argument --updates: must be an integer >= 1",
    ),
    (
        "fine-tune --out READ-ONLY",
        "fine-tune {work}/run --policy {work}/pend.zip --device cpu --out {ro}/ft",
        "cannot write in {ro}",
    ),
    (
        "evaluate --env Nope-v9",
        "evaluate {work}/pend.zip --env Nope-v9",
        "--env 'Nope-v9' is not a registered Gymnasium env",
    ),
    (
        "evaluate a Walker agent on CartPole",
        "evaluate {work}/walker.zip --env CartPole-v1 --episodes 1",
        "observations Box(17,) and actions Box(6,), but the env CartPole-v1 has Box(4,) and Discrete(2)",
    ),
    (
        "audit --episodes 0",
        "audit {work}/pend.zip {pendulum} --episodes 0 --out {work}/r",
        "argument --episodes: must be an integer >= 1, got 0",
    ),
    (
        "audit --episodes -1",
        "audit {work}/pend.zip {pendulum} --episodes -1 --out {work}/r",
        "argument --episodes: must be an integer >= 1, got -1",
    ),
    (
        "audit --videos -1",
        "audit {work}/pend.zip {pendulum} --videos -1 --out {work}/r",
        "argument --videos: must be an integer >= 0, got -1",
    ),
    (
        "audit --real Nope-v9",
        "audit {work}/pend.zip {pendulum} --real Nope-v9 --out {work}/r",
        "--real 'Nope-v9' is not a registered Gymnasium env",
    ),
    (
        "audit a Pendulum agent in a Walker dream",
        "audit {work}/pend.zip {walker} --episodes 2 --no-what-if --videos 0 --out {work}/r",
        "actions Box(1,), but the dream WorldFlux/Ensemble-Walker-v3 has Box(17,) and Box(6,)",
    ),
    (
        "audit --out FILE",
        "audit {work}/pend.zip {pendulum} --out {work}/afile",
        "--out {work}/afile is a file, not a folder",
    ),
    ("audit --out READ-ONLY", "audit {work}/pend.zip {pendulum} --out {ro}/report", "cannot write in {ro}"),
    (
        "audit --out with a report",
        "audit {work}/pend.zip {pendulum} --out {work}/report",
        "already holds a report ({work}/report/report.json); pass --overwrite",
    ),
    (
        "audit ranking --out with a report",
        "audit {work}/pend.zip {work}/walker.zip {pendulum} --out {work}/report",
        "already holds a report",
    ),
    (
        "video --fps -5",
        "video {pendulum} --fps -5 --out {work}/v.mp4",
        "argument --fps: must be a finite number > 0, got -5.0",
    ),
    (
        "video --fps inf",
        "video {pendulum} --fps inf --out {work}/v.mp4",
        "argument --fps: must be a finite number > 0, got inf",
    ),
    (
        "video --steps 0",
        "video {pendulum} --steps 0 --out {work}/v.mp4",
        "argument --steps: must be an integer >= 1",
    ),
    (
        "video --agent of another env",
        "video {pendulum} --agent {work}/walker.zip --steps 2 --out {work}/v.mp4",
        "acts on observations Box(17,) and actions Box(6,), but the dream of Pendulum-v1 has Box(3,)",
    ),
    (
        "video CHECKPOINT --real-env of another env",
        "video {pendulum_checkpoint} --real-env CartPole-v1 --steps 2 --out {work}/v.mp4",
        "real_env 'CartPole-v1' has observations Box(4,) and actions Discrete(2), but the model was fitted",
    ),
    (
        "play CHECKPOINT --real-env of another env",
        "play {pendulum_checkpoint} --real-env CartPole-v1 --max-frames 1",
        "real_env 'CartPole-v1' has observations Box(4,)",
    ),
    (
        "video --out existing",
        "video {pendulum} --steps 2 --out {work}/old.mp4",
        "--out {work}/old.mp4: the video already exists; pass --overwrite",
    ),
    (
        "video --out /dev/null",
        "video {pendulum} --steps 2 --out /dev/null",
        "--out /dev/null is a device, not a regular file",
    ),
    ("video --out READ-ONLY", "video {pendulum} --steps 2 --out {ro}/v.mp4", "cannot write in {ro}"),
    (
        "train-agent --out existing",
        "train-agent {pendulum} --out {work}/old.zip",
        "--out {work}/old.zip: the agent already exists; pass --overwrite",
    ),
    (
        "train-agent --out folder",
        "train-agent {pendulum} --out {work}/report",
        "--out {work}/report is a folder",
    ),
    ("train-agent --out READ-ONLY", "train-agent {pendulum} --out {ro}/a.zip", "cannot write in {ro}"),
    (
        "dyna --out READ-ONLY",
        "dyna Pendulum-v1 --model ensemble:ci --real-steps 100 --recipe r --device cpu --out {ro}/dyna",
        "cannot write in {ro}",
    ),
    (
        "dyna --device banana",
        "dyna Pendulum-v1 --model ensemble:ci --real-steps 100 --recipe r --device banana --out {work}/dyna",
        "--device 'banana'",
    ),
    (
        "dyna --real-steps 0",
        "dyna Pendulum-v1 --model ensemble:ci --real-steps 0 --recipe r --out {work}/dyna",
        "argument --real-steps: must be an integer >= 1",
    ),
    (
        "dyna --own-share 1.5",
        "dyna Pendulum-v1 --model ensemble:ci --real-steps 100 --recipe r --own-share 1.5 --out {work}/dyna",
        "argument --own-share: must be a finite number >= 0 and <= 1",
    ),
    (
        "dyna --prior-model not a run",
        "dyna Pendulum-v1 --model ensemble:ci --real-steps 100 --initial-steps 0 --recipe ppo_pendulum "
        "--device cpu --prior-model {work} --out {work}/dyna",
        "holds no fitted run; fit one with `worldflux-gym fit`",
    ),
    ("play --fps -1", "play {pendulum} --fps -1", "argument --fps: must be a finite number >= 0"),
    (
        "collect --validation-fraction 1",
        "collect Pendulum-v1 --steps 10 --validation-fraction 1 --out {work}/d",
        "argument --validation-fraction: must be a finite number >= 0 and < 1",
    ),
]
if not torch.cuda.is_available():
    CASES.append(
        (
            "fit --device cuda without CUDA",
            "fit Pendulum-v1 --model ensemble:ci --device cuda --out {work}/run",
            "--device 'cuda': CUDA is not available on this machine",
        )
    )


@pytest.mark.parametrize(("command", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_misuse_ends_in_one_line_error(command, expected, work, request, capsys):
    ro = request.getfixturevalue("read_only") if "{ro}" in command else None
    fill = {"work": str(work), "ro": str(ro), "pendulum": PENDULUM_DREAM, "walker": WALKER_DREAM}
    fill["pendulum_checkpoint"] = str(find_spec(PENDULUM_DREAM).checkpoint)
    before = sorted(p.name for p in work.iterdir())
    code, err = run_cli([a.format(**fill) for a in command.split()], capsys)
    assert_one_line_error(code, err, expected.format(**fill))
    assert sorted(p.name for p in work.iterdir()) == before  # refused before anything was written
    assert (work / "old.zip").read_bytes() == b"an agent the user keeps"
    assert (work / "old.mp4").read_bytes() == b"a video the user keeps"


def test_overwrite_replaces_a_video_and_a_report_when_asked(work, tmp_path, capsys):
    out = tmp_path / "dream.gif"
    out.write_bytes(b"old")
    args = ["video", PENDULUM_DREAM, "--steps", "2", "--out", str(out)]
    assert run_cli(args, capsys)[0] == 2 and out.read_bytes() == b"old"
    assert main([*args, "--overwrite"]) == 0 and out.read_bytes() != b"old"

    report = tmp_path / "report"
    audit = ["audit", str(work / "pend.zip"), PENDULUM_DREAM, "--episodes", "2", "--horizon", "3",
             "--no-what-if", "--videos", "0", "--out", str(report)]  # fmt: skip
    assert main(audit) == 0
    first = (report / "report.json").read_text()
    code, err = run_cli(audit, capsys)
    assert_one_line_error(code, err, "already holds a report")
    assert (report / "report.json").read_text() == first
    assert main([*audit, "--seed", "1", "--overwrite"]) == 0
    assert json.loads((report / "report.json").read_text())["config"]["seed"] == 1


def test_train_agent_overwrite(work, tmp_path, capsys):
    out = tmp_path / "agent.zip"
    recipe = str(work / "recipe.json")
    args = ["train-agent", PENDULUM_DREAM, "--recipe", recipe, "--steps", "64", "--out", str(out)]
    assert main(args) == 0
    trained = out.read_bytes()
    code, err = run_cli(args, capsys)
    assert_one_line_error(code, err, "the agent already exists; pass --overwrite")
    assert out.read_bytes() == trained
    assert main([*args, "--seed", "1", "--overwrite"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["seed"] == 1


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["collect", "Pendulum-v1", "--steps", "10", "--seed", "-1", "--out", "{work}/d"], "argument --seed"),
        (
            ["fit", "Pendulum-v1", "--model", "ensemble:ci", "--device", "banana", "--out", "{work}/run"],
            "--device 'banana'",
        ),
    ],  # fmt: skip
    ids=["argparse", "handler"],
)
def test_misuse_in_a_real_process(argv, expected, work):
    """What a shell sees: the exit code and stderr of the installed command's module."""
    paths = [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    done = subprocess.run(
        [sys.executable, "-m", "worldflux_gym.cli", *[a.format(work=work) for a in argv]],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert_one_line_error(done.returncode, done.stderr, expected)
    assert done.returncode == 2


def test_a_file_error_during_the_run_is_one_line_too(monkeypatch, tmp_path, capsys):
    """What no check can foresee (the disk fills up while a video is written) still ends in one line
    with the path, not a traceback."""
    import worldflux_gym.video

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "v.mp4"))

    monkeypatch.setattr(worldflux_gym.video, "record_dream", full_disk)
    code, err = run_cli(["video", PENDULUM_DREAM, "--out", str(tmp_path / "v.mp4")], capsys)
    assert_one_line_error(code, err, f"No space left on device ({tmp_path / 'v.mp4'}); check the path")
