"""Argument checks shared by every layer (solvers, schedules, samplers, models): each
raises an error that names the argument, the value given and what is accepted.

`check_fields` checks a frozen dataclass's fields against their declared types, so that a
solver, a noise source or a schedule refuses `eta="0.5"` or `lower_order_final="no"` when
it is built rather than failing (or silently misbehaving) inside a compiled solve.
"""

from __future__ import annotations

import dataclasses
import inspect
import os

import jax
import numpy as np

__all__ = [
    "check_callable_as", "check_choice", "check_count", "check_fields", "check_flag", "check_interval", "check_path",
    "check_positive", "check_real", "check_static_real",
]


def check_callable_as(name: str, function, arguments: tuple[str, ...], keywords=(), call: str | None = None) -> None:
    """A function of the user's (called `name` in messages) that samplax calls as
    `call(*arguments, **keywords)`: callable, and (where its signature can be read) able
    to take them."""
    if not callable(function):
        raise TypeError(f"{name} must be a function, got {type(function).__name__}")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*arguments, **dict.fromkeys(keywords))
    except TypeError as error:
        listed = ", ".join([*arguments, *(f"{key}=..." for key in keywords)])
        raise TypeError(f"{name} must be callable as {call or name}({listed}), but {error} (its signature is "
                        f"{signature})") from None


def check_choice(name: str, value, accepted) -> None:
    """Raise a ValueError naming the argument, its value and the accepted values."""
    if value not in accepted:
        raise ValueError(f"{name} must be one of {tuple(accepted)}, got {value!r}")


def check_real(name: str, value, scalar: bool = True) -> None:
    """A finite real number (Python, NumPy or a 0-d array; with `scalar` False, also an
    array of them), not a string, a bool or None. Traced values are not checked."""
    if isinstance(value, jax.core.Tracer):
        return
    array = None if isinstance(value, (bool, str, bytes)) or value is None else np.asarray(value)
    if array is None or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    if scalar and array.ndim:
        raise ValueError(f"{name} must be a single number, got an array of shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {value!r}")


def check_static_real(name: str, value) -> None:
    """A finite real number that is hashed as part of an object's structure (a static
    field): a Python or NumPy number, not a jax array (which cannot be hashed)."""
    if isinstance(value, jax.Array):
        raise TypeError(f"{name} must be a Python or NumPy number (it is a static setting, hashed and never traced), "
                        f"got a jax array {value!r}; use float(...)")
    check_real(name, value)


def check_interval(name: str, value, infinite_high: bool = False) -> None:
    """A (low, high) tuple of numbers with 0 <= low < high (high may be inf with
    `infinite_high`), such as a range of noise levels."""
    if not (isinstance(value, tuple) and len(value) == 2):
        raise TypeError(f"{name} must be a (low, high) tuple, got {value!r} ({type(value).__name__})")
    low, high = value
    check_static_real(f"{name} low", low)
    if not (infinite_high and isinstance(high, (int, float)) and high == float("inf")):
        check_static_real(f"{name} high", high)
    if not 0 <= low < high:
        raise ValueError(f"{name} must satisfy 0 <= low < high, got {value}")


def check_positive(name: str, value, allow_zero: bool = False) -> None:
    """A hyperparameter such as a learning rate: a positive (or, with `allow_zero`,
    non-negative) finite number."""
    check_real(name, value)
    if isinstance(value, jax.core.Tracer):
        return
    if not (value > 0 or (allow_zero and value == 0)):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {kind} finite number, got {value!r}")


def check_count(name: str, value, minimum: int = 1) -> int:
    """A count such as a number of iterations: an integer (not a bool) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def check_flag(name: str, value) -> None:
    """A switch: True or False, not a string or a number standing for one."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def check_path(name: str, path) -> None:
    """A file path: a str or os.PathLike (an integer would be taken as a file descriptor)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path (str or os.PathLike), got {path!r} ({type(path).__name__})")


def _check_integer(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")


def _check_string(name: str, value) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {value!r} ({type(value).__name__})")


_TYPE_CHECKS = {"float": check_static_real, "int": _check_integer, "bool": check_flag, "str": _check_string}


def check_fields(instance) -> None:
    """Check every field of a dataclass declared `float`, `int`, `bool` or `str` (or one of
    those `| None`) against its type; a float must also be finite and not a jax array (the
    fields this is used for are static, so they are hashed), except +inf in a field the
    class lists in `unbounded_fields` (an upper limit that may be absent). Fields of other
    types are left to the class. Ranges are the class's own checks, which run after this."""
    unbounded = getattr(instance, "unbounded_fields", ())
    for field in dataclasses.fields(instance):
        declared = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
        optional = declared.endswith(" | None")
        check = _TYPE_CHECKS.get(declared.removesuffix(" | None"))
        value = getattr(instance, field.name)
        if check is None or (optional and value is None) or (field.name in unbounded and value == float("inf")):
            continue
        check(f"{type(instance).__name__}.{field.name}", value)
