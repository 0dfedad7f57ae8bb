"""The trainer: learning, exact resume, adapt_to_data, windows, NaN stops, run-dir refusals, kill -9, DDP."""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from minimal_family import TinyConfig, TinyMLPModel

from worldflux_gym import create_world_model, from_pretrained
from worldflux_gym.cli import main
from worldflux_gym.core import Preset, SequenceBatch, TransitionBatch, register_family
from worldflux_gym.core.errors import ConcurrentWriterError, ConfigError, DataError, SpaceError, TrainingError
from worldflux_gym.data import EpisodeStore, collect_to_store
from worldflux_gym.data.collect import scaled_random_policy
from worldflux_gym.training import Trainer, TrainerConfig, fit_world_model, trainer_state

TESTS = Path(__file__).parent


@dataclass
class TinySeqConfig(TinyConfig):
    sequence_length: int = 6
    batch_size: int = 4


@register_family("tiny-seq", presets={"ci": Preset({"hidden": 8}, "test", "tiny-mlp on sequence windows")})
class TinySeqModel(TinyMLPModel):
    """tiny-mlp trained on windows: checks that the trainer hands sequence models SequenceBatches."""

    config_class = TinySeqConfig
    batch_type = SequenceBatch

    def loss(self, batch):
        assert isinstance(batch, SequenceBatch)
        return super().loss(batch.transitions())


@pytest.fixture(scope="module")
def pendulum_store(tmp_path_factory) -> EpisodeStore:
    return collect_to_store("Pendulum-v1", 2000, tmp_path_factory.mktemp("data") / "pendulum", progress=False)


def _model(store, name="tiny-mlp:ci", **overrides):
    torch.manual_seed(0)
    return create_world_model(name, store.observation_space, store.action_space, **overrides)


def _config(**values) -> TrainerConfig:
    defaults = dict(
        steps=20,
        batch_size=32,
        validate_every=10,
        checkpoint_every=10,
        log_every=5,
        progress=False,
        tensorboard=False,
    )
    return TrainerConfig(**{**defaults, **values})


def test_fit_learns_and_writes_a_loadable_run(tmp_path, pendulum_store):
    model = _model(pendulum_store)
    before = Trainer(model, pendulum_store, _config(steps=1), tmp_path / "probe").validate()["val/loss"]
    metrics = Trainer(
        model,
        pendulum_store,
        _config(steps=300, validate_every=100, checkpoint_every=100, tensorboard=True),
        tmp_path / "run",
    ).fit()
    assert metrics["step"] == 300 and metrics["val/loss"] < 0.5 * before
    assert metrics["updates_per_s"] > 0 and metrics["samples_per_s"] == pytest.approx(
        32 * metrics["updates_per_s"]
    )
    loaded = from_pretrained(tmp_path / "run")
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert trainer_state(tmp_path / "run")["step"] == 300
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,metric,value,time" and any(",val/loss," in r for r in rows)
    assert any((tmp_path / "run" / "tensorboard").iterdir())
    assert not Trainer(model, pendulum_store, _config(), tmp_path / "p2").config.mixed_precision  # CPU


def test_resume_continues_exactly_where_it_stopped(tmp_path, pendulum_store):
    straight = _model(pendulum_store)
    Trainer(straight, pendulum_store, _config(steps=20), tmp_path / "straight").fit()

    first = _model(pendulum_store)
    Trainer(first, pendulum_store, _config(steps=10), tmp_path / "halves").fit()
    torch.manual_seed(1234)  # whatever happened to the RNG in between must not matter
    second = _model(pendulum_store)  # fresh weights: everything comes from the checkpoint
    trainer = Trainer(second, pendulum_store, _config(steps=20), tmp_path / "halves")
    assert trainer.resuming
    trainer.fit()
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(second.state_dict()[name], value, rtol=0, atol=0)
    assert trainer.optimizer.state_dict()["state"][0]["step"] == 20


def _save_as_before(run: Path, field: str) -> None:
    """Rewrite a run as an older version saved it: without a config ``field`` added since (and the
    config's digest to match)."""
    config = json.loads((run / "config.json").read_text())
    del config["config"][field]
    config_bytes = json.dumps(config).encode()
    (run / "config.json").write_bytes(config_bytes)
    metadata = json.loads((run / "metadata.json").read_text())
    metadata["config_sha256"] = hashlib.sha256(config_bytes).hexdigest()
    (run / "metadata.json").write_text(json.dumps(metadata))


def test_a_run_saved_before_its_family_gained_a_config_field_resumes(tmp_path, pendulum_store):
    run = tmp_path / "run"
    Trainer(_model(pendulum_store, "ensemble:ci"), pendulum_store, _config(steps=10), run).fit()
    _save_as_before(run, "termination_positive_weight")

    trainer = Trainer(_model(pendulum_store, "ensemble:ci"), pendulum_store, _config(steps=20), run)
    assert trainer.resuming and trainer.fit()["step"] == 20
    # a field that differs for real is still another model
    other = _model(pendulum_store, "ensemble:ci", termination_positive_weight=10.0)
    with pytest.raises(TrainingError, match="termination_positive_weight: saved 1.0, now 10.0"):
        Trainer(other, pendulum_store, _config(steps=30), run)


def test_a_run_saved_before_calibrated_terminations_names_the_field_to_resume_it(tmp_path, pendulum_store):
    # Its continue logits were used as trained: resuming it as a calibrating model would change it.
    run = tmp_path / "run"
    Trainer(_model(pendulum_store, "ensemble:ci"), pendulum_store, _config(steps=10), run).fit()
    _save_as_before(run, "calibrate_terminations")

    with pytest.raises(TrainingError, match="calibrate_terminations: saved False, now True"):
        Trainer(_model(pendulum_store, "ensemble:ci"), pendulum_store, _config(steps=20), run)
    as_it_was = _model(pendulum_store, "ensemble:ci", calibrate_terminations=False)
    assert Trainer(as_it_was, pendulum_store, _config(steps=20), run).fit()["step"] == 20


def test_adapt_to_data_runs_once_before_the_first_update(tmp_path, pendulum_store):
    model = _model(pendulum_store)
    calls = []
    model.adapt_to_data = lambda batch: calls.append(("adapt", batch))
    original_loss = model.loss
    model.loss = lambda batch: (calls.append(("loss", None)), original_loss(batch))[1]
    Trainer(model, pendulum_store, _config(steps=3, adapt_samples=500), tmp_path / "run").fit()
    assert calls[0][0] == "adapt" and sum(kind == "adapt" for kind, _ in calls) == 1
    assert isinstance(calls[0][1], TransitionBatch) and len(calls[0][1]) == 500
    calls.clear()
    Trainer(model, pendulum_store, _config(steps=5), tmp_path / "run").fit()  # resumed: no second adapt
    assert all(kind == "loss" for kind, _ in calls)


def test_sequence_families_get_windows_of_their_length(tmp_path, pendulum_store):
    model = _model(pendulum_store, "tiny-seq:ci")
    seen = []
    original_loss = model.loss
    model.loss = lambda batch: (seen.append(tuple(batch.obs.shape)), original_loss(batch))[1]
    trainer = Trainer(model, pendulum_store, _config(steps=3, batch_size=None), tmp_path / "run")
    trainer.fit()
    assert seen[0] == (4, 7, 3)  # model.config.batch_size windows of sequence_length + 1 observations
    assert from_pretrained(tmp_path / "run").family == "tiny-seq"


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, pendulum_store):
    model = _model(pendulum_store)
    original_loss = model.loss
    count = [0]

    def exploding(batch):
        count[0] += model.training  # validation (eval mode) calls loss too; count updates only
        out = original_loss(batch)
        if model.training and count[0] == 8:
            out.loss = out.loss * float("nan")
        return out

    model.loss = exploding
    with pytest.raises(TrainingError, match=r"loss became nan at step 8.*last good checkpoint \(step 5\)"):
        Trainer(
            model, pendulum_store, _config(steps=20, checkpoint_every=5, validate_every=5), tmp_path / "run"
        ).fit()
    assert trainer_state(tmp_path / "run")["step"] == 5
    restored = from_pretrained(tmp_path / "run")
    assert all(torch.isfinite(p).all() for p in restored.parameters())


def test_run_dir_of_another_model_is_refused_and_left_intact(tmp_path, pendulum_store):
    run = tmp_path / "run"
    Trainer(_model(pendulum_store), pendulum_store, _config(steps=5), run).fit()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(TrainingError, match="already holds another model"):
        Trainer(_model(pendulum_store, "tiny-mlp:wide"), pendulum_store, _config(steps=10), run)
    with pytest.raises(TrainingError, match="already holds another model"):
        Trainer(_model(pendulum_store, hidden=17), pendulum_store, _config(steps=10), run)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before

    (run / "audit.html").write_text("a report someone saved beside the run")
    assert Trainer(_model(pendulum_store), pendulum_store, _config(steps=6), run).fit()["step"] == 6

    killed = tmp_path / "killed"  # the first checkpoint was killed before its journal was written
    killed.mkdir()
    (killed / ".model.safetensors.pending").write_bytes(b"half a file")
    assert Trainer(_model(pendulum_store), pendulum_store, _config(steps=2), killed).fit()["step"] == 2

    exported = tmp_path / "exported"
    _model(pendulum_store).save_pretrained(exported)
    with pytest.raises(TrainingError, match="without trainer state"):
        Trainer(_model(pendulum_store), pendulum_store, _config(), exported)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("precious")
    (tmp_path / "home" / ".draft.pending").write_text("another tool's unfinished write")
    with pytest.raises(TrainingError, match="not a worldflux-gym run"):
        Trainer(_model(pendulum_store), pendulum_store, _config(), tmp_path / "home")
    assert (tmp_path / "home" / "thesis.tex").read_text() == "precious"
    assert (tmp_path / "home" / ".draft.pending").is_file()  # not ours: not "recovered" away


def test_data_that_does_not_match_the_model_or_is_empty_is_refused(tmp_path, pendulum_store):
    cartpole = gym.make("CartPole-v1")
    wrong = create_world_model("tiny-mlp:ci", cartpole.observation_space, cartpole.action_space)
    with pytest.raises(SpaceError, match="observation space"):
        Trainer(wrong, pendulum_store, _config(), tmp_path / "run")
    empty = EpisodeStore.create(
        tmp_path / "empty", "Pendulum-v1", pendulum_store.observation_space, pendulum_store.action_space
    )
    with pytest.raises(DataError, match="no training episodes"):
        Trainer(_model(pendulum_store), empty, _config(), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_recent_share_reaches_the_training_batches_and_bad_values_are_refused(tmp_path, pendulum_store):
    recent_from = pendulum_store.buffer("train").num_steps - 200  # the last train episode
    trainer = Trainer(
        _model(pendulum_store),
        pendulum_store,
        _config(recent_from=recent_from, recent_share=1.0),
        tmp_path / "a",
    )
    last_episode = torch.as_tensor(pendulum_store.episodes("train")[-1].obs[:-1], dtype=torch.float32)
    batch = trainer.sample_batch()
    assert (batch.obs[:, None, :] == last_episode[None]).all(-1).any(-1).all()  # every transition from it
    past_the_data = dict(recent_from=recent_from + 200, recent_share=0.5)
    for bad in (dict(recent_share=1.5), dict(recent_share=-0.5), dict(recent_from=-1), past_the_data):
        with pytest.raises(ConfigError, match="TrainerConfig.recent_"):
            Trainer(_model(pendulum_store), pendulum_store, _config(**bad), tmp_path / "b")
    pair = (pendulum_store.buffer("train"), None)
    with pytest.raises(ConfigError, match="build the train buffer with EpisodeBuffer"):
        Trainer(_model(pendulum_store), pair, _config(recent_share=0.5), tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_fit_world_model_completes_an_interrupted_collection(tmp_path):
    run = tmp_path / "run"
    collect_to_store("CartPole-v1", 120, run / "data", progress=False)  # as if killed after 120 steps
    before = EpisodeStore(run / "data").episodes("all")
    fit_world_model(
        "CartPole-v1",
        "tiny-mlp:ci",
        run,
        steps=2,
        collect_steps=300,
        progress=False,
        trainer=dict(batch_size=8, tensorboard=False),
    )
    after = EpisodeStore(run / "data").episodes("all")
    assert 300 <= sum(len(e) for e in after) < 300 + 120  # topped up, not collected again
    np.testing.assert_array_equal(after[0].obs, before[0].obs)  # what was there is kept


def test_fit_world_model_collects_then_resumes(tmp_path):
    run = tmp_path / "run"
    model = fit_world_model(
        "CartPole-v1",
        "tiny-mlp:ci",
        run,
        steps=10,
        collect_steps=300,
        progress=False,
        trainer=dict(batch_size=16, tensorboard=False),
    )
    assert EpisodeStore(run / "data").num_steps() >= 300
    assert from_pretrained(run).action_space == gym.spaces.Discrete(2) and model.family == "tiny-mlp"
    fit_world_model(
        "CartPole-v1",
        "tiny-mlp:ci",
        run,
        steps=20,
        collect_steps=300,
        progress=False,
        trainer=dict(batch_size=16, tensorboard=False),
    )
    assert trainer_state(run)["step"] == 20
    with pytest.raises(TrainingError, match="already holds the model tiny-mlp:ci fitted on CartPole-v1"):
        fit_world_model("Pendulum-v1", "tiny-mlp:ci", run, steps=5, collect_steps=10, progress=False)
    assert not (run / "data").joinpath("Pendulum").exists() and trainer_state(run)["step"] == 20


_FIT_FOREVER = """
import sys
sys.path.insert(0, sys.argv[2])
import torch; torch.set_num_threads(1)
import minimal_family
from worldflux_gym.data import EpisodeStore
from worldflux_gym.training import Trainer, TrainerConfig
from worldflux_gym import create_world_model
store = EpisodeStore(sys.argv[1])
model = create_world_model("tiny-mlp:ci", store.observation_space, store.action_space)
config = TrainerConfig(steps=10_000_000, batch_size=32, checkpoint_every=20, validate_every=20,
                       progress=False, tensorboard=False)
Trainer(model, store, config, sys.argv[3]).fit()
"""


def _wait_for_step(run: Path, proc: subprocess.Popen, step: int, seconds: float = 60.0) -> bool:
    """Poll ``run``'s trainer state until it reaches ``step`` (True), or ``proc`` ends or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if trainer_state(run)["step"] >= step:
                return True
        except (TrainingError, ValueError):  # not written yet
            pass
        time.sleep(0.02)
    return False


def test_kill_9_during_fitting_keeps_a_loadable_checkpoint_to_resume(tmp_path, pendulum_store):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _FIT_FOREVER, str(pendulum_store.directory), str(TESTS), str(run)], env=env
    )
    try:
        if not _wait_for_step(run, proc, 20):
            pytest.fail("the fit wrote no checkpoint in 60 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    step = trainer_state(run)["step"]
    assert step >= 20 and step % 20 == 0
    from_pretrained(run)  # a complete, verified checkpoint
    model = _model(pendulum_store)
    metrics = Trainer(model, pendulum_store, _config(steps=step + 10), run).fit()
    assert metrics["step"] == step + 10 and trainer_state(run)["step"] == step + 10


_DDP_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[2])
import torch; torch.set_num_threads(1)
import torch.distributed as dist
import minimal_family
from worldflux_gym.data import EpisodeStore
from worldflux_gym.training import Trainer, TrainerConfig
from worldflux_gym import create_world_model
store = EpisodeStore(sys.argv[1])
torch.manual_seed(0)
model = create_world_model("tiny-mlp:ci", store.observation_space, store.action_space)
config = TrainerConfig(steps=30, batch_size=32, checkpoint_every=10, validate_every=10, progress=False,
                       tensorboard=False)
Trainer(model, store, config, sys.argv[3]).fit()
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, flat)
assert all(torch.equal(g, gathered[0]) for g in gathered), "ranks disagree on the weights"
torch.save(flat, f"{sys.argv[3]}/../weights-rank{dist.get_rank()}.pt")
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_torchrun_two_cpu_processes_with_gloo(tmp_path, pendulum_store):
    script = tmp_path / "ddp_fit.py"
    script.write_text(_DDP_SCRIPT)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            str(pendulum_store.directory),
            str(TESTS),
            str(run),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert trainer_state(run)["step"] == 30 and trainer_state(run)["world_size"] == 2
    saved = torch.cat([p.detach().flatten() for p in from_pretrained(run).parameters()])
    rank0 = torch.load(tmp_path / "weights-rank0.pt")
    torch.testing.assert_close(saved, rank0, rtol=0, atol=0)
    assert np.isfinite(saved.numpy()).all()


_FIT_CLI = """
import sys
sys.path.insert(0, sys.argv[1])
import torch; torch.set_num_threads(1)
import minimal_family
from worldflux_gym.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_second_fit_into_the_same_run_is_refused_at_once_and_the_first_completes(
    tmp_path, pendulum_store, capsys
):
    run = tmp_path / "run"
    args = ["fit", "Pendulum-v1", "--model", "tiny-mlp:ci", "--data", str(pendulum_store.directory)]
    args += ["--out", str(run), "--steps", "300", "--batch-size", "32", "--checkpoint-every", "25"]
    args += ["--validate-every", "25"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-c", _FIT_CLI, str(TESTS), *args], env=env)
    try:
        _wait_for_step(run, first, 20)
        assert first.poll() is None, "the first fit ended before the second could try"
        started = time.monotonic()
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert time.monotonic() - started < 5  # at once
        assert (
            "\n" not in err
            and f"{run} is already being written by a fit of tiny-mlp:ci on Pendulum-v1" in err
        )
        assert f"(pid {first.pid} on " in err
        with pytest.raises(ConcurrentWriterError, match=f"pid {first.pid} "):
            Trainer(_model(pendulum_store), pendulum_store, _config(steps=5), run)
        while first.poll() is None:  # readers, as often as they can, never break the writer
            from_pretrained(run)
            trainer_state(run)
    finally:
        assert first.wait(timeout=180) == 0
    assert trainer_state(run)["step"] == 300
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    keys = [tuple(row.split(",")[:2]) for row in rows]
    assert len(keys) == len(set(keys))  # one writer: no row twice
    from_pretrained(run)
    assert {p.name for p in run.iterdir()} >= {".worldflux.lock", "model.safetensors", "trainer_state.json"}
    assert not (run / ".worldflux.lock.json").exists()  # who held it: gone with the writer


def _hold_writer_lock(directory: str, ready) -> None:
    from worldflux_gym.core.lock import WriterLock

    lock = WriterLock(directory, "a test's writer").acquire()
    ready.set()
    time.sleep(120)
    lock.release()


def _hold_writer_lock_briefly(directory: str, ready) -> None:
    from worldflux_gym.core.lock import WriterLock

    with WriterLock(directory, "a brief writer"):
        ready.set()
        time.sleep(2)


@contextlib.contextmanager
def _locked_for_two_seconds_by_another_process(directory):
    ready = multiprocessing.get_context("fork").Event()
    holder = multiprocessing.get_context("fork").Process(
        target=_hold_writer_lock_briefly, args=(str(directory), ready)
    )
    holder.start()
    try:
        assert ready.wait(30)
        yield
    finally:
        holder.join(timeout=30)
    assert holder.exitcode == 0


def test_a_writer_that_may_wait_takes_the_lock_once_the_other_releases_it(tmp_path):
    from worldflux_gym.core.lock import WriterLock

    with _locked_for_two_seconds_by_another_process(tmp_path):
        with pytest.raises(ConcurrentWriterError, match="a brief writer"):
            WriterLock(tmp_path, "an impatient writer").acquire()
        started = time.monotonic()
        with WriterLock(tmp_path, "a patient writer", wait=60) as lock:
            assert lock.held and time.monotonic() - started < 30


def test_a_waiting_writer_holds_up_no_other_lock_of_its_process(tmp_path):
    import threading

    from worldflux_gym.core import lock as lock_module
    from worldflux_gym.core.lock import WriterLock

    busy, free = tmp_path / "busy", tmp_path / "free"
    with _locked_for_two_seconds_by_another_process(busy):
        waited = {}

        def patient() -> None:
            with WriterLock(busy, "a patient writer", wait=60) as lock:
                waited["held"] = lock.held

        thread = threading.Thread(target=patient)
        thread.start()
        while not any(held.what == "a patient writer" for held in dict(lock_module._HELD).values()):
            time.sleep(0.01)  # until the thread waits for the other process
        started = time.monotonic()
        with WriterLock(free, "a writer elsewhere") as lock:
            assert lock.held and time.monotonic() - started < 1.0  # not behind the 2 s wait
        with pytest.raises(ConcurrentWriterError, match="a patient writer in another thread"):
            WriterLock(busy, "a second writer").acquire()
        thread.join(timeout=30)
        assert waited == {"held": True}


def test_every_writer_takes_the_lock_and_is_refused_while_another_holds_it(tmp_path, pendulum_store):
    from worldflux_gym.pipelines.closed_loop import fine_tune_closed_loop
    from worldflux_gym.pipelines.dyna import DynaConfig, run_dyna

    fork = multiprocessing.get_context("fork")
    for name, write in {
        "fit": lambda out: fit_world_model(
            "Pendulum-v1", "tiny-mlp:ci", out, data_dir=pendulum_store.directory
        ),
        "trainer": lambda out: Trainer(_model(pendulum_store), pendulum_store, _config(), out),
        "collect": lambda out: collect_to_store("Pendulum-v1", 10, out, progress=False),
        "dyna": lambda out: run_dyna(
            "Pendulum-v1", "tiny-mlp:ci", out, DynaConfig(real_steps=10, initial_steps=5)
        ),
        "fine-tune": lambda out: fine_tune_closed_loop(
            tmp_path / "some-run", ["agent.zip"], out, store=pendulum_store.directory
        ),
    }.items():
        out = tmp_path / name
        ready = fork.Event()
        holder = fork.Process(target=_hold_writer_lock, args=(str(out), ready))
        holder.start()
        try:
            assert ready.wait(30)
            with pytest.raises(
                ConcurrentWriterError, match=rf"already being written by a test's writer \(pid {holder.pid} "
            ):
                write(out)
            assert sorted(p.name for p in out.iterdir()) == [".worldflux.lock", ".worldflux.lock.json"]
        finally:
            holder.kill()
            holder.join()


def test_a_fit_from_fitted_weights_keeps_their_normalisation_and_takes_new_settings(tmp_path, pendulum_store):
    first = fit_world_model(
        "Pendulum-v1", "ensemble:ci", tmp_path / "first", data_dir=pendulum_store.directory, steps=20,
        progress=False, trainer=dict(batch_size=32, tensorboard=False),
    )  # fmt: skip
    env = gym.make("Pendulum-v1")
    other = collect_to_store(  # other statistics: a refitted normalisation would differ
        "Pendulum-v1", 1000, tmp_path / "small_actions", policy=scaled_random_policy(env.action_space, 0.1),
        progress=False,
    )  # fmt: skip
    tuned = fit_world_model(
        "Pendulum-v1", "ensemble:ci", tmp_path / "tuned", data_dir=other.directory, steps=5, progress=False,
        trainer=dict(batch_size=4, learning_rate=1e-12, tensorboard=False), init_from=tmp_path / "first",
        sequence_length=4,
    )  # fmt: skip
    assert (
        tuned.config.sequence_length == 4 and from_pretrained(tmp_path / "tuned").config.sequence_length == 4
    )
    assert tuned.config.hidden == first.config.hidden
    for (name, a), b in zip(first.state_dict().items(), tuned.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name  # the fitted weights, barely moved at lr 1e-12
    fresh = fit_world_model(
        "Pendulum-v1", "ensemble:ci", tmp_path / "fresh", data_dir=other.directory, steps=5, progress=False,
        trainer=dict(batch_size=4, learning_rate=1e-12, tensorboard=False),
    )  # fmt: skip
    assert not torch.allclose(fresh.input_std, first.input_std)  # what adapting to `other` would have done
    with pytest.raises(ConfigError, match="same family and preset"):
        fit_world_model(
            "Pendulum-v1", "tiny-mlp:ci", tmp_path / "wrong", data_dir=other.directory, steps=5,
            progress=False, init_from=tmp_path / "first",
        )  # fmt: skip
