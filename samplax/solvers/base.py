"""What every solver is and declares about itself, so that callers (sample(), the command
line, benchmarks, tuning, UniC) ask the solver instead of testing its class or its name.

Every solver is a frozen dataclass registered as a pytree whose fields are static
hyperparameters. It declares:

- `prediction`: what it integrates, "data", "noise" or "velocity" (a static field of every
  solver, except UniC, which works in its predictor's);
- `adaptive`: it chooses its own steps (`AdaptiveSolver`) instead of running a grid;
- `reversible`: it carries a companion state that makes its solve invertible exactly;
- `stochastic`: it draws noise along the solve;
- `multistep`: one evaluation per step, reusing past predictions (what UniC corrects);
- `lower_order_final`: it lowers its order over the last steps;
- `evaluations_per_step`: model evaluations in every step, or None where steps share
  evaluations or differ in cost;
- `evaluations(steps, denoise_to_zero)` and its inverse `steps_for(nfe, denoise_to_zero)`;
- `check_end_points(schedule, t_start, t_end)`: what it cannot run between (its
  hyperparameters against the schedule's range).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

import jax

from samplax.checks import check_fields
from samplax.schedules import Schedule
from samplax.solvers.engine import Plan

__all__ = ["AdaptiveSolver", "FixedGridSolver", "GridSolver", "Solver"]


class Solver(abc.ABC):
    """What every solver declares (the defaults; solvers override what differs)."""

    prediction: str
    adaptive: ClassVar[bool] = False
    reversible: ClassVar[bool] = False
    stochastic: ClassVar[bool] = False
    multistep: ClassVar[bool] = False
    lower_order_final: ClassVar[bool] = False
    evaluations_per_step: ClassVar[int | None] = None

    def __post_init__(self):
        """Every hyperparameter against its declared type (a subclass's own checks of
        ranges run after this, through super().__post_init__())."""
        check_fields(self)

    def check_end_points(self, schedule: Schedule, t_start: float, t_end: float) -> None:
        """Raise a ValueError naming the problem if this solver cannot run from t_start to
        t_end on `schedule` (concrete end points; nothing is refused by default)."""
        del schedule, t_start, t_end


class GridSolver(Solver):
    """A solver that runs on a given time grid of `steps` intervals."""

    @abc.abstractmethod
    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        """Number of model evaluations for `steps` grid intervals."""

    def min_steps(self) -> int:
        """The fewest grid intervals this solver accepts."""
        return 1

    def steps_for(self, nfe: int, denoise_to_zero: bool = False) -> int | None:
        """The number of grid intervals at which this solver makes exactly `nfe` model
        evaluations, or None where no number does (a method with several evaluations per
        step reaches only some NFEs)."""
        for steps in range(self.min_steps(), nfe + 1):
            if self.evaluations(steps, denoise_to_zero) == nfe:
                return steps
        return None


class FixedGridSolver(GridSolver):
    """A grid solver that the scan engine runs: `plan` turns (schedule, grid) into the
    coefficients of every stage."""

    @abc.abstractmethod
    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        """Coefficients for a solve over `times` (steps + 1 points). With denoise_to_zero,
        one more evaluation at times[-1] returns the data prediction there."""


class AdaptiveSolver(Solver):
    """A solver that chooses its own steps to meet a tolerance."""

    adaptive = True

    @abc.abstractmethod
    def solve(
        self,
        predict: Callable[[jax.Array, jax.Array], jax.Array],
        schedule: Schedule,
        x: jax.Array,
        t_start,
        t_end,
    ):
        """Integrate from t_start to t_end; returns (x_end, evaluations per sample, reached
        per sample: whether the solve got to t_end before its step or attempt limit)."""
