"""What fixed-grid solvers share: stage times, the final denoising stage, multistep
warm-up orders, argument checks, and the one Butcher-tableau type of every Runge-Kutta
family (the flow solvers on dx/dt and rhoRK-DEIS on dv/drho).

A new solver is a frozen dataclass of hyperparameters that subclasses
`samplax.solvers.base.FixedGridSolver` and builds its `Plan` from these pieces; its
registry names go into the `SOLVERS` table at the end of its own module.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from samplax.schedules import Schedule
from samplax.solvers.engine import Plan, PlanBuilder

__all__ = [
    "TABLEAUX",
    "Tableau",
    "append_denoising_stage",
    "gauss_legendre",
    "lagrange_basis",
    "multistep_orders",
    "multistep_plan",
    "OneStepMethod",
    "one_step_plan",
    "past_nodes",
    "stage_times",
    "step_intervals",
    "vandermonde_weights",
]


@dataclasses.dataclass(frozen=True)
class Tableau:
    """The Butcher tableau of an explicit Runge-Kutta method: stage k evaluates at
    time t + c[k] h and state y + h sum_l a[k][l] f_l (a strictly lower triangular), and
    the step is y + h sum_k b[k] f_k. `order` is the method's order of accuracy."""

    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]
    order: int

    @property
    def stages(self) -> int:
        return len(self.b)


TABLEAUX = {
    "euler": Tableau(a=((0.0,),), b=(1.0,), c=(0.0,), order=1),
    "heun": Tableau(a=((0.0, 0.0), (1.0, 0.0)), b=(0.5, 0.5), c=(0.0, 1.0), order=2),
    "midpoint": Tableau(a=((0.0, 0.0), (0.5, 0.0)), b=(0.0, 1.0), c=(0.0, 0.5), order=2),
    "kutta3": Tableau(
        a=((0.0, 0.0, 0.0), (0.5, 0.0, 0.0), (-1.0, 2.0, 0.0)),
        b=(1 / 6, 2 / 3, 1 / 6),
        c=(0.0, 0.5, 1.0),
        order=3,
    ),
    "rk4": Tableau(
        a=((0.0, 0.0, 0.0, 0.0), (0.5, 0.0, 0.0, 0.0), (0.0, 0.5, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0)),
        b=(1 / 6, 2 / 6, 2 / 6, 1 / 6),
        c=(0.0, 0.5, 0.5, 1.0),
        order=4,
    ),
}


def stage_times(evaluation_times: jax.Array, times: jax.Array, denoise_to_zero: bool) -> jax.Array:
    """The times of every stage of a plan: the solver's own evaluation times, followed by
    times[-1] when the solve ends with a denoising stage there."""
    return jnp.concatenate([evaluation_times, times[-1:]]) if denoise_to_zero else evaluation_times


def append_denoising_stage(builder: PlanBuilder, schedule: Schedule, time, prediction: str) -> None:
    """Make the last stage return the data prediction at `time` (the step to sigma = 0),
    written in terms of the prediction the solver integrates: the data prediction itself;
    x0 = (x - sigma eps) / alpha from the noise; and from the velocity, with
    x = alpha x0 + sigma eps and v = alpha' x0 + sigma' eps,
    x0 = (sigma' x - sigma v) / (alpha sigma' - sigma alpha')."""
    last = np.array([builder.times.shape[0] - 1])
    alpha, sigma = schedule.alpha(time), schedule.sigma(time)
    if prediction == "data":
        builder.set_update(last, 0.0, jnp.ones((1, 1)))
    elif prediction == "noise":
        builder.set_update(last, 1.0 / alpha, jnp.reshape(-sigma / alpha, (1, 1)))
    elif prediction == "velocity":
        d_alpha, d_sigma = schedule.alpha_sigma_derivatives(time)
        determinant = alpha * d_sigma - sigma * d_alpha
        builder.set_update(last, d_sigma / determinant, jnp.reshape(-sigma / determinant, (1, 1)))
    else:
        raise ValueError(f"a denoising stage needs a 'data', 'noise' or 'velocity' prediction, got {prediction!r}")


def multistep_orders(order: int, steps: int, lower_order_final: bool, denoise_to_zero: bool) -> np.ndarray:
    """Per-step orders of a multistep method: warm up from order 1, and with
    lower_order_final never use more past points than steps remain (a final denoising
    step counts as one more first-order step)."""
    index = np.arange(steps)
    orders = np.minimum(order, index + 1)
    if lower_order_final:
        orders = np.minimum(orders, steps - index + int(denoise_to_zero))
    return orders


def multistep_plan(solver, schedule: Schedule, times: jax.Array, denoise_to_zero: bool, update, noise=None) -> Plan:
    """The plan of a multistep method, one evaluation per step:

        x_{i+1} = state_i x_i + sum_j history[i, j] f_{i-j} (+ noise_i xi_i),

    with orders warming up from one (and lowered at the end with
    `solver.lower_order_final`). `update(orders)` gives (state, history), state a constant
    or a (steps,) array and history (steps, solver.order), newest evaluation first, from
    the per-step orders. A stochastic method gives `noise`, the (steps,) scales of one
    draw per step over the step's interval (`step_intervals`)."""
    steps = times.shape[0] - 1
    builder = PlanBuilder(stage_times(times[:-1], times, denoise_to_zero), history_size=solver.order)
    orders = multistep_orders(solver.order, steps, solver.lower_order_final, denoise_to_zero)
    builder.set_update(np.arange(steps), *update(orders))
    if noise is not None:
        builder.set_noise(np.arange(steps), step_intervals(times), update=noise)
    if denoise_to_zero:
        append_denoising_stage(builder, schedule, times[-1], solver.prediction)
    return builder.build()


def step_intervals(times: jax.Array) -> jax.Array:
    """(steps, 2) pairs (t_i, t_{i+1}) of a grid: the interval of Brownian time over which
    a step's noise is drawn (`samplax.solvers.engine.NoisePlan`)."""
    return jnp.stack([times[:-1], times[1:]], axis=1)


@dataclasses.dataclass(frozen=True)
class OneStepMethod:
    """The coefficients of a one-step (Runge-Kutta-like) method over a grid, with f_l the
    stage evaluations of a step: stage j evaluates at time node_times[step * len(b) + j]
    and state input_states[j] x + input_scales[j] sum_l a[j][l] f_l, and the step ends at
    update_state x + update_scale sum_l b[l] f_l. Every coefficient is a constant or an
    array over steps."""

    node_times: jax.Array
    a: tuple
    b: tuple
    input_states: tuple
    input_scales: tuple
    update_state: object
    update_scale: object


def one_step_plan(schedule: Schedule, times: jax.Array, denoise_to_zero: bool, prediction: str,
                  method: OneStepMethod) -> Plan:
    """The plan of a one-step method, stage j of step i being stage i * len(b) + j, with a
    final denoising stage where asked."""
    a, b = method.a, method.b
    stages, steps = len(b), times.shape[0] - 1
    builder = PlanBuilder(stage_times(method.node_times, times, denoise_to_zero), history_size=stages)
    first = np.arange(steps) * stages
    for j in range(1, stages):
        # At stage j the history holds f_{j-1}, ..., f_0 (newest first).
        history = jnp.stack([method.input_scales[j] * a[j][j - 1 - m] for m in range(j)], axis=1)
        builder.set_input(first + j, method.input_states[j], history)
    history = jnp.stack([method.update_scale * b[stages - 1 - m] for m in range(stages)], axis=1)
    builder.set_update(first + stages - 1, method.update_state, history)
    if denoise_to_zero:
        append_denoising_stage(builder, schedule, times[-1], prediction)
    return builder.build()


def past_nodes(values, count):
    """(steps, count) array whose column j is values[i - j] at row i: the current and past
    grid values of each step. Before the grid starts, the values continue with the first
    step's spacing, so that unused Lagrange nodes stay distinct and every coefficient stays
    finite (and differentiable)."""
    first_gap = values[0] - values[1]
    padded = jnp.concatenate([values[0] + first_gap * jnp.arange(count - 1, 0, -1), values])
    start = count - 1
    columns = [padded[start - j : start - j + values.shape[0] - 1] for j in range(count)]
    return jnp.stack(columns, axis=1)


def lagrange_basis(nodes, points):
    """Values of the Lagrange basis polynomials through `nodes` (S, K) at `points` (S, Q):
    an (S, Q, K) array whose [..., j] entry is the polynomial that is 1 at nodes[:, j] and
    0 at the other nodes."""
    count = nodes.shape[1]
    basis = []
    for j in range(count):
        value = jnp.ones_like(points)
        for m in range(count):
            if m != j:
                value = value * (points - nodes[:, m : m + 1]) / (nodes[:, j : j + 1] - nodes[:, m : m + 1])
        basis.append(value)
    return jnp.stack(basis, axis=-1)


def gauss_legendre(nodes: int):
    """Gauss-Legendre points and weights on [0, 1]: exact for polynomials of degree below
    2 * nodes."""
    points, weights = np.polynomial.legendre.leggauss(nodes)
    return (points + 1.0) / 2.0, weights / 2.0  # on [0, 1]


def vandermonde_weights(ratios, rhs):
    """(steps, n) weights rho with sum_k rho_k r_k^i = rhs_i, i = 0..n-1, for distinct
    ratios r (steps, n): quadrature weights exact on the monomials r^i when rhs holds
    their integrals (UniPC, SA-Solver). Written out with the Lagrange basis (rho_k =
    sum_i c_ki rhs_i, where c_k are the monomial coefficients of the basis polynomial of
    r_k), so that it is a handful of elementwise operations for the small n used here."""
    count = ratios.shape[1]
    weights = []
    for k in range(count):
        coefficients = [jnp.ones_like(ratios[:, 0])]
        denominator = jnp.ones_like(ratios[:, 0])
        for j in range(count):
            if j == k:
                continue
            shifted = [jnp.zeros_like(coefficients[0])] + coefficients
            scaled = [ratios[:, j] * c for c in coefficients] + [jnp.zeros_like(coefficients[0])]
            coefficients = [a - b for a, b in zip(shifted, scaled, strict=True)]
            denominator = denominator * (ratios[:, k] - ratios[:, j])
        weights.append(sum(c * rhs[:, i] for i, c in enumerate(coefficients)) / denominator)
    return jnp.stack(weights, axis=1)
