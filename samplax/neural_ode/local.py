"""Local regularization: one differentiable solver step at a random time.

Pal, Edelman and Rackauckas, "Locally Regularized Neural Differential Equations"
(ICML 2023). The state y(t) at a random time t is a constant; one step of an embedded RK
method from it, with the step size the `PIDController` would pick to start a solve there,
gives the error-estimate and stiffness terms. The step is separate from the main solve,
so it works with every diffrax adjoint. `ReservoirSolver` draws t from the accepted step
times of a solve (the biased sampler) in O(1) memory.
"""

import functools

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from samplax.neural_ode.regularizers import (
    AbstractForwardingSolver,
    check_tableau,
    error_estimate,
    stability_size,
    stiffness_estimate,
)


@functools.cache
def _stability_size(solver_cls) -> float:
    """`stability_size` of a solver class's tableau, computed once per class."""
    return stability_size(solver_cls.tableau)


class LocalPenalty(eqx.Module):
    """The local ERNODE and SRNODE terms of one step.

    Attributes:
        error: the error-estimate term `E * dt`.
        stiffness: the stiffness term `|rho| / stability size`.
        dt: the step size taken.
    """

    error: jax.Array
    stiffness: jax.Array
    dt: jax.Array


def _controller_step_size(solver, term, args, t, y, t_end, rtol, atol, refinements):
    """The step size a `PIDController` would pick to start a solve at (t, y).

    Hairer's initial-step heuristic (the controller's `init`), then `refinements` trial
    steps, each rescaling dt by the controller's factor 0.9 E^(-1/order) clipped to
    [0.2, 10]; never past `t_end`.
    """
    controller = diffrax.PIDController(rtol=rtol, atol=atol)
    order = solver.error_order(term)
    t_next, _ = controller.init(term, t, t_end, y, None, args, solver.func, order)
    dt = jnp.minimum(t_next, t_end) - t
    for _ in range(refinements):
        state = solver.init(term, t, t + dt, y, args)
        y1, y_error, _, _, _ = solver.step(term, t, t + dt, y, args, state, False)
        eest = error_estimate(y, y1, y_error, rtol, atol)
        factor = jnp.clip(0.9 * jnp.where(eest > 0, eest, 1e-10) ** (-1.0 / order), 0.2, 10.0)
        dt = jnp.minimum(dt * factor, t_end - t)
    return dt


def local_penalty(term, args, t, y, t_end, *, rtol: float, atol: float, solver=None,
                  dt=None, refinements: int = 2):
    """One differentiable step from the constant state `y` at time `t` towards `t_end`.

    The local regularizer of Pal et al. (ICML 2023): the step's error-estimate and
    stiffness terms. Gradients flow to `args` (and `term`) only, so it works with every
    diffrax adjoint.

    Args:
        term: a `diffrax.ODETerm`.
        args: the vector field's `args` (the parameters).
        t: the time of the step (a constant).
        y: the state at `t` (a constant).
        t_end: the end of the solve; the step does not go past it.
        rtol: relative tolerance of the error estimate and the controller.
        atol: absolute tolerance of the error estimate and the controller.
        solver: an explicit RK solver with an FSAL tableau whose last two stages are at
            c = 1 (default Tsit5).
        dt: the step size (e.g. the step the solver took there); None: what the
            `PIDController` would pick after `refinements` trial steps from `y`.
        refinements: trial steps of the controller when `dt` is None, non-negative.

    Returns:
        A `LocalPenalty`.
    """
    solver = diffrax.Tsit5() if solver is None else solver
    tableau = check_tableau(solver, stiffness=True)
    if not isinstance(term, diffrax.ODETerm):
        raise TypeError(f"term must be a diffrax.ODETerm, got {type(term).__name__}.")
    if refinements < 0:
        raise ValueError(f"refinements must be non-negative, got {refinements}.")
    t = jax.lax.stop_gradient(jnp.asarray(t))
    y = jax.lax.stop_gradient(y)
    if dt is None:
        dt = _controller_step_size(
            solver, term, jax.lax.stop_gradient(args), t, y, t_end, rtol, atol, refinements
        )
    dt = jax.lax.stop_gradient(dt)
    state = solver.init(term, t, t + dt, y, args)
    y1, y_error, dense_info, _, _ = solver.step(term, t, t + dt, y, args, state, False)
    error = error_estimate(y, y1, y_error, rtol, atol) * dt
    stiff = stiffness_estimate(tableau, y, y1, dense_info["k"], dt)
    return LocalPenalty(error, stiff / _stability_size(type(solver)), dt)


def unbiased_time(key, t0, t1) -> jax.Array:
    """A time uniform on [t0, t1): the unbiased sampler of local regularization."""
    return jax.random.uniform(key, (), minval=t0, maxval=t1)


class ReservoirState(eqx.Module):
    """The biased sampler's reservoir.

    Attributes:
        count: the number of accepted steps seen.
        t: the start time of the step kept.
        dt: its size.
        y: the state at its start.
    """

    count: jax.Array
    t: jax.Array
    dt: jax.Array
    y: object


class ReservoirSolver(AbstractForwardingSolver):
    """Keeps (t, dt, y) at the start of one accepted step, chosen uniformly.

    The biased sampler of local regularization (Pal et al., ICML 2023), by reservoir
    sampling in the solver state: diffrax keeps the state of accepted steps only, so the
    n-th accepted step replaces the sample with probability 1/n. Read it with
    `SaveAt(..., solver_state=True)` as `sol.solver_state[1]`, a `ReservoirState`.

    Attributes:
        solver: the wrapped solver.
        key: the PRNG key of the draws.
    """

    solver: diffrax.AbstractSolver
    key: jax.Array

    def init(self, terms, t0, t1, y0, args):
        """The wrapped solver's state and an empty reservoir."""
        t0 = jnp.asarray(t0)
        sample = ReservoirState(jnp.zeros((), jnp.int32), t0, jnp.zeros_like(t0), y0)
        return self.solver.init(terms, t0, t1, y0, args), sample

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        """One step of the wrapped solver; the step replaces the sample with probability 1/n."""
        inner, sample = solver_state
        y1, y_error, dense_info, inner, result = self.solver.step(
            terms, t0, t1, y0, args, inner, made_jump
        )
        count = sample.count + 1
        u = jax.random.uniform(jax.random.fold_in(self.key, count))
        take = u * count < 1.0
        sample = ReservoirState(
            count,
            jnp.where(take, t0, sample.t),
            jnp.where(take, t1 - t0, sample.dt),
            jtu.tree_map(lambda a, b: jnp.where(take, a, b), y0, sample.y),
        )
        return y1, y_error, dense_info, (inner, sample), result
