"""The episode store: round trip, splits, refusals, crash safety (truncated tails, kill -9), Minari import."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors_bytes

from worldflux_gym.cli import main
from worldflux_gym.core.errors import (
    ConcurrentWriterError,
    ConfigError,
    DataError,
    DuplicateEpisodeError,
    SpaceError,
)
from worldflux_gym.data import EpisodeBuffer, EpisodeStore, collect_episodes, collect_to_store
from worldflux_gym.data.store import (
    _HEADER,
    SHARD_DIR,
    EpisodeKey,
    _stored_arrays,
    content_digest,
    is_validation_episode,
)


@pytest.fixture(scope="module")
def cartpole_episodes():
    return collect_episodes("CartPole-v1", 600, seed=0, progress=False)


def _cartpole_store(directory, fraction=0.25) -> EpisodeStore:
    env = gym.make("CartPole-v1")
    store = EpisodeStore.create(directory, "CartPole-v1", env.observation_space, env.action_space, fraction)
    env.close()
    return store


def _assert_same(a, b) -> None:
    for name in ("obs", "action", "reward", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert getattr(a, name).dtype == getattr(b, name).dtype


def test_round_trip_and_split_by_episode(tmp_path, cartpole_episodes):
    with _cartpole_store(tmp_path / "s") as store:
        splits = [store.append(e) for e in cartpole_episodes]
    reopened = EpisodeStore(tmp_path / "s")
    assert reopened.env_id == "CartPole-v1"
    assert reopened.observation_space == gym.make("CartPole-v1").observation_space
    assert reopened.action_space == gym.spaces.Discrete(2)
    train, validation = reopened.episodes("train"), reopened.episodes("validation")
    expected_validation = [e for e, s in zip(cartpole_episodes, splits) if s == "validation"]
    assert len(validation) == len(expected_validation) == math.floor(len(cartpole_episodes) * 0.25 + 0.5)
    assert len(train) + len(validation) == len(cartpole_episodes)
    for a, b in zip(validation, expected_validation):
        _assert_same(a, b)  # whole episodes are held out, bit for bit
    for a, b in zip(train, [e for e, s in zip(cartpole_episodes, splits) if s == "train"]):
        _assert_same(a, b)


def test_validation_episodes_are_spread_evenly():
    held_out = [k for k in range(100) if is_validation_episode(k, 0.1)]
    assert held_out == [4 + 10 * i for i in range(10)]
    assert not any(is_validation_episode(k, 0.0) for k in range(100))


def test_buffers_sample_transitions_windows_and_real_starts(tmp_path, cartpole_episodes):
    with _cartpole_store(tmp_path / "s") as store:
        store.extend(cartpole_episodes)
    buffer = EpisodeStore(tmp_path / "s").buffer("train")
    rng = np.random.default_rng(0)
    transitions = buffer.sample_transitions(32, rng)
    assert transitions.obs.shape == (32, 4) and transitions.action.shape == (32,)
    windows = buffer.sample_sequences(8, 10, rng)
    assert windows.obs.shape == (8, 11, 4) and windows.action.shape == (8, 10)
    obs, action = buffer.sample_contexts(5, 3, rng)
    assert obs.shape == (5, 4, 4) and action.shape == (5, 3)
    assert len(buffer.initial_observations()) == len(buffer.episodes)


def test_a_buffer_draws_its_recent_share_from_the_steps_appended_last(cartpole_episodes):
    """A Dyna agent's own data on top of a large prior: a share of every sample comes from it."""
    old = cartpole_episodes[:20]
    recent = [dataclasses.replace(e, obs=e.obs + 100.0) for e in cartpole_episodes[20:24]]  # marked
    first_recent = sum(len(e) for e in old)
    plain = EpisodeBuffer(old + recent)
    favoured = EpisodeBuffer(old + recent, recent_from=first_recent, recent_share=0.5)
    recent_fraction = 1 - first_recent / plain.num_steps
    expected = 0.5 + 0.5 * recent_fraction  # the other half is drawn from all steps

    def rng() -> np.random.Generator:
        return np.random.default_rng(0)

    # without a share the draws are the ones the buffer always made, so fits reproduce
    np.testing.assert_array_equal(plain.sample_steps(64, rng()), rng().integers(0, plain.num_steps, 64))
    assert np.mean(plain.sample_steps(4000, rng()) >= first_recent) == pytest.approx(
        recent_fraction, abs=0.03
    )
    assert np.mean(favoured.sample_steps(4000, rng()) >= first_recent) == pytest.approx(expected, abs=0.03)
    transitions = favoured.sample_transitions(4000, rng())
    assert np.mean(transitions.obs.numpy()[:, 0] > 50) == pytest.approx(expected, abs=0.03)
    windows = favoured.sample_sequences(4000, 4, rng(), run_past_end=True)
    assert np.mean(windows.obs.numpy()[:, 0, 0] > 50) == pytest.approx(expected, abs=0.03)
    # start contexts are drawn by episode: half from the recent episodes, half from all of them
    obs, _ = favoured.sample_contexts(4000, 3, rng())
    eligible = [len(e) >= 4 for e in old + recent]
    by_episode = 0.5 + 0.5 * sum(eligible[len(old) :]) / sum(eligible)
    assert np.mean(obs.numpy()[:, 0, 0] > 50) == pytest.approx(by_episode, abs=0.03)
    # nothing recent yet (recent_from at the end): every draw is uniform, as without a share
    nothing_yet = EpisodeBuffer(old, recent_from=first_recent, recent_share=0.5)
    np.testing.assert_array_equal(nothing_yet.sample_steps(64, rng()), rng().integers(0, first_recent, 64))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="recent_share must be a finite number >= 0 and <= 1"):
            EpisodeBuffer(old, recent_share=bad)


def test_windows_that_run_past_the_end_put_terminations_at_every_position(cartpole_episodes):
    buffer = EpisodeBuffer(cartpole_episodes)
    assert buffer.lengths.min() > 4  # random CartPole episodes: every one ends in a termination
    positions = {}
    for run_past_end in (False, True):
        windows = buffer.sample_sequences(2000, 4, np.random.default_rng(0), run_past_end=run_past_end)
        where = np.nonzero(windows.terminated.numpy())[1]
        assert windows.mask.numpy()[windows.terminated.numpy()].all()  # a termination is a real step
        positions[run_past_end] = set(where.tolist())
    # shifted back, the window ends at the termination; run past the end, it can sit anywhere
    assert positions[False] == {3}
    assert positions[True] == set(range(4))


def test_bad_input_is_refused_and_nothing_is_touched(tmp_path, cartpole_episodes):
    store = _cartpole_store(tmp_path / "s")
    store.append(cartpole_episodes[0])
    store.close()
    pendulum = collect_episodes("Pendulum-v1", 20, progress=False)[0]
    with pytest.raises(SpaceError, match="observations have shape"):
        store.append(pendulum)
    pend = gym.make("Pendulum-v1")
    with pytest.raises(DataError, match="already holds an episode store"):
        EpisodeStore.create(tmp_path / "s", "CartPole-v1", store.observation_space, store.action_space)
    with pytest.raises(SpaceError, match="holds episodes of 'CartPole-v1', not 'Pendulum-v1'"):
        EpisodeStore.create(
            tmp_path / "s", "Pendulum-v1", pend.observation_space, pend.action_space, exist_ok=True
        )
    with pytest.raises(SpaceError, match="observation space"):
        EpisodeStore(tmp_path / "s").check_compatible(None, pend.observation_space, pend.action_space)
    assert EpisodeStore(tmp_path / "s").num_episodes() == 1

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty and is not an episode store"):
        EpisodeStore.create(other, "Pendulum-v1", pend.observation_space, pend.action_space)
    assert (other / "notes.txt").read_text() == "keep me" and len(list(other.iterdir())) == 1
    with pytest.raises(DataError, match="is not an episode store"):
        EpisodeStore(other)
    with pytest.raises(DataError, match="has no episodes"):
        _cartpole_store(tmp_path / "empty").buffer("train")
    with pytest.raises(DataError, match="unknown split"):
        EpisodeStore(tmp_path / "s").episodes("test")


def test_one_writer_at_a_time(tmp_path, cartpole_episodes):
    first = _cartpole_store(tmp_path / "s")  # create() returns the store's writer
    first.append(cartpole_episodes[0])
    second = EpisodeStore(tmp_path / "s")
    assert second.num_episodes() == 1  # readers need no lock
    with pytest.raises(ConcurrentWriterError, match=r"s is already being written by a writer of the episode"):
        second.append(cartpole_episodes[1])
    first.append(cartpole_episodes[2])  # the first writer goes on untouched
    first.close()
    second.append(cartpole_episodes[1])  # the lock is released with close()
    second.close()
    assert EpisodeStore(tmp_path / "s").num_episodes() == 3
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [".worldflux.lock", SHARD_DIR, "store.json"]


def _legacy_record(episode) -> bytes:
    """A record as stores written before content hashes and job keys hold it."""
    payload = save_safetensors_bytes(
        {
            "obs": episode.obs,
            "action": episode.action.astype(np.int64),
            "reward": episode.reward.astype(np.float32),
            "terminated": episode.terminated,
            "truncated": episode.truncated,
        },
        metadata={"split": "train", "index": "0"},
    )
    return _HEADER.pack(len(payload), hashlib.sha256(payload).digest()) + payload


def test_a_store_refuses_an_episode_it_already_holds(tmp_path, cartpole_episodes):
    a, b, c = cartpole_episodes[:3]
    with _cartpole_store(tmp_path / "s") as store:
        store.append(a)
        with pytest.raises(DuplicateEpisodeError, match="already holds this episode"):
            store.append(a)
        store.append(b, EpisodeKey("random", 0, 0))
        with pytest.raises(DuplicateEpisodeError, match="already holds episode 0 of the collection 'random'"):
            store.append(c, EpisodeKey("random", 0, 0))
        store.append(c, EpisodeKey("random", 0, 1))
        assert store.job_progress("random", 0) == (len(b) + len(c), 2)
        assert store.job_progress("random", 1) == (0, 0)
    with pytest.raises(DuplicateEpisodeError), EpisodeStore(tmp_path / "s") as store:
        store.append(b)  # also in a later session
    assert EpisodeStore(tmp_path / "s").num_episodes() == 3

    # a store written before episodes carried their hash: hashed when a writer opens it
    legacy = _cartpole_store(tmp_path / "legacy")
    legacy.close()
    (tmp_path / "legacy" / SHARD_DIR).mkdir()
    (tmp_path / "legacy" / SHARD_DIR / "00000000.wfep").write_bytes(_legacy_record(a))
    with EpisodeStore(tmp_path / "legacy") as store:
        assert store.num_episodes() == 1 and store.job_progress("random", 0) == (0, 0)
        with pytest.raises(DuplicateEpisodeError):
            store.append(a)
        store.append(b)
    assert EpisodeStore(tmp_path / "legacy").num_episodes() == 2


def _stored(directory) -> tuple[list[tuple], int]:
    """(digest, split, key) of every stored episode, and the steps, checking nothing is held twice."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a record a kill cut short is skipped with a warning
        store = EpisodeStore(directory)
        store._load()
        records = [
            (
                content_digest(_stored_arrays(e)),
                split,
                (meta.get("job"), meta.get("job_seed"), meta.get("job_episode")),
            )
            for _, split, e, meta in store._records
        ]
        steps = store.num_steps()
    digests = [r[0] for r in records]
    assert len(set(digests)) == len(digests), "an episode is stored twice"
    keys = [r[2] for r in records if r[2][0] is not None]
    assert len(set(keys)) == len(keys), "a job's episode number is stored twice"
    assert not {r[0] for r in records if r[1] == "train"} & {r[0] for r in records if r[1] == "validation"}
    return records, steps


def test_collect_steps_is_the_jobs_total_and_a_rerun_adds_nothing(tmp_path):
    directory = tmp_path / "s"
    collect_to_store("CartPole-v1", 500, directory, seed=0, num_envs=3, progress=False)
    records, steps = _stored(directory)
    assert steps == 500  # exactly, with three envs too
    shards = sorted((directory / SHARD_DIR).iterdir())
    collect_to_store("CartPole-v1", 500, directory, seed=0, num_envs=3, progress=False)
    assert _stored(directory) == (records, 500) and sorted((directory / SHARD_DIR).iterdir()) == shards
    collect_to_store("CartPole-v1", 800, directory, seed=0, progress=False)  # more of the same job
    records, steps = _stored(directory)
    assert steps == 800 and EpisodeStore(directory).job_progress("random", 0)[0] == 800
    numbers = sorted(int(r[2][2]) for r in records)
    assert numbers == list(range(len(records)))  # the job's episodes, numbered on from where they ended
    collect_to_store("CartPole-v1", 300, directory, seed=1, progress=False)  # another job: its own total
    assert _stored(directory)[1] == 1100
    collect_to_store("CartPole-v1", 100, directory, seed=0, progress=False)  # holds more already
    assert _stored(directory)[1] == 1100


def test_collect_finishes_a_store_written_before_job_keys(tmp_path):
    """A store `collect CartPole-v1 --steps 300` wrote before episodes carried keys: rerun, it is done."""
    legacy = collect_episodes("CartPole-v1", 300, seed=0, progress=False)  # the same episodes as then
    directory = tmp_path / "s"
    _cartpole_store(directory).close()
    (directory / SHARD_DIR).mkdir()
    (directory / SHARD_DIR / "00000000.wfep").write_bytes(b"".join(_legacy_record(e) for e in legacy))
    collect_to_store("CartPole-v1", 300, directory, seed=0, progress=False)
    records, steps = _stored(directory)
    assert steps == 300 and len(records) == len(legacy)  # replayed, found held, nothing added


def test_a_record_cut_short_by_a_crash_is_skipped_and_the_rest_kept(tmp_path, cartpole_episodes):
    with _cartpole_store(tmp_path / "s", fraction=0.0) as store:
        store.extend(cartpole_episodes[:3])
    (shard,) = (tmp_path / "s" / SHARD_DIR).iterdir()
    data = shard.read_bytes()
    shard.write_bytes(data[:-100])  # the third record lost its last 100 bytes mid-write
    with pytest.warns(UserWarning, match="trailing bytes"):
        survivors = EpisodeStore(tmp_path / "s").episodes()
    assert len(survivors) == 2
    _assert_same(survivors[1], cartpole_episodes[1])
    # a new session writes a new shard, after the hole (it reads the old one, so warns too)
    with pytest.warns(UserWarning), EpisodeStore(tmp_path / "s") as store:
        store.append(cartpole_episodes[3])
    assert len(list((tmp_path / "s" / SHARD_DIR).iterdir())) == 2
    with pytest.warns(UserWarning):
        assert len(EpisodeStore(tmp_path / "s").episodes()) == 3


_COLLECT_FOREVER = """
import sys
from worldflux_gym.data import collect_to_store
collect_to_store("CartPole-v1", 10_000_000, sys.argv[1], progress=False)
"""


def test_kill_9_during_collection_keeps_every_finished_episode(tmp_path):
    directory = tmp_path / "s"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _COLLECT_FOREVER, str(directory)], env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            shards = list((directory / SHARD_DIR).glob("*")) if directory.exists() else []
            if shards and shards[0].stat().st_size > 50_000:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the collection wrote nothing in 60 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with warnings.catch_warnings():
        # the kill may or may not land in the middle of a record; that record's warning is expected
        warnings.simplefilter("ignore", UserWarning)
        episodes = EpisodeStore(directory).episodes("all")
        assert len(episodes) > 10
        assert all(e.ended for e in episodes)  # only complete episodes; the ones in flight are gone
        collect_to_store("CartPole-v1", 50, directory, seed=1, progress=False)  # still takes data
        assert EpisodeStore(directory).num_episodes() > len(episodes)


def test_collect_to_store_extends_a_matching_store_and_refuses_another_env(tmp_path):
    store = collect_to_store("Pendulum-v1", 400, tmp_path / "s", progress=False)
    assert store.num_steps() == 400 and store.num_episodes() == 2
    collect_to_store("Pendulum-v1", 200, tmp_path / "s", seed=5, progress=False)
    assert EpisodeStore(tmp_path / "s").num_episodes() == 3
    with pytest.raises(SpaceError, match="holds episodes of 'Pendulum-v1'"):
        collect_to_store("CartPole-v1", 10, tmp_path / "s", progress=False)
    assert EpisodeStore(tmp_path / "s").num_episodes() == 3


@pytest.mark.filterwarnings("ignore:.*is set to None:UserWarning")  # minari's metadata advice
def test_minari_dataset_imports_into_the_store(tmp_path, monkeypatch, cartpole_episodes):
    minari = pytest.importorskip("minari")
    from minari.data_collector.episode_buffer import EpisodeBuffer as MinariEpisode

    from worldflux_gym.data.minari_import import import_minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    episodes = cartpole_episodes[:8]
    minari.create_dataset_from_buffers(
        "cartpole/worldflux-test-v0",
        [
            MinariEpisode(
                id=i,
                observations=e.obs,
                actions=e.action,
                rewards=e.reward.tolist(),
                terminations=e.terminated.tolist(),
                truncations=e.truncated.tolist(),
                infos={},
            )
            for i, e in enumerate(episodes)
        ],
        env="CartPole-v1",
    )
    store = import_minari("cartpole/worldflux-test-v0", tmp_path / "imported", progress=False)
    assert store.env_id == "CartPole-v1" and store.metadata["source"] == "minari"
    reopened = EpisodeStore(tmp_path / "imported")
    by_index = reopened.episodes("train") + reopened.episodes("validation")
    assert len(by_index) == 8 and len(reopened.episodes("validation")) == 1
    stored = sorted(by_index, key=lambda e: float(e.obs[0, 0]))
    original = sorted(episodes, key=lambda e: float(e.obs[0, 0]))
    for a, b in zip(stored, original):
        _assert_same(a, b)
    with pytest.raises(DataError, match="already holds an episode store"):
        import_minari("cartpole/worldflux-test-v0", tmp_path / "imported", progress=False)
    with pytest.raises(DataError, match="no local Minari dataset"):
        import_minari("cartpole/missing-v0", tmp_path / "other", progress=False)
    assert not Path(tmp_path / "other").exists()


def _cli(args: list[str]) -> None:
    """Run ``worldflux-gym ARGS`` in a forked child (no interpreter start-up: kills land in the work)."""
    from worldflux_gym.cli import main

    os._exit(main(args))


def _shard_bytes(directory: Path) -> int:
    shards = directory / SHARD_DIR
    return sum(p.stat().st_size for p in shards.iterdir()) if shards.is_dir() else 0


def test_collect_killed_9_again_and_again_then_rerun_ends_with_exactly_the_steps(tmp_path, capsys):
    """`collect` killed with SIGKILL at random moments and rerun with the same command each time."""
    out = tmp_path / "s"
    target = 20000  # long enough that kills land mid-job on a fast, idle machine too
    args = [
        "collect",
        "CartPole-v1",
        "--steps",
        str(target),
        "--out",
        str(out),
        "--seed",
        "7",
        "--num-envs",
        "2",
    ]
    fork = multiprocessing.get_context("fork")
    rng = random.Random(0)
    after_kill = []
    for attempt in range(8):
        child = fork.Process(target=_cli, args=(args,))
        child.start()
        if attempt == 0:  # in start-up: creating the store, taking the lock
            time.sleep(rng.uniform(0.0, 0.02))
        else:  # while writing: once this run has stored something, a little later
            before, deadline = _shard_bytes(out), time.monotonic() + 30
            while _shard_bytes(out) == before and child.is_alive() and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, 0.1))
        child.kill()  # SIGKILL; nothing if the run already ended (is_alive() may have reaped it)
        child.join()
        after_kill.append(_stored(out)[1] if (out / "store.json").exists() else 0)
    # most kills landed mid-job (a fast run may finish before its kill): the reruns had work to do
    assert sum(0 < steps < target for steps in after_kill) >= 4, after_kill
    assert after_kill == sorted(after_kill)  # nothing stored is ever lost
    capsys.readouterr()
    assert main(args) == 0  # the same command once more: it finishes the job
    assert f"({target:,} collected by this policy and seed, of --steps {target:,})" in capsys.readouterr().out
    records, steps = _stored(out)  # no episode twice, none in both splits
    assert steps == target, after_kill
    # every 10th episode held out, as if it had been collected in one go
    assert EpisodeStore(out).num_episodes("validation") == math.floor(len(records) * 0.1 + 0.5)
    shards = sorted((out / SHARD_DIR).iterdir())
    assert main(args) == 0 and sorted((out / SHARD_DIR).iterdir()) == shards  # done: nothing more
    print(f"steps after each kill: {after_kill}; episodes: {len(records)}")


def test_a_second_collect_into_the_store_is_refused_at_once_and_the_first_completes(tmp_path, capsys):
    out = tmp_path / "s"
    args = ["collect", "CartPole-v1", "--steps", "8000", "--out", str(out), "--seed", "3"]
    first = multiprocessing.get_context("fork").Process(target=_cli, args=(args,))
    first.start()
    try:
        deadline = time.monotonic() + 60
        while _shard_bytes(out) == 0 and first.is_alive() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert first.is_alive(), "the first collection ended before the second could try"
        started = time.monotonic()
        assert main(args) == 2  # the same command, a second time, while the first runs
        assert time.monotonic() - started < 5  # at once, not after waiting
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"{out} is already being written by a writer of the episode store" in err
        assert f"(pid {first.pid} on " in err  # who: the other process
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            EpisodeStore(out).episodes("all")  # a reader meanwhile: no lock, nothing written
    finally:
        first.join(timeout=120)
    assert first.exitcode == 0
    assert _stored(out)[1] == 8000
