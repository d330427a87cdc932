"""Reversible Heun (Kidger et al. 2021, "Efficient and accurate gradients for neural SDEs"):
an algebraically reversible, second-order scheme for dx/dt = v(x, t).

It carries the solution x and a companion x_hat. With v_hat = v(x_hat, t), one step of
signed size h = t_next - t is

    x_hat' = 2 x - x_hat + h v_hat
    x'     = x + h/2 (v_hat + v(x_hat', t_next)),

one evaluation per step (v(x_hat', t_next) is the next step's v_hat). Solved for (x, x_hat),
the step is the same rule with step -h, so running the scheme back over the reversed grid
from (x', x_hat') recovers (x, x_hat) exactly up to floating-point rounding, at any number
of steps: inversion data -> noise -> data is exact when the pair is kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from samplax.checks import check_choice
from samplax.pytrees import static_field
from samplax.solvers.base import GridSolver

__all__ = ["ReversibleState", "ReversibleHeun"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ReversibleState:
    """The pair a reversible solve carries: the solution `x` and its companion `x_hat`;
    `times` is the grid (from noise to data) that `reversible_invert` ran over, so that
    `reversible_sample` can refuse another one (None for a pair made otherwise)."""

    x: jax.Array
    x_hat: jax.Array
    times: jax.Array | None = None

    @classmethod
    def start(cls, x: jax.Array) -> ReversibleState:
        """The state at the start of a solve from x alone (x_hat = x)."""
        return cls(x, x)

    def scaled(self, factor) -> ReversibleState:
        return ReversibleState(self.x * factor, self.x_hat * factor, self.times)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ReversibleHeun(GridSolver):
    """Reversible Heun on the velocity. `solve` runs any grid, decreasing (sampling) or
    increasing (inversion); the reverse of a solve is a solve over the reversed grid.
    It carries a companion state, so it runs through `solve` rather than a Plan."""

    prediction: str = static_field("velocity")

    reversible = True

    def __post_init__(self):
        super().__post_init__()
        check_choice("prediction", self.prediction, ("velocity",))

    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        """One evaluation per step, plus one for v_hat at the start (and one for the
        final denoising step, where asked)."""
        return steps + 1 + int(denoise_to_zero)

    def start(self, predict, state: ReversibleState, t):
        """The carry (x, x_hat, v_hat) at the start of a solve at time t."""
        return state.x, state.x_hat, predict(state.x_hat, t).astype(state.x.dtype)

    def step(self, predict, carry, row):
        """One step of the scheme over `row` = (h, t_next), with h = t_next - t."""
        x, x_hat, v_hat = carry
        h, t_next = row
        h = h.astype(x.dtype)
        x_hat_next = 2.0 * x - x_hat + h * v_hat
        v_hat_next = predict(x_hat_next, t_next).astype(x.dtype)
        return _trapezoid(x, h, v_hat, v_hat_next), x_hat_next, v_hat_next

    def unstep(self, predict, carry, row):
        """The carry before `step(predict, ., row)` from the carry after it: the same rule
        with step -h, exact up to rounding."""
        x_next, x_hat_next, v_hat_next = carry
        h, t_next = row
        h = h.astype(x_next.dtype)
        x_hat = 2.0 * x_next - x_hat_next - h * v_hat_next
        v_hat = predict(x_hat, t_next - h).astype(x_next.dtype)
        return _trapezoid(x_next, -h, v_hat_next, v_hat), x_hat, v_hat

    @staticmethod
    def rows(times: jax.Array):
        """The scan rows (h, t_next) of a solve over `times`."""
        times = jnp.asarray(times)
        return times[1:] - times[:-1], times[1:]

    def solve(
        self,
        predict: Callable[[jax.Array, jax.Array], jax.Array],
        state: ReversibleState,
        times: jax.Array,
        return_trajectory: bool = False,
        checkpoint: bool = False,
    ):
        """Integrate `state` over `times` (steps + 1 points). Returns (state, trajectory),
        the trajectory being the solution x after every step, or None. With `checkpoint`,
        each step is recomputed in the backward pass instead of stored (`jax.checkpoint`)."""
        times = jnp.asarray(times)

        def step(carry, row):
            carry = self.step(predict, carry, row)
            return carry, (carry[0] if return_trajectory else None)

        if checkpoint:
            step = jax.checkpoint(step, prevent_cse=False)
        (x, x_hat, _), trajectory = jax.lax.scan(step, self.start(predict, state, times[0]), self.rows(times))
        return ReversibleState(x, x_hat), trajectory


def _trapezoid(x, h, v_hat, v_hat_next):
    """The solution's update of reversible Heun: the trapezoidal rule on the companion's velocities."""
    return x + 0.5 * h * (v_hat + v_hat_next)


# The registry names of these solvers (samplax.solvers.get).
SOLVERS = {
    "reversible-heun": ReversibleHeun(),
}
