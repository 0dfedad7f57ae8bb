"""The same seed gives the same fitted weights on CPU, for every family: the initial weights and the
updates' own randomness come from the fit's seed, not from whatever torch's RNG happened to hold."""

from __future__ import annotations

import pytest
import torch

from worldflux_gym import from_pretrained
from worldflux_gym.data import collect_to_store
from worldflux_gym.training import fit_world_model


@pytest.fixture(scope="module")
def pendulum_data(tmp_path_factory):
    # six 200-step episodes: the fifth is held out, so validation (which may choose state) runs too
    return collect_to_store("Pendulum-v1", 1200, tmp_path_factory.mktemp("data") / "p", progress=False)


def _fit(run, store, family: str, seed: int) -> dict[str, torch.Tensor]:
    fit_world_model(
        "Pendulum-v1",
        f"{family}:ci",
        run,
        data_dir=store.directory,
        steps=3,
        seed=seed,
        device="cpu",
        progress=False,
        trainer=dict(
            batch_size=4, validate_every=2, checkpoint_every=2, validation_batches=1, tensorboard=False
        ),
    )
    return from_pretrained(run, device="cpu").state_dict()


@pytest.mark.parametrize("family", ["ensemble", "dreamer", "tdmpc2"])
def test_the_same_seed_gives_the_same_fitted_weights(tmp_path, pendulum_data, family):
    torch.manual_seed(1)  # the caller's RNG differs between the two fits: it must not matter
    first = _fit(tmp_path / "a", pendulum_data, family, seed=0)
    torch.manual_seed(2)
    second = _fit(tmp_path / "b", pendulum_data, family, seed=0)
    assert first.keys() == second.keys()
    differ = [name for name in first if not torch.equal(first[name], second[name])]
    assert not differ, f"{len(differ)} of {len(first)} tensors differ: {differ[:5]}"
    other = _fit(tmp_path / "c", pendulum_data, family, seed=1)
    assert any(not torch.equal(first[name], other[name]) for name in first)  # the seed is what decides
