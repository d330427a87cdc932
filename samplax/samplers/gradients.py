"""How `sample(..., adjoint=...)` differentiates a solve, in the manner of diffrax's `adjoint=`.

Every method gives the same forward result; they differ in what the backward pass stores
and recomputes:

- `Backpropagation()` (the default): reverse mode through the scan, which stores every
  stage's network activations, so memory grows with the number of steps.
- `Checkpointed()`: stores one carry (state and history) per stage and recomputes each
  stage's network call in the backward pass (`jax.checkpoint` on the scan body).
- `ExponentialAdjoint(order)`: the continuous adjoint of the probability-flow ODE, solved
  backwards in lambda with an exponential integrator together with the state, which is
  reconstructed by solving the ODE backwards (AdjointDPM, Pan et al. ICLR 2024;
  AdjointDEIS, Blasingame and Liu, NeurIPS 2024). Nothing is stored per step; the gradient
  is that of the exact ODE solution, to which it converges as the steps grow.
- `ReversibleAdjoint()`: for reversible Heun, exact gradients at constant memory, each step
  inverted in the backward pass instead of stored (Kidger et al. 2021).

The exponential adjoint in y = x / sigma, with data prediction D(x, t) and
lambda = log(alpha / sigma): dy/dlambda = e^lambda D. For a loss L of the sample, the
adjoint b = dL/dy obeys db/dlambda = -e^lambda sigma J_x^T b and the parameters' gradient
is the integral of e^lambda J_theta^T b over lambda; at the noise end dL/dnoise = b. Over a
backward step from lambda_{i+1} to lambda_i, every integrand e^lambda q(lambda) is
integrated exactly with q constant (first order) or linear through the last two
evaluations (second order), so one network call and its vector-Jacobian product per step
give the state, the adjoint and the parameters' gradient together.
"""

from __future__ import annotations

import dataclasses
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp

from samplax.pytrees import static_field
from samplax.solvers.engine import Plan, run_plan
from samplax.solvers.reversible import ReversibleState

__all__ = [
    "Backpropagation", "Checkpointed", "ExponentialAdjoint", "GradientMethod", "ReversibleAdjoint",
    "as_gradient_method",
]


class GradientMethod:
    """What `sample` calls to run a solve so that it differentiates in a given way."""

    def check(self, solver, *, return_trajectory: bool, share_compilation: bool) -> None:
        """Raise a ValueError naming the problem where this method does not apply."""
        if solver.adaptive:
            raise ValueError(f"{self!r} applies to fixed-grid solvers; {solver!r} chooses its own steps")
        if share_compilation:
            raise ValueError(f"share_compilation runs with the default adjoint=Backpropagation() only, not {self!r}")

    def check_end(self, schedule, t_end) -> None:
        """Raise a ValueError where this method cannot run a grid ending at t_end."""

    def integrate(self, model, solver, times, x, denoise_to_zero: bool, return_trajectory: bool, draw):
        """(result, trajectory, plan) of a plan solver's solve from state x over `times`."""
        raise ValueError(f"{self!r} does not run {solver!r}")

    def integrate_reversible(self, model, solver, state: ReversibleState, times, return_trajectory: bool):
        """(state, trajectory) of a reversible solve from `state` over `times`."""
        raise ValueError(f"{self!r} does not run {solver!r}")


class _ThroughTheScan(GradientMethod):
    """Reverse mode through the solver's own scan, with or without recomputation."""

    checkpoint: bool

    def integrate(self, model, solver, times, x, denoise_to_zero, return_trajectory, draw):
        plan = solver.plan(model.schedule, times, denoise_to_zero)
        predict = model.predict(solver.prediction)
        result, trajectory = run_plan(plan, predict, x, return_trajectory, draw, checkpoint=self.checkpoint)
        return result, trajectory, plan

    def integrate_reversible(self, model, solver, state, times, return_trajectory):
        return solver.solve(model.predict(solver.prediction), state, times, return_trajectory, self.checkpoint)


@dataclasses.dataclass(frozen=True)
class Backpropagation(_ThroughTheScan):
    """Reverse mode through the scan: fastest, memory linear in the number of steps."""

    checkpoint = False

    def check(self, solver, *, return_trajectory, share_compilation):
        """Applies to every solve (what runs when nothing else is asked for)."""


@dataclasses.dataclass(frozen=True)
class Checkpointed(_ThroughTheScan):
    """Each stage recomputed in the backward pass: memory of one carry per stage plus one
    stage's activations, about one more forward solve of time."""

    checkpoint = True


# Below this many steps the exponential adjoint's gradient is too coarse to trust (measured:
# relative error 6 at 3 steps, 10.9 at 5, 1.6% at 10 on a Gaussian mixture).
FEW_ADJOINT_STEPS = 10


@dataclasses.dataclass(frozen=True)
class ExponentialAdjoint(GradientMethod):
    """The exponential-integrator adjoint of the probability-flow ODE (AdjointDPM,
    AdjointDEIS): gradients with respect to the noise, the condition and the network's
    parameters at memory independent of the number of steps.

    Attributes:
        order: 1 (the AdjointDEIS-1 / DDIM-like step) or 2 (multistep, linear through the
            last two evaluations of the backward solve).
    """

    order: int = static_field(2)

    def __post_init__(self):
        if self.order not in (1, 2):
            raise ValueError(f"ExponentialAdjoint order must be 1 or 2, got {self.order!r}")

    def check(self, solver, *, return_trajectory, share_compilation):
        super().check(solver, return_trajectory=return_trajectory, share_compilation=share_compilation)
        if solver.stochastic:
            raise ValueError(f"{self!r} is the adjoint of the probability-flow ODE; {solver!r} is stochastic")
        if solver.reversible:
            raise ValueError(f"{solver!r} has an exact constant-memory gradient: use adjoint=ReversibleAdjoint()")
        if return_trajectory:
            raise ValueError(f"{self!r} keeps nothing per step, so it cannot return the trajectory")

    def check_end(self, schedule, t_end) -> None:
        """The adjoint steps in lambda, which is infinite where sigma(t_end) = 0."""
        with jax.ensure_compile_time_eval():
            sigma = schedule.sigma(t_end)
        if isinstance(sigma, jax.core.Tracer) or float(sigma) > 0:
            return
        raise ValueError(
            f"{self!r} steps in lambda = log(alpha / sigma), infinite at t_end={float(t_end)} where sigma = 0: "
            "use t_end > 0 (e.g. t_end=1e-3 with denoise_to_zero=True)"
        )

    def integrate(self, model, solver, times, x, denoise_to_zero, return_trajectory, draw):
        steps = times.shape[0] - 1
        if steps < FEW_ADJOINT_STEPS:
            warnings.warn(
                f"{self!r} solves the adjoint ODE backwards on the sampling grid: with {steps} steps its gradient can "
                "be far from the gradient of the discrete solve (at 3 steps on a Gaussian mixture it pointed the "
                f"other way); use Checkpointed() for that gradient at constant memory per step, or "
                f"{FEW_ADJOINT_STEPS}+ steps", stacklevel=2)
        plan = solver.plan(model.schedule, times, denoise_to_zero)
        result = _adjoint_solve((x, model, times), solver, self.order, denoise_to_zero)
        if denoise_to_zero:  # the last evaluation, differentiated by reverse mode (constant memory)
            result = model.data(result, times[-1].astype(result.dtype))
        return result, None, plan


@dataclasses.dataclass(frozen=True)
class ReversibleAdjoint(GradientMethod):
    """Exact gradients of a reversible Heun solve at constant memory: the backward pass
    inverts each step (one extra network call) instead of storing it. Differentiates with
    respect to everything: noise, condition, parameters, schedule and grid."""

    def check(self, solver, *, return_trajectory, share_compilation):
        super().check(solver, return_trajectory=return_trajectory, share_compilation=share_compilation)
        if not solver.reversible:
            raise ValueError(f"{self!r} applies to reversible solvers (reversible-heun), not to {solver!r}")
        if return_trajectory:
            raise ValueError(f"{self!r} keeps nothing per step, so it cannot return the trajectory")

    def integrate_reversible(self, model, solver, state, times, return_trajectory):
        x, x_hat = _reversible_solve((state.x, state.x_hat, model, times), solver)
        return ReversibleState(x, x_hat), None


def as_gradient_method(adjoint, solver, *, return_trajectory: bool, share_compilation: bool) -> GradientMethod:
    """The checked gradient method of a workflow's `adjoint=` (None: Backpropagation())."""
    adjoint = Backpropagation() if adjoint is None else adjoint
    if not isinstance(adjoint, GradientMethod):
        raise TypeError(f"adjoint must be a samplax gradient method such as Checkpointed(), got {adjoint!r}")
    adjoint.check(solver, return_trajectory=return_trajectory, share_compilation=share_compilation)
    return adjoint


# -- the exponential adjoint ----------------------------------------------------------------


def _until_the_final_evaluation(plan: Plan) -> Plan:
    """The plan of a solve with denoise_to_zero without its last stage (the evaluation at
    t_end), returning the point that stage evaluates at."""
    staged = ("times", "input_state", "input_history", "update_state", "update_history")
    cut = {name: getattr(plan, name)[:-1] for name in staged}
    return dataclasses.replace(plan, **cut, output_state=plan.input_state[-1], output_history=plan.input_history[-1])


def _solve_plan(inputs, solver, denoise_to_zero):
    """The solver's own solve up to the state at t_end (before any final denoising)."""
    x, model, times = inputs
    plan = solver.plan(model.schedule, times, denoise_to_zero)
    if denoise_to_zero:
        plan = _until_the_final_evaluation(plan)
    result, _ = run_plan(plan, model.predict(solver.prediction), x)
    return result


@eqx.filter_custom_vjp
def _adjoint_solve(inputs, solver, order, denoise_to_zero):
    return _solve_plan(inputs, solver, denoise_to_zero)


@_adjoint_solve.def_fwd
def _adjoint_forward(perturbed, inputs, solver, order, denoise_to_zero):
    _, model_perturbed, times_perturbed = perturbed
    if any(jax.tree.leaves(model_perturbed.schedule)) or any(jax.tree.leaves(times_perturbed)):
        raise ValueError(
            "ExponentialAdjoint differentiates with respect to the noise, the condition and the network, "
            "not the schedule or the time grid: use adjoint=Backpropagation() or Checkpointed() for those"
        )
    result = _solve_plan(inputs, solver, denoise_to_zero)
    return result, result


def _without_schedule(model):
    """The filter of the Denoiser's differentiable arrays: its inexact arrays outside the schedule."""
    spec = jax.tree.map(eqx.is_inexact_array, model)
    return eqx.tree_at(lambda m: m.schedule, spec, replace_fn=lambda part: jax.tree.map(lambda _: False, part))


def _adjoint_coefficients(schedule, times, order: int):
    """Per backward step (from times[i + 1] to times[i], i = N - 1 ... 0): the time
    evaluated, nu there and at the target, a = alpha / nu there, and the quadrature weights
    of the newest evaluation and of its difference to the previous one over the step in s."""
    t_from, t_to = times[1:][::-1], times[:-1][::-1]

    def variables(t):
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        nu = jnp.sqrt(alpha**2 + sigma**2)
        return nu, alpha / nu, jnp.arcsinh(alpha / sigma)

    nu_from, a_from, s_from = variables(t_from)
    nu_to, _, s_to = variables(t_to)
    step = s_from - s_to  # > 0: s falls going back to the noise
    previous = jnp.concatenate([jnp.ones((1,), step.dtype), step[:-1]])
    weight_difference = step**2 / (2.0 * previous)  # Adams-Bashforth 2 with variable steps
    if order == 1:
        weight_difference = jnp.zeros_like(weight_difference)
    weight_difference = weight_difference.at[0].set(0.0)  # no previous evaluation at the first step
    return t_from, nu_from, nu_to, a_from, step, weight_difference


@_adjoint_solve.def_bwd
def _adjoint_backward(result, cotangent, perturbed, inputs, solver, order, denoise_to_zero):
    _, model, times = inputs
    schedule, dtype = model.schedule, result.dtype
    dynamic, static = eqx.partition(model, _without_schedule(model))

    def data(state, dynamic_model, t):
        return eqx.combine(dynamic_model, static).data(state, t)

    def step(carry, row):
        state, adjoint, gradient, previous = carry
        t, nu_from, nu_to, a, weight_new, weight_difference = (value.astype(dtype) for value in row)
        prediction, vjp = jax.vjp(lambda s, d: data(s, d, t), state, dynamic)
        state_term, parameter_term = vjp(adjoint)
        # the residuals of the standard-normal linearisation: of the state, of the adjoint, of the parameters
        newest = (prediction - a * (state / nu_from), nu_from * state_term - a * adjoint, parameter_term)
        increment = jax.tree.map(
            lambda new, old: (weight_new * new + weight_difference * (new - old)).astype(new.dtype), newest, previous
        )
        state = nu_to * (state / nu_from - increment[0])
        adjoint = adjoint + increment[1]
        gradient = jax.tree.map(jnp.add, gradient, increment[2])
        return (state, adjoint, gradient, newest), None

    cotangent = jnp.zeros_like(result) if cotangent is None else cotangent
    nu = jnp.sqrt(schedule.alpha(times) ** 2 + schedule.sigma(times) ** 2).astype(dtype)
    zeros = jax.tree.map(jnp.zeros_like, dynamic)
    start = (result, nu[-1] * cotangent, zeros, (jnp.zeros_like(result), jnp.zeros_like(result), zeros))
    rows = _adjoint_coefficients(schedule, times, order)
    (_, adjoint, gradient, _), _ = jax.lax.scan(step, start, rows)
    return adjoint / nu[0], gradient, None


# -- the reversible adjoint -----------------------------------------------------------------


def _reversible_carry(inputs, solver):
    """The final carry (x, x_hat, v_hat) of the reversible solve: all its backward pass keeps."""
    x, x_hat, model, times = inputs
    predict = model.predict(solver.prediction)
    carry = solver.start(predict, ReversibleState(x, x_hat), jnp.asarray(times)[0])
    carry, _ = jax.lax.scan(lambda c, row: (solver.step(predict, c, row), None), carry, solver.rows(times))
    return carry


@eqx.filter_custom_vjp
def _reversible_solve(inputs, solver):
    return _reversible_carry(inputs, solver)[:2]


@_reversible_solve.def_fwd
def _reversible_solve_forward(perturbed, inputs, solver):
    carry = _reversible_carry(inputs, solver)
    return carry[:2], carry


@_reversible_solve.def_bwd
def _reversible_solve_backward(final, cotangent, perturbed, inputs, solver):
    """Walk the steps backwards: invert each step to get its input carry, then pull the
    cotangent of its output back through it; last, through the first evaluation."""
    x, x_hat, model, times = inputs
    dynamic, static = eqx.partition((model, jnp.asarray(times)), eqx.is_inexact_array)
    dynamic_model, dynamic_times = dynamic
    rows = solver.rows(times)
    cotangent = tuple(jnp.zeros_like(value) if c is None else c for value, c in zip(final[:2], cotangent, strict=True))
    carry_cotangent = (*cotangent, jnp.zeros_like(final[2]))

    def predictor(dynamic_model):
        return eqx.combine(dynamic_model, static[0]).predict(solver.prediction)

    def backward_step(state, row):
        carry, carry_cotangent, model_gradient = state
        before = solver.unstep(predictor(dynamic_model), carry, row)
        _, vjp = jax.vjp(lambda c, m, r: solver.step(predictor(m), c, r), before, dynamic_model, row)
        carry_cotangent, model_term, row_term = vjp(carry_cotangent)
        return (before, carry_cotangent, jax.tree.map(jnp.add, model_gradient, model_term)), row_term

    zeros = jax.tree.map(jnp.zeros_like, dynamic_model)
    start = (final, carry_cotangent, zeros)
    (first, carry_cotangent, model_gradient), row_terms = jax.lax.scan(backward_step, start, rows, reverse=True)

    def start_carry(x, x_hat, m, times_dynamic):
        times_value = eqx.combine(times_dynamic, static[1])
        return solver.start(predictor(m), ReversibleState(x, x_hat), times_value[0])

    _, vjp = jax.vjp(start_carry, first[0], first[1], dynamic_model, dynamic_times)
    x_gradient, x_hat_gradient, model_term, times_term = vjp(carry_cotangent)
    model_gradient = jax.tree.map(jnp.add, model_gradient, model_term)
    if dynamic_times is not None:
        _, rows_vjp = jax.vjp(solver.rows, dynamic_times)
        times_term = times_term + rows_vjp(row_terms)[0]
    return x_gradient, x_hat_gradient, model_gradient, times_term
