"""The save format: exact round trip, atomic writes, and a clear error for every kind of damage."""

import json
import os

import pytest
import torch

from worldflux_gym.core import CheckpointError, create_world_model, from_pretrained
from worldflux_gym.core import checkpoint as ckpt


@pytest.fixture
def model(pendulum_spaces):
    torch.manual_seed(0)
    return create_world_model("tiny-mlp:ci", *pendulum_spaces)


def _outputs(model):
    torch.manual_seed(1)
    obs, action = torch.randn(8, 3), torch.rand(8, 1) * 4 - 2
    out = model.decode(model.transition(model.encode(obs), action))
    return out.obs, out.reward, out.continue_logits


def test_round_trip_reproduces_outputs_exactly(model, tmp_path):
    model.save_pretrained(tmp_path / "run")
    assert sorted(os.listdir(tmp_path / "run")) == ["config.json", "metadata.json", "model.safetensors"]
    loaded = from_pretrained(tmp_path / "run", device="cpu")
    assert type(loaded) is type(model) and loaded.preset == "ci"
    assert loaded.observation_space == model.observation_space
    for a, b in zip(_outputs(model), _outputs(loaded)):
        assert torch.equal(a, b)
    meta = json.loads((tmp_path / "run" / "metadata.json").read_text())
    assert meta["format_version"] == ckpt.FORMAT_VERSION and meta["family"] == "tiny-mlp"
    assert meta["contract_fingerprint"] == model.contract_fingerprint()
    assert {"library_version", "created_at", "observation_space", "action_space"} <= set(meta)


def test_overrides_survive_the_round_trip(pendulum_spaces, tmp_path):
    model = create_world_model("tiny-mlp:ci", *pendulum_spaces, hidden=24)
    model.save_pretrained(tmp_path)
    assert from_pretrained(tmp_path).config.hidden == 24


def test_missing_directory_and_files(model, tmp_path):
    with pytest.raises(CheckpointError, match="worldflux-gym fit"):
        from_pretrained(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="metadata.json is missing"):
        from_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing model.safetensors"):
        from_pretrained(tmp_path)


def test_truncated_or_corrupted_weights(model, tmp_path):
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        from_pretrained(tmp_path)
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    weights.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        from_pretrained(tmp_path)


def test_other_format_version(model, tmp_path):
    model.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version 99"):
        from_pretrained(tmp_path)


def test_fingerprint_mismatch(model, tmp_path):
    model.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    meta["contract_fingerprint"] = "0" * 64
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="different I/O contract"):
        from_pretrained(tmp_path)


def test_weights_of_another_shape(model, pendulum_spaces, tmp_path):
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["config"]["hidden"] = 17
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not fit"):
        from_pretrained(tmp_path)


def _kill_before_commit(monkeypatch) -> None:
    """Make the next atomic write die when it writes its journal (the commit point)."""
    real_write = ckpt._fsync_write

    def crash_on_journal(path, data):
        if "journal" in path.name:
            raise KeyboardInterrupt("killed")
        real_write(path, data)

    monkeypatch.setattr(ckpt, "_fsync_write", crash_on_journal)


def test_interrupted_save_before_commit_keeps_previous_checkpoint(
    model, pendulum_spaces, tmp_path, monkeypatch
):
    model.save_pretrained(tmp_path)
    before = _outputs(model)
    other = create_world_model("tiny-mlp:ci", *pendulum_spaces)
    _kill_before_commit(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        other.save_pretrained(tmp_path)
    monkeypatch.undo()
    for a, b in zip(before, _outputs(from_pretrained(tmp_path))):
        assert torch.equal(a, b)
    assert not list(tmp_path.glob(".*.pending"))


def test_extra_files_are_written_with_the_model_or_not_at_all(model, pendulum_spaces, tmp_path, monkeypatch):
    model.save_pretrained(tmp_path, extra_files={"notes.json": b'{"round": 1}'})
    assert (tmp_path / "notes.json").read_bytes() == b'{"round": 1}'
    other = create_world_model("tiny-mlp:ci", *pendulum_spaces)
    _kill_before_commit(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        other.save_pretrained(tmp_path, extra_files={"notes.json": b'{"round": 2}'})
    monkeypatch.undo()
    assert (tmp_path / "notes.json").read_bytes() == b'{"round": 1}'  # neither file of round 2
    for a, b in zip(_outputs(model), _outputs(from_pretrained(tmp_path))):
        assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match="config.json"):
        model.save_pretrained(tmp_path, extra_files={"config.json": b"{}"})


def test_interrupted_save_after_commit_rolls_forward(model, pendulum_spaces, tmp_path, monkeypatch):
    model.save_pretrained(tmp_path)
    other = create_world_model("tiny-mlp:ci", *pendulum_spaces)
    real_replace = os.replace
    calls = {"n": 0}

    def crash_midway(src, dst):
        calls["n"] += 1
        if calls["n"] == 3:  # journal rename, first file, then die before the second
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        other.save_pretrained(tmp_path)
    monkeypatch.undo()
    for a, b in zip(_outputs(other), _outputs(from_pretrained(tmp_path))):
        assert torch.equal(a, b)


def test_readers_see_a_committed_write_that_a_kill_left_unapplied(tmp_path, monkeypatch):
    ckpt.atomic_write_files(tmp_path, {"a.json": b"old a", "b.json": b"old b"})
    real_replace = ckpt.os.replace
    calls = {"n": 0}

    def crash_after_commit(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # the journal rename went through; die before the first file is applied
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", crash_after_commit)
    with pytest.raises(KeyboardInterrupt):
        ckpt.atomic_write_files(tmp_path, {"a.json": b"new a", "b.json": b"new b"})
    monkeypatch.undo()
    assert (tmp_path / "a.json").read_bytes() == b"old a"  # not applied on disk yet ...
    before = sorted(p.name for p in tmp_path.iterdir())
    assert ckpt.read_committed(tmp_path, "a.json") == b"new a"  # ... but committed: readers see it
    assert ckpt.read_committed(tmp_path, "b.json") == b"new b"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # and reading changed nothing
    ckpt.recover_interrupted_write(tmp_path)
    assert (tmp_path / "a.json").read_bytes() == b"new a" == ckpt.read_committed(tmp_path, "a.json")
