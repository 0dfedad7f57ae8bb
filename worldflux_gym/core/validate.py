"""Checks of user-given options, shared by the Python API and the command line.

Each check takes the value and the name the user gave it by (``"steps"``, ``"--steps"``), returns the
value in its plain Python type, and raises :class:`~worldflux_gym.core.errors.ConfigError` (a
``ValueError``) with one line that names the option, what was wrong and what is accepted. Options
are checked where they are given (config dataclasses, ``__init__``, argument parsing), so a bad one
never runs into a numpy or torch error deep inside.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from worldflux_gym.core.errors import ConfigError

SEED_MAX = 2**64 - 1  # the largest seed torch, numpy and Gymnasium all take


def _show(value: Any) -> str:
    return repr(value) if not isinstance(value, (int, float)) or isinstance(value, bool) else str(value)


def is_int(value: Any) -> bool:
    """A Python or numpy integer, not a bool (``True`` is an ``int`` to Python, never a count here)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]``; floats (even ``2.0``), bools, strings refused."""
    bounds = _bounds_text(minimum, maximum)
    if not is_int(value):
        raise ConfigError(f"{name} must be an integer{bounds}, got {_show(value)} ({type(value).__name__})")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ConfigError(f"{name} must be an integer{bounds}, got {value}")
    return value


def check_positive_int(value: Any, name: str) -> int:
    return check_int(value, name, minimum=1)


def check_optional_positive_int(value: Any, name: str) -> int | None:
    return None if value is None else check_int(value, name, minimum=1)


def check_float(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
) -> float:
    """``value`` as a finite ``float`` within the bounds; NaN, inf, bools and strings are refused."""
    low = "" if minimum is None else (f" > {minimum:g}" if exclusive_minimum else f" >= {minimum:g}")
    high = "" if maximum is None else f" <= {maximum:g}"
    wanted = f"a finite number{low}{' and' if low and high else ''}{high}"
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ConfigError(f"{name} must be {wanted}, got {_show(value)} ({type(value).__name__})")
    value = float(value)
    too_low = minimum is not None and (value <= minimum if exclusive_minimum else value < minimum)
    if not math.isfinite(value) or too_low or (maximum is not None and value > maximum):
        raise ConfigError(f"{name} must be {wanted}, got {value}")
    return value


def check_positive_float(value: Any, name: str) -> float:
    return check_float(value, name, minimum=0.0, exclusive_minimum=True)


def check_seed(seed: Any, name: str = "seed") -> int:
    """A seed: an integer from 0 to 2**64 - 1 (what torch, numpy and Gymnasium all accept)."""
    if not is_int(seed) or not 0 <= int(seed) <= SEED_MAX:
        raise ConfigError(
            f"{name} must be an integer from 0 to 2**64 - 1, got {_show(seed)}"
            + ("" if is_int(seed) else f" ({type(seed).__name__})")
        )
    return int(seed)


def _bounds_text(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum} to {maximum}"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""
