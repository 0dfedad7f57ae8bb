"""Hypothesis over the dream env's inputs: actions, seeds and construction options.

Each test draws values good and bad and states, independently of the code under test, which ones
the dream must take. A bad one must be refused with the project's error for it (``ActionError``,
``ConfigError``: both ``ValueError``), never with a numpy or torch error from deep inside, and a
good one must work. Examples are few (the suite runs on two cores); the shrinker still finds the
smallest failing input when something breaks.
"""

from __future__ import annotations

import functools
import math

import gymnasium as gym
import numpy as np
import torch
from dream_helpers import constant_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import worldflux_gym  # noqa: F401  (registers the ids)
from worldflux_gym.core.checkpoint import from_pretrained
from worldflux_gym.core.errors import ConfigError
from worldflux_gym.dream import ActionError, DreamEnv, DreamVectorEnv
from worldflux_gym.dream.registration import find_spec

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PENDULUM_DREAM = "WorldFlux/Ensemble-Pendulum-v0"  # Box(-2, 2, (1,)) actions, an ensemble


@functools.cache
def pendulum_env() -> gym.Env:
    return gym.make(PENDULUM_DREAM).unwrapped  # no TimeLimit: every step is the dream's own


@functools.cache
def cartpole_env() -> DreamEnv:  # Discrete(2) actions
    return DreamEnv(constant_model("CartPole-v1"), real_env="CartPole-v1")


@functools.cache
def pendulum_model():
    return from_pretrained(find_spec(PENDULUM_DREAM).checkpoint, device="cpu")


# --- actions ---------------------------------------------------------------------------------------
finite_or_not = st.floats(allow_nan=True, allow_infinity=True, width=64)


@st.composite
def box_actions(draw):
    """Arrays of any small shape and dtype with any values, Python lists, scalars, junk."""
    kind = draw(st.sampled_from(["array", "list", "other"]))
    if kind == "list":
        return draw(st.lists(st.floats(-3, 3), max_size=2))
    if kind == "other":
        return draw(
            st.one_of(st.none(), st.text(max_size=2), st.booleans(), st.integers(-3, 3), finite_or_not)
        )
    shape = draw(st.sampled_from([(), (1,), (2,), (1, 1), (0,)]))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float16, np.int64]))
    count = math.prod(shape)
    if dtype is np.int64:
        values = draw(st.lists(st.integers(-3, 3), min_size=count, max_size=count))
    else:
        values = draw(
            st.lists(st.one_of(finite_or_not, st.floats(-2.5, 2.5)), min_size=count, max_size=count)
        )
    with np.errstate(all="ignore"):  # float16 overflows to inf: one more bad value
        return np.array(values, dtype=np.float64).astype(dtype).reshape(shape)


def box_action_is_valid(action) -> bool:
    """Box(-2, 2, (1,)): a floating-point array of shape (1,), finite, inside the bounds."""
    try:
        array = np.asarray(action)
    except (TypeError, ValueError):
        return False
    return (
        array.shape == (1,)
        and array.dtype.kind == "f"
        and bool(np.isfinite(array).all())
        and bool(((array >= -2.0) & (array <= 2.0)).all())
    )


@FUZZ
@given(action=box_actions())
def test_box_actions_are_taken_or_refused_with_an_action_error(action):
    step_is_taken_or_refused(pendulum_env(), action, box_action_is_valid(action))


def step_is_taken_or_refused(env, action, valid: bool) -> None:
    """A valid action steps the env to a finite reward inside the observation space; any other is
    refused with an ``ActionError``."""
    env.reset(seed=0)
    try:
        obs, reward, terminated, truncated, _ = env.step(action)
    except ActionError:
        assert not valid, f"a valid action was refused: {action!r}"
        return
    assert valid, f"an invalid action was taken: {action!r}"
    assert env.observation_space.contains(obs) and math.isfinite(reward)


discrete_actions = st.one_of(
    st.integers(-3, 4),
    st.builds(np.int64, st.integers(-3, 4)),
    st.builds(lambda v: np.array([v]), st.integers(0, 1)),  # shape (1,): not a Discrete action
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.text(max_size=2),
)


@FUZZ
@given(action=discrete_actions)
def test_discrete_actions_are_taken_or_refused_with_an_action_error(action):
    array = np.asarray(action)
    valid = array.shape == () and array.dtype.kind in "iu" and 0 <= int(array) <= 1
    step_is_taken_or_refused(cartpole_env(), action, valid)


# --- seeds -----------------------------------------------------------------------------------------
seeds = st.one_of(
    st.integers(-(2**70), 2**70),
    st.integers(0, 2**64 - 1),
    st.builds(np.int64, st.integers(0, 2**63 - 1)),
    st.floats(allow_nan=True),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)


def seed_is_valid(seed) -> bool:
    integer = isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)
    return seed is None or (integer and 0 <= int(seed) <= 2**64 - 1)


@FUZZ
@given(seed=seeds)
def test_seeds_are_taken_or_refused_with_a_config_error_and_taken_ones_reproduce(seed):
    env = pendulum_env()
    try:
        first, _ = env.reset(seed=seed)
    except ConfigError:
        assert not seed_is_valid(seed), f"a valid seed was refused: {seed!r}"
        return
    assert seed_is_valid(seed), f"an invalid seed was taken: {seed!r}"
    assert env.observation_space.contains(first)
    if seed is not None:
        action = np.array([0.5], np.float32)
        step = env.step(action)[0]
        again, _ = env.reset(seed=seed)
        np.testing.assert_array_equal(first, again)
        np.testing.assert_array_equal(step, env.step(action)[0])


# --- construction options -------------------------------------------------------------------------
junk = st.one_of(
    st.none(), st.booleans(), st.text(max_size=2), st.sampled_from([math.nan, math.inf, -math.inf])
)
# per option: values the dream must take, and values it must refuse
OPTIONS = {
    "num_envs": (
        st.integers(1, 5),
        st.one_of(st.integers(-3, 0), st.floats(0.5, 4.5).filter(lambda v: v != int(v)), junk),
    ),
    "max_episode_steps": (
        st.one_of(st.none(), st.integers(1, 50)),
        st.one_of(st.integers(-3, 0), st.just(2.5), st.just("9")),
    ),
    "context": (
        st.integers(0, 8),
        st.one_of(st.integers(-3, -1), st.just(1.0), junk.filter(lambda v: v is not None)),
    ),
    "halt_threshold": (
        st.one_of(st.none(), st.floats(0, 1e3), st.integers(0, 5)),
        st.one_of(st.floats(-1e3, -1e-3), st.sampled_from([math.nan, math.inf]), st.just("1")),
    ),
    "uncertainty_penalty": (
        st.one_of(st.floats(0, 1e3), st.integers(0, 5)),
        st.one_of(st.floats(-1e3, -1e-3), junk),
    ),
    "halt_penalty": (st.floats(0, 1e3), st.one_of(st.floats(-1e3, -1e-3), junk)),
    "precision": (st.sampled_from(["float32", "bfloat16"]), st.sampled_from(["float16", "fp32", 32, None])),
}


@st.composite
def dream_options(draw) -> tuple[dict, str | None]:
    """Good values for every option but (at most) one, which gets a bad value; and its name."""
    bad = draw(st.sampled_from([None, None, *OPTIONS]))
    return {name: draw(OPTIONS[name][name == bad]) for name in OPTIONS}, bad


@FUZZ
@given(drawn=dream_options())
def test_options_are_taken_or_refused_where_they_are_given(drawn):
    options, bad = drawn
    num_envs = options.pop("num_envs")
    bank = np.zeros((4, 3), np.float32)
    try:
        env = DreamVectorEnv(pendulum_model(), num_envs, starts="bank", start_bank=bank, **options)
    except ConfigError as err:
        assert bad is not None, f"valid options were refused: {num_envs=}, {options}: {err}"
        assert bad in str(err), f"the error does not name {bad!r}: {err}"
        return
    assert bad is None, f"{bad}={options.get(bad, num_envs)!r} was taken"
    obs, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, _ = env.step(np.zeros((num_envs, 1), np.float32))
    assert obs.shape == (num_envs, 3) and np.isfinite(reward).all()
    assert env.dream.halt_threshold == options["halt_threshold"]
    env.close()


@settings(max_examples=15, deadline=None)
@given(rows=st.integers(0, 3), width=st.integers(0, 5), extra=st.sampled_from([(), (1,), (2,)]))
def test_start_banks_of_any_shape_are_taken_or_refused_with_a_space_error(rows, width, extra):
    from worldflux_gym.core.errors import SpaceError

    bank = np.zeros((rows, width, *extra), np.float32)
    valid = rows > 0 and width == 3 and extra == ()
    try:
        env = DreamVectorEnv(pendulum_model(), 2, starts="bank", start_bank=bank)
    except (SpaceError, ConfigError) as err:  # an empty bank of the right width is a ConfigError
        assert not valid, f"a valid bank was refused: {bank.shape}: {err}"
        return
    assert valid, f"a bank of shape {bank.shape} was taken"
    assert env.reset(seed=0)[0].shape == (2, 3)
    torch.testing.assert_close(env.dream.starts.obs, torch.zeros(rows, 3))
