"""The save format: exact round trip, atomic writes, and a clear error for every kind of damage."""

import hashlib
import json
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worldflux_gym.core import CheckpointError, TransitionBatch, create_world_model, from_pretrained
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


def _rewrite_config(directory, edit) -> None:
    """Edit config.json and, as its author could, make metadata.json's checksum agree."""
    config = json.loads((directory / "config.json").read_text())
    edit(config)
    data = json.dumps(config).encode()
    (directory / "config.json").write_bytes(data)
    meta = json.loads((directory / "metadata.json").read_text())
    meta["config_sha256"] = hashlib.sha256(data).hexdigest()
    (directory / "metadata.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("family", ["ensemble", "dreamer", "tdmpc2"])
def test_a_checkpoint_saved_before_calibrated_terminations_keeps_its_head_as_trained(
    family, pendulum_spaces, tmp_path
):
    torch.manual_seed(0)
    model = create_world_model(f"{family}:ci", *pendulum_spaces, termination_positive_weight=10.0).eval()
    assert model.config.calibrate_terminations  # new fits: probabilities corrected for the weight
    model.save_pretrained(tmp_path / "new")
    model.save_pretrained(tmp_path / "old")
    _rewrite_config(tmp_path / "old", lambda c: c["config"].pop("calibrate_terminations"))

    new, old = from_pretrained(tmp_path / "new"), from_pretrained(tmp_path / "old")
    assert new.config.calibrate_terminations and not old.config.calibrate_terminations
    with torch.no_grad():
        torch.manual_seed(1)
        obs, action = torch.randn(8, 3), torch.rand(8, 1) * 4 - 2
        logits = {}
        for name, m in (("new", new), ("old", old)):
            logits[name] = m.decode(m.transition(m.encode(obs), action, deterministic=True)).continue_logits
    # the weighted BCE inflates the odds of ending 10x; the correction takes them back
    torch.testing.assert_close(logits["new"] - logits["old"], torch.full((8,), math.log(10.0)))


def test_a_dreamer_with_standardised_observations_saves_their_statistics(pendulum_spaces, tmp_path):
    torch.manual_seed(0)
    obs = torch.randn(64, 3) * torch.tensor([0.05, 1.0, 8.0]) + torch.tensor([0.0, 0.5, -1.0])
    steps = TransitionBatch(
        obs=obs[:-1],
        action=torch.zeros(63, 1),
        reward=torch.zeros(63),
        terminated=torch.zeros(63, dtype=torch.bool),
        truncated=torch.zeros(63, dtype=torch.bool),
        next_obs=obs[1:],
    )
    model = create_world_model("dreamer:ci", *pendulum_spaces, normalize_observations=True).eval()
    model.adapt_to_data(steps)
    torch.testing.assert_close(model.obs_mean, torch.cat([obs[:-1], obs[1:]]).mean(0))
    model.save_pretrained(tmp_path)
    loaded = from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.obs_std, model.obs_std)
    assert loaded.obs_std[2] > 100 * loaded.obs_std[0]
    with torch.no_grad():
        torch.testing.assert_close(_outputs(loaded), _outputs(model))
    # by default (and in checkpoints saved before the option) observations enter in symlog
    assert not hasattr(create_world_model("dreamer:ci", *pendulum_spaces), "obs_mean")


def test_weights_of_another_shape(model, pendulum_spaces, tmp_path):
    model.save_pretrained(tmp_path)
    _rewrite_config(tmp_path, lambda config: config["config"].update(hidden=17))
    with pytest.raises(CheckpointError, match="do not fit"):
        from_pretrained(tmp_path)


def test_an_edited_config_is_refused_by_its_checksum(model, tmp_path):
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["config"]["hidden"] = 17
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="config.json does not match the checksum"):
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
    stray = sorted(tmp_path.glob(".*.pending"))
    for a, b in zip(before, _outputs(from_pretrained(tmp_path))):
        assert torch.equal(a, b)
    assert sorted(tmp_path.glob(".*.pending")) == stray  # a reader changes nothing ...
    model.save_pretrained(tmp_path)
    assert not list(tmp_path.glob(".*.pending"))  # ... the next writer removes its own leftovers


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


def _die_at_replace(monkeypatch, call: int) -> None:
    """Make the ``call``-th ``os.replace`` of the next atomic write die (1: the journal's rename,
    the commit point; 2: the first file applied, ...)."""
    real_replace = ckpt.os.replace
    calls = {"n": 0}

    def crash(src, dst):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", crash)


def test_interrupted_save_after_commit_rolls_forward(model, pendulum_spaces, tmp_path, monkeypatch):
    model.save_pretrained(tmp_path)
    other = create_world_model("tiny-mlp:ci", *pendulum_spaces)
    _die_at_replace(monkeypatch, 3)  # journal rename, first file, then die before the second
    with pytest.raises(KeyboardInterrupt):
        other.save_pretrained(tmp_path)
    monkeypatch.undo()
    for a, b in zip(_outputs(other), _outputs(from_pretrained(tmp_path))):
        assert torch.equal(a, b)


def test_readers_see_a_committed_write_that_a_kill_left_unapplied(tmp_path, monkeypatch):
    ckpt.atomic_write_files(tmp_path, {"a.json": b"old a", "b.json": b"old b"})
    _die_at_replace(monkeypatch, 2)  # the journal rename went through; die before the first file
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


# --- a checkpoint is data, never instructions --------------------------------------------------------
def _plant_journal(folder, names) -> None:
    (folder / ".save-journal.json").write_text(json.dumps({"files": names}))


HOSTILE_NAMES = {
    "absolute": lambda victim: str(victim),
    "dot-dot": lambda victim: f"../{victim.name}",
    "nested": lambda victim: f"sub/{victim.name}",
}


@pytest.mark.parametrize("how", sorted(HOSTILE_NAMES))
def test_a_journal_naming_a_file_outside_the_checkpoint_is_refused(model, tmp_path, how):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"the user's file")
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    name = HOSTILE_NAMES[how](victim)
    pending = folder / f".{name}.pending"  # where the attacker's bytes would be taken from
    pending.parent.mkdir(parents=True, exist_ok=True)
    pending.write_bytes(b"attacker's bytes")
    _plant_journal(folder, [name])
    listing = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for load in (lambda: from_pretrained(folder), lambda: ckpt.read_metadata(folder)):
        with pytest.raises(CheckpointError, match="not a plain file name"):
            load()
    with pytest.raises(CheckpointError, match="not a plain file name"):
        model.save_pretrained(folder)  # a writer refuses it too, before writing anything
    assert victim.read_bytes() == b"the user's file"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == listing


def test_a_symlinked_pending_file_is_refused_and_its_target_untouched(model, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"the user's file")
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    (folder / ".model.safetensors.pending").symlink_to(victim)
    _plant_journal(folder, ["model.safetensors"])
    with pytest.raises(CheckpointError, match="symbolic link"):
        from_pretrained(folder)
    with pytest.raises(CheckpointError, match="symbolic link"):
        model.save_pretrained(folder)
    assert victim.read_bytes() == b"the user's file"
    assert (folder / ".model.safetensors.pending").is_symlink()


def test_a_planted_pending_symlink_without_journal_is_not_written_through(model, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"the user's file")
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    (folder / ".config.json.pending").symlink_to(victim)  # no journal: a leftover of ours by name
    model.save_pretrained(folder)
    assert victim.read_bytes() == b"the user's file"
    assert not (folder / ".config.json.pending").exists()


@pytest.mark.parametrize("journal", ['{"files": "config.json"}', "[1, 2]", "not json", '{"files": [3]}'])
def test_a_malformed_journal_is_a_checkpoint_error(model, tmp_path, journal):
    model.save_pretrained(tmp_path)
    (tmp_path / ".save-journal.json").write_text(journal)
    with pytest.raises(CheckpointError, match="journal|plain file name"):
        from_pretrained(tmp_path)


def test_loading_changes_nothing_while_a_write_is_committed_but_unapplied(
    model, pendulum_spaces, tmp_path, monkeypatch
):
    model.save_pretrained(tmp_path)
    other = create_world_model("tiny-mlp:ci", *pendulum_spaces)
    _die_at_replace(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        other.save_pretrained(tmp_path)
    monkeypatch.undo()
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for a, b in zip(_outputs(other), _outputs(from_pretrained(tmp_path))):  # the committed write
        assert torch.equal(a, b)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files  # nothing moved or removed


def test_a_write_completed_between_a_readers_files_is_read_again_not_called_corrupt(
    model, pendulum_spaces, tmp_path, monkeypatch
):
    # A loaded machine: the reader has metadata.json of one write, then a whole other write is
    # applied before it reads the weights. Nothing is in progress when it compares them.
    model.save_pretrained(tmp_path)
    other = create_world_model("tiny-mlp:ci", *pendulum_spaces)
    read = ckpt.read_committed
    writes = []

    def read_after_a_write(directory, name):
        if name == ckpt.WEIGHTS_FILE and not writes:
            writes.append(other.save_pretrained(tmp_path))
        return read(directory, name)

    monkeypatch.setattr(ckpt, "read_committed", read_after_a_write)
    loaded = from_pretrained(tmp_path)
    assert writes and not ckpt.interrupted_write(tmp_path, ())
    for a, b in zip(_outputs(other), _outputs(loaded)):  # the newer write, whole
        assert torch.equal(a, b)


def test_a_users_own_pending_file_survives_writes(model, tmp_path):
    (tmp_path / ".notes.pending").write_bytes(b"mine")
    model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    ckpt.recover_interrupted_write(tmp_path)
    assert (tmp_path / ".notes.pending").read_bytes() == b"mine"


# --- malformed files: a CheckpointError that names the file and field --------------------------------
def _edit_json(path, edit) -> None:
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


CONFIG_DAMAGE = {
    "invalid JSON": (lambda c: None, "not valid JSON"),
    "no family": (lambda c: {k: v for k, v in c.items() if k != "family"}, "'family'"),
    "no config": (lambda c: {k: v for k, v in c.items() if k != "config"}, "'config'"),
    "no observation space": (
        lambda c: {k: v for k, v in c.items() if k != "observation_space"},
        "'observation_space'",
    ),
    "hidden a string": (
        lambda c: {**c, "config": {**c["config"], "hidden": "32"}},
        "'hidden' must be an integer",
    ),
    "hidden a float": (
        lambda c: {**c, "config": {**c["config"], "hidden": 1.5}},
        "'hidden' must be an integer",
    ),
    "hidden null": (
        lambda c: {**c, "config": {**c["config"], "hidden": None}},
        "'hidden' must be an integer",
    ),
    "hidden huge": (lambda c: {**c, "config": {**c["config"], "hidden": 10**9}}, "larger than the"),
    "layers huge": (lambda c: {**c, "config": {**c["config"], "layers": 10**6}}, "larger than the"),
    "unknown family": (lambda c: {**c, "family": "nope"}, "config.json"),
}


@pytest.mark.parametrize("damage", sorted(CONFIG_DAMAGE))
def test_a_malformed_config_is_a_checkpoint_error(model, tmp_path, damage):
    edit, message = CONFIG_DAMAGE[damage]
    model.save_pretrained(tmp_path)
    if damage == "invalid JSON":
        data = b"{not json"
        (tmp_path / "config.json").write_bytes(data)
        meta = json.loads((tmp_path / "metadata.json").read_text())
        meta["config_sha256"] = hashlib.sha256(data).hexdigest()
        (tmp_path / "metadata.json").write_text(json.dumps(meta))
    else:
        _rewrite_config(tmp_path, lambda config: _replace(config, edit(dict(config))))
    with pytest.raises(CheckpointError, match=message) as err:
        from_pretrained(tmp_path)
    assert "config.json" in str(err.value)


def _replace(config: dict, new: dict) -> None:
    config.clear()
    config.update(new)


def test_a_config_that_is_a_json_list_is_a_checkpoint_error(model, tmp_path):
    model.save_pretrained(tmp_path)
    data = b"[1, 2]"
    (tmp_path / "config.json").write_bytes(data)
    _edit_json(tmp_path / "metadata.json", lambda m: {**m, "config_sha256": hashlib.sha256(data).hexdigest()})
    with pytest.raises(CheckpointError, match="config.json must hold a JSON object"):
        from_pretrained(tmp_path)


METADATA_DAMAGE = {
    "no weights checksum": (
        lambda m: {k: v for k, v in m.items() if k != "weights_sha256"},
        "'weights_sha256'",
    ),
    "no fingerprint": (
        lambda m: {k: v for k, v in m.items() if k != "contract_fingerprint"},
        "'contract_fingerprint'",
    ),
    "a list": (lambda m: [m], "JSON object"),
    "checksum a number": (lambda m: {**m, "weights_sha256": 5}, "'weights_sha256' must be a str"),
}


@pytest.mark.parametrize("damage", sorted(METADATA_DAMAGE))
def test_malformed_metadata_is_a_checkpoint_error(model, tmp_path, damage):
    edit, message = METADATA_DAMAGE[damage]
    model.save_pretrained(tmp_path)
    _edit_json(tmp_path / "metadata.json", edit)
    with pytest.raises(CheckpointError, match=message) as err:
        from_pretrained(tmp_path)
    assert "metadata.json" in str(err.value)


def test_a_checkpoint_of_format_1_without_a_config_checksum_still_loads(model, tmp_path):
    model.save_pretrained(tmp_path)
    _edit_json(
        tmp_path / "metadata.json",
        lambda m: {**{k: v for k, v in m.items() if k != "config_sha256"}, "format_version": 1},
    )
    for a, b in zip(_outputs(model), _outputs(from_pretrained(tmp_path))):
        assert torch.equal(a, b)


# --- fuzz: any JSON in any field of config.json / metadata.json ends in a CheckpointError or a load --
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    file=st.sampled_from(["config.json", "metadata.json"]),
    path=st.sampled_from(
        [
            (),
            ("family",),
            ("preset",),
            ("config",),
            ("config", "hidden"),
            ("config", "layers"),
            ("observation_space",),
            ("action_space",),
            ("format_version",),
            ("weights_sha256",),
            ("contract_fingerprint",),
            ("config_sha256",),
        ]
    ),
    value=_JSON,
)
def test_any_json_in_a_checkpoint_file_is_refused_cleanly_or_loads(
    model, tmp_path_factory, file, path, value
):
    folder = tmp_path_factory.mktemp("fuzz")
    model.save_pretrained(folder)

    def edit(doc):
        if not path:
            return value
        target = doc
        for key in path[:-1]:
            target = target.setdefault(key, {}) if isinstance(target, dict) else target
        if isinstance(target, dict):
            target[path[-1]] = value
        return doc

    if file == "config.json":
        _rewrite_config(
            folder, lambda config: _replace(config, e) if isinstance(e := edit(dict(config)), dict) else None
        )
        if not path:  # the whole file replaced by a JSON value that may not be an object
            data = json.dumps(value).encode()
            (folder / "config.json").write_bytes(data)
            _edit_json(
                folder / "metadata.json", lambda m: {**m, "config_sha256": hashlib.sha256(data).hexdigest()}
            )
    else:
        _edit_json(folder / "metadata.json", edit)
    try:
        loaded = from_pretrained(folder, device="cpu")
    except CheckpointError:
        return
    assert type(loaded) is type(model)  # what loads is the model that was saved
