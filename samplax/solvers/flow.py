"""Solvers for flow models: explicit Runge-Kutta methods on the velocity dx/dt, RF-Solver,
FireFlow, and adaptive diffrax solves for reference.

All consume prediction="velocity" (`Denoiser.velocity`, dx/dt along the schedule; on the
rectified-flow path dx/dt = noise - x0) and, except the adaptive ones, compile to one
engine `Plan`: a step of signed size h = t_next - t only ever forms states
x + h * sum_j a_j v_j, so every stage is a row of coefficients and the same plan runs a
decreasing grid (sampling) or an increasing one (inversion).

- Euler, Heun (explicit trapezoid), midpoint and classical RK4, from their Butcher tableaux.
- RF-Solver (Wang et al. 2024, "Taming rectified flow for inversion and editing"): the
  Taylor step x + h v + h^2/2 v' (+ h^3/6 v''), the time derivatives of the velocity along
  the trajectory estimated by finite differences of velocities inside the step. Order 2
  uses a half step (two evaluations) and is algebraically the midpoint rule; order 3 adds
  an evaluation at the end of the step (three evaluations), which makes it Kutta's
  third-order rule.
- FireFlow (Deng et al. 2025): the midpoint rule whose start-of-step velocity is the
  previous step's midpoint velocity, so N steps cost N + 1 evaluations; and a third-order
  extension at the same cost that interpolates the velocities it has already computed.
"""

from __future__ import annotations

import dataclasses

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from samplax.checks import check_choice, check_count
from samplax.pytrees import static_field
from samplax.schedules import Schedule
from samplax.solvers.base import AdaptiveSolver, FixedGridSolver
from samplax.solvers.engine import Plan, PlanBuilder
from samplax.solvers.toolkit import TABLEAUX, OneStepMethod, append_denoising_stage, one_step_plan, stage_times

__all__ = ["RungeKutta", "RFSolver", "FireFlow", "FlowAdaptive", "FLOW_TABLEAUX"]

FLOW_TABLEAUX = ("euler", "heun", "midpoint", "rk4")  # the methods of RungeKutta


class _VelocitySolver(FixedGridSolver):
    """Shared pieces of the one-step velocity solvers: `stages` evaluations per step."""

    def __post_init__(self):
        super().__post_init__()
        check_choice("prediction", self.prediction, ("velocity",))

    @property
    def evaluations_per_step(self) -> int:
        return self.stages

    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        return self.stages * steps + int(denoise_to_zero)

    def _explicit_plan(self, schedule, times, denoise_to_zero, nodes, inputs, weights):
        """Plan of a one-step method with `nodes` c (stage times t + c h), stage inputs
        x + h sum_l inputs[j][l] v_l and final update x + h sum_l weights[l] v_l, where
        inputs and weights are functions of h (arrays over steps) or constants."""
        h = times[1:] - times[:-1]
        method = OneStepMethod(
            node_times=(times[:-1, None] + h[:, None] * jnp.asarray(nodes, h.dtype)[None]).reshape(-1),
            a=inputs,
            b=weights,
            input_states=(1.0,) * len(nodes),
            input_scales=(h,) * len(nodes),
            update_state=1.0,
            update_scale=h,
        )
        return one_step_plan(schedule, times, denoise_to_zero, self.prediction, method)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RungeKutta(_VelocitySolver):
    """An explicit Runge-Kutta method on dx/dt = v(x, t).

    Attributes:
        method: "euler" (order 1), "heun" (explicit trapezoid, order 2), "midpoint"
            (order 2) or "rk4" (classical fourth order).
    """

    method: str = static_field("euler")
    prediction: str = static_field("velocity")

    def __post_init__(self):
        super().__post_init__()
        check_choice("method", self.method, FLOW_TABLEAUX)

    @property
    def stages(self) -> int:
        return TABLEAUX[self.method].stages

    @property
    def order(self) -> int:
        return TABLEAUX[self.method].order

    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        tableau = TABLEAUX[self.method]
        return self._explicit_plan(schedule, times, denoise_to_zero, tableau.c, tableau.a, tableau.b)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RFSolver(_VelocitySolver):
    """RF-Solver (Wang et al. 2024): a Taylor step in t whose velocity derivatives are
    finite differences of velocities along the trajectory.

    Order 2 evaluates v0 at (x, t) and v_mid at (x + h/2 v0, t + h/2) and steps
    x + h v0 + h^2/2 (v_mid - v0) / (h/2), which equals the midpoint rule. Order 3 also
    evaluates v1 at (x + h (2 v_mid - v0), t + h), estimates v' = (4 v_mid - 3 v0 - v1) / h
    and v'' = 4 (v1 - 2 v_mid + v0) / h^2, and steps x + h v0 + h^2/2 v' + h^3/6 v''
    (the stage points are those of Kutta's third-order rule, which the step reduces to).

    Attributes:
        order: 2 or 3.
    """

    order: int = static_field(2)
    prediction: str = static_field("velocity")

    def __post_init__(self):
        super().__post_init__()
        check_choice("RF-Solver order", self.order, (2, 3))

    @property
    def stages(self) -> int:
        return self.order

    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        h = times[1:] - times[:-1]
        one = jnp.ones_like(h)
        if self.order == 2:
            half = 0.5 * h
            taylor_2 = 0.5 * h**2
            # x + h v0 + taylor_2 * (v_mid - v0) / half, as weights of (v0, v_mid) over h.
            weights = ((h - taylor_2 / half) / h, (taylor_2 / half) / h)
            inputs = (None, (0.5 * one,))
            return self._explicit_plan(schedule, times, denoise_to_zero, (0.0, 0.5), inputs, weights)
        taylor_2, taylor_3 = 0.5 * h**2, h**3 / 6.0
        # First derivative (4 v_mid - 3 v0 - v1) / h, second 4 (v1 - 2 v_mid + v0) / h^2.
        first = (-3.0 / h, 4.0 / h, -1.0 / h)
        second = (4.0 / h**2, -8.0 / h**2, 4.0 / h**2)
        weights = tuple((h * (k == 0) + taylor_2 * first[k] + taylor_3 * second[k]) / h for k in range(3))
        inputs = (None, (0.5 * one,), (-one, 2.0 * one))
        return self._explicit_plan(schedule, times, denoise_to_zero, (0.0, 0.5, 1.0), inputs, weights)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FireFlow(FixedGridSolver):
    """FireFlow (Deng et al. 2025) and a higher-order extension of it.

    Order 2 is FireFlow: the midpoint rule x' = x + h v(x + h/2 v0, t + h/2) whose v0 is
    the previous step's midpoint velocity instead of a fresh evaluation at (x, t). Only the
    first step evaluates v0, so N steps cost N + 1 evaluations. The reused velocity is off
    by O(h), which moves the midpoint by O(h^2): the method stays second order.

    Order 3 (samplax's extension, same N + 1 evaluations) treats the velocities already
    computed (at t_0 and at the past midpoints) as samples of v along the solution: the
    midpoint state extrapolates the line through the last two of them over [t, t + h/2],
    and the step integrates the parabola through the new midpoint velocity and the last
    two over [t, t + h]. Both are one order more accurate than FireFlow's constant
    velocities, which makes the method third order.

    Inversion runs the same rule over the increasing grid.

    Attributes:
        order: 2 (FireFlow) or 3.
    """

    order: int = static_field(2)
    prediction: str = static_field("velocity")

    def __post_init__(self):
        super().__post_init__()
        check_choice("FireFlow order", self.order, (2, 3))
        check_choice("prediction", self.prediction, ("velocity",))

    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        return steps + 1 + int(denoise_to_zero)

    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        steps = times.shape[0] - 1
        h = times[1:] - times[:-1]
        nodes = jnp.concatenate([times[:1], times[:-1] + 0.5 * h])  # where v is evaluated
        builder = PlanBuilder(stage_times(nodes, times, denoise_to_zero), history_size=self.order)
        if self.order == 2:
            # history[0] is v0 at stage 1 and the previous midpoint velocity afterwards.
            midpoints = np.arange(1, steps + 1)
            builder.set_input(midpoints, 1.0, (0.5 * h)[:, None])
            builder.set_update(midpoints, 1.0, h[:, None])
        else:
            # Stage k >= 1 takes step k - 1; node offsets from its start t_{k-1}.
            offsets = nodes[None, :] - times[:-1, None]  # (steps, steps + 1)
            stage = np.arange(1, steps + 1)
            current, last, before = offsets[stage - 1, stage], offsets[stage - 1, stage - 1], None
            if steps > 1:
                before = offsets[stage[1:] - 1, stage[1:] - 2]
            for first, index in ((True, np.array([0])), (False, np.arange(1, steps))):
                if index.size == 0:
                    continue
                step_h = h[index]
                past = [last[index]] + ([] if first else [before[index - 1]])
                inputs = [_integrated_lagrange(0.5 * step_h, past, j) for j in range(len(past))]
                builder.set_input(index + 1, 1.0, jnp.stack(inputs, axis=1))
                update_nodes = [current[index]] + past
                weights = [_integrated_lagrange(step_h, update_nodes, j) for j in range(len(update_nodes))]
                builder.set_update(index + 1, 1.0, jnp.stack(weights, axis=1))
        if denoise_to_zero:
            append_denoising_stage(builder, schedule, times[-1], "velocity")
        return builder.build()


def _integrated_lagrange(h, offsets, j):
    """Integral over s in [0, h] of the Lagrange basis polynomial of node offsets[j] among
    the nodes `offsets` (times relative to the step's start). Elementwise over arrays of
    steps; up to three nodes."""
    others = [offsets[m] for m in range(len(offsets)) if m != j]
    denominator = 1.0
    for other in others:
        denominator = denominator * (offsets[j] - other)
    if not others:
        integral = h
    elif len(others) == 1:
        integral = h**2 / 2 - others[0] * h
    else:
        a, b = others
        integral = h**3 / 3 - (a + b) * h**2 / 2 + a * b * h
    return integral / denominator


ADAPTIVE_METHODS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FlowAdaptive(AdaptiveSolver):
    """An adaptive diffrax solve of dx/dt = v(x, t) (Tsit5 or Dopri5 with a PID step-size
    controller), one independent solve per sample so that a sample's steps depend on it
    alone. Both methods have seven stages whose last is reused as the next step's first,
    so a solve costs six evaluations per attempted step plus at most two at the start
    (the reported count uses two).

    Attributes:
        method: "tsit5" or "dopri5".
        rtol, atol: the controller's relative and absolute tolerances.
        max_steps: the most steps a solve may take; `sample` raises an error when a
            sample has not reached t_end by then.
    """

    method: str = static_field("tsit5")
    rtol: float = static_field(1e-5)
    atol: float = static_field(1e-5)
    max_steps: int = static_field(4096)
    prediction: str = static_field("velocity")

    def __post_init__(self):
        super().__post_init__()
        check_choice("method", self.method, tuple(ADAPTIVE_METHODS))
        check_choice("prediction", self.prediction, ("velocity",))
        if not (self.rtol > 0 and self.atol > 0):
            raise ValueError(f"rtol and atol must be positive, got rtol={self.rtol}, atol={self.atol}")
        check_count("FlowAdaptive.max_steps", self.max_steps)

    def solve(self, predict, schedule, x, t_start, t_end):
        dtype = x.dtype

        def vector_field(t, y, args):
            return predict(y[None], jnp.asarray(t, dtype))[0]

        def solve_one(y0):
            solution = diffrax.diffeqsolve(
                diffrax.ODETerm(vector_field),
                ADAPTIVE_METHODS[self.method](),
                t0=jnp.asarray(t_start, dtype),
                t1=jnp.asarray(t_end, dtype),
                dt0=None,
                y0=y0,
                stepsize_controller=diffrax.PIDController(rtol=self.rtol, atol=self.atol),
                max_steps=self.max_steps,
                throw=False,
            )
            reached = solution.result == diffrax.RESULTS.successful
            return solution.ys[-1], 6 * solution.stats["num_steps"] + 2, reached

        return jax.vmap(solve_one)(x)


# The registry names of these solvers (samplax.solvers.get).
SOLVERS = {
    "euler": RungeKutta(method="euler"),
    "heun": RungeKutta(method="heun"),
    "midpoint": RungeKutta(method="midpoint"),
    "rk4": RungeKutta(method="rk4"),
    "rf-solver-2": RFSolver(order=2),
    "rf-solver-3": RFSolver(order=3),
    "fireflow": FireFlow(order=2),
    "fireflow-3": FireFlow(order=3),
    "flow-tsit5": FlowAdaptive(method="tsit5"),
    "flow-dopri5": FlowAdaptive(method="dopri5"),
}
