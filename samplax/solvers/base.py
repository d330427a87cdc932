"""What every solver is, and the string registry that command lines and configs use."""

from __future__ import annotations

import abc
from typing import Callable, ClassVar

import jax

from samplax.schedules import Schedule
from samplax.solvers.engine import Plan

__all__ = ["FixedGridSolver", "AdaptiveSolver", "register", "get", "names"]


class FixedGridSolver(abc.ABC):
    """A solver that runs on a given time grid. Subclasses are frozen dataclasses of
    hyperparameters; `plan` turns (schedule, grid) into the coefficients the engine runs.

    `prediction` is what the solver integrates: "data", "noise" or "velocity".
    """

    prediction: ClassVar[str] | str
    adaptive: ClassVar[bool] = False

    @abc.abstractmethod
    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        """Coefficients for a solve over `times` (steps + 1 points). With denoise_to_zero,
        one more evaluation at times[-1] returns the data prediction there."""

    @abc.abstractmethod
    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        """Number of model evaluations for `steps` grid intervals."""

    def min_steps(self) -> int:
        """The fewest grid intervals this solver accepts."""
        return 1


class AdaptiveSolver(abc.ABC):
    """A solver that chooses its own steps to meet a tolerance."""

    prediction: ClassVar[str] | str
    adaptive: ClassVar[bool] = True

    @abc.abstractmethod
    def solve(
        self,
        predict: Callable[[jax.Array, jax.Array], jax.Array],
        schedule: Schedule,
        x: jax.Array,
        t_start,
        t_end,
    ):
        """Integrate from t_start to t_end; returns (x_end, evaluations per sample)."""


_REGISTRY: dict[str, Callable[[], object]] = {}


def register(name: str, factory: Callable[[], object]) -> None:
    """Make `get(name)` return `factory()`. Names are lower-case and unique."""
    if name in _REGISTRY:
        raise ValueError(f"solver name {name!r} is already registered")
    _REGISTRY[name] = factory


def names() -> list[str]:
    """All registered solver names."""
    return sorted(_REGISTRY)


def get(name: str):
    """The solver registered as `name`, e.g. "dpm++2m" or "ddim"."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown solver {name!r}; known solvers: {', '.join(names())}")
    return _REGISTRY[name]()
