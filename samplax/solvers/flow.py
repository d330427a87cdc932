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

from samplax.schedules import Schedule
from samplax.solvers.base import AdaptiveSolver, FixedGridSolver, register
from samplax.solvers.engine import Plan, PlanBuilder

__all__ = ["RungeKutta", "RFSolver", "FireFlow", "FlowAdaptive", "TABLEAUX", "append_velocity_denoising_stage"]

# Butcher tableaux (a, b, c) of explicit methods; a is strictly lower triangular.
TABLEAUX = {
    "euler": (np.zeros((1, 1)), np.array([1.0]), np.array([0.0])),
    "heun": (np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([0.5, 0.5]), np.array([0.0, 1.0])),
    "midpoint": (np.array([[0.0, 0.0], [0.5, 0.0]]), np.array([0.0, 1.0]), np.array([0.0, 0.5])),
    "rk4": (
        np.array([[0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 1.0, 0]]),
        np.array([1, 2, 2, 1]) / 6.0,
        np.array([0.0, 0.5, 0.5, 1.0]),
    ),
}

_ORDERS = {"euler": 1, "heun": 2, "midpoint": 2, "rk4": 4}


def _static(default):
    return dataclasses.field(default=default, metadata={"static": True})


def append_velocity_denoising_stage(builder: PlanBuilder, schedule: Schedule, time) -> None:
    """Make the last stage return the data prediction at `time` from the velocity there:
    x = alpha x0 + sigma eps and v = alpha' x0 + sigma' eps give
    x0 = (sigma' x - sigma v) / (alpha sigma' - sigma alpha')."""
    alpha, sigma = schedule.alpha(time), schedule.sigma(time)
    d_alpha, d_sigma = schedule.alpha_sigma_derivatives(time)
    determinant = alpha * d_sigma - sigma * d_alpha
    last = np.array([builder.times.shape[0] - 1])
    builder.set_update(last, d_sigma / determinant, jnp.reshape(-sigma / determinant, (1, 1)))


def _with_denoising_time(stage_times, times, denoise_to_zero):
    return jnp.concatenate([stage_times, times[-1:]]) if denoise_to_zero else stage_times


class _VelocitySolver(FixedGridSolver):
    """Shared pieces of the fixed-grid velocity solvers: `stages` evaluations per step."""

    prediction = "velocity"

    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        return self.stages * steps + int(denoise_to_zero)

    def _explicit_plan(self, schedule, times, denoise_to_zero, nodes, inputs, weights):
        """Plan of a one-step method with `nodes` c (stage times t + c h), stage inputs
        x + h sum_l inputs[j][l] v_l and final update x + h sum_l weights[l] v_l, where
        inputs and weights are functions of h (arrays over steps) or constants."""
        steps = times.shape[0] - 1
        h = times[1:] - times[:-1]
        stages = len(nodes)
        stage_times = (times[:-1, None] + h[:, None] * jnp.asarray(nodes, h.dtype)[None]).reshape(-1)
        builder = PlanBuilder(_with_denoising_time(stage_times, times, denoise_to_zero), history_size=stages)
        step_index = np.arange(steps) * stages
        for j in range(1, stages):
            # At stage j the history holds v_{j-1}, ..., v_0 (newest first).
            history = jnp.stack([h * inputs[j][j - 1 - m] for m in range(j)], axis=1)
            builder.set_input(step_index + j, 1.0, history)
        history = jnp.stack([h * weights[stages - 1 - m] for m in range(stages)], axis=1)
        builder.set_update(step_index + stages - 1, 1.0, history)
        if denoise_to_zero:
            append_velocity_denoising_stage(builder, schedule, times[-1])
        return builder.build()


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RungeKutta(_VelocitySolver):
    """An explicit Runge-Kutta method on dx/dt = v(x, t).

    Attributes:
        method: "euler" (order 1), "heun" (explicit trapezoid, order 2), "midpoint"
            (order 2) or "rk4" (classical fourth order).
    """

    method: str = _static("euler")

    def __post_init__(self):
        if self.method not in TABLEAUX:
            raise ValueError(f"method must be one of {tuple(TABLEAUX)}, got {self.method!r}")

    @property
    def stages(self) -> int:
        return TABLEAUX[self.method][1].shape[0]

    @property
    def order(self) -> int:
        return _ORDERS[self.method]

    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        a, b, c = TABLEAUX[self.method]
        return self._explicit_plan(schedule, times, denoise_to_zero, c, a, b)


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

    order: int = _static(2)

    def __post_init__(self):
        if self.order not in (2, 3):
            raise ValueError(f"RF-Solver order must be 2 or 3, got {self.order!r}")

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
        weights = tuple(
            (h * (l == 0) + taylor_2 * first[l] + taylor_3 * second[l]) / h for l in range(3)
        )
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

    prediction = "velocity"
    order: int = _static(2)

    def __post_init__(self):
        if self.order not in (2, 3):
            raise ValueError(f"FireFlow order must be 2 or 3, got {self.order!r}")

    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        return steps + 1 + int(denoise_to_zero)

    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        steps = times.shape[0] - 1
        h = times[1:] - times[:-1]
        nodes = jnp.concatenate([times[:1], times[:-1] + 0.5 * h])  # where v is evaluated
        builder = PlanBuilder(_with_denoising_time(nodes, times, denoise_to_zero), history_size=self.order)
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
            append_velocity_denoising_stage(builder, schedule, times[-1])
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


_ADAPTIVE = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5}


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
        max_steps: the most steps a solve may take before it fails.
    """

    prediction = "velocity"
    method: str = _static("tsit5")
    rtol: float = _static(1e-5)
    atol: float = _static(1e-5)
    max_steps: int = _static(4096)

    def __post_init__(self):
        if self.method not in _ADAPTIVE:
            raise ValueError(f"method must be one of {tuple(_ADAPTIVE)}, got {self.method!r}")
        if not (self.rtol > 0 and self.atol > 0):
            raise ValueError(f"rtol and atol must be positive, got rtol={self.rtol}, atol={self.atol}")

    def solve(self, predict, schedule, x, t_start, t_end):
        dtype = x.dtype

        def vector_field(t, y, args):
            return predict(y[None], jnp.asarray(t, dtype))[0]

        def solve_one(y0):
            solution = diffrax.diffeqsolve(
                diffrax.ODETerm(vector_field),
                _ADAPTIVE[self.method](),
                t0=jnp.asarray(t_start, dtype),
                t1=jnp.asarray(t_end, dtype),
                dt0=None,
                y0=y0,
                stepsize_controller=diffrax.PIDController(rtol=self.rtol, atol=self.atol),
                max_steps=self.max_steps,
            )
            return solution.ys[-1], 6 * solution.stats["num_steps"] + 2

        return jax.vmap(solve_one)(x)


def _register_all():
    for method in TABLEAUX:
        register(method, lambda m=method: RungeKutta(method=m))
    register("rf-solver-2", lambda: RFSolver(order=2))
    register("rf-solver-3", lambda: RFSolver(order=3))
    register("fireflow", lambda: FireFlow())
    register("fireflow-3", lambda: FireFlow(order=3))
    for method in _ADAPTIVE:
        register(f"flow-{method}", lambda m=method: FlowAdaptive(method=m))


_register_all()
