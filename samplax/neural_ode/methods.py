"""Regularization methods as small frozen dataclasses, and the one solve they share.

Every method solves dy/dt = vector_field(t, y, params) with Tsit5 and a `PIDController`
and returns the states at the save times, its penalty and the number of vector-field
evaluations. A method says what it needs and does its own part: `needs_key` tells whether
it draws random numbers, and `solve(problem, key)` chooses the vector field (augmented for
RNODE and TayNODE), the save times (jittered for STEER, one more time for the unbiased
local sampler), the wrapped solver (the reservoir for the biased local sampler) and reads
the penalty. `Problem.run` is the one solve they all go through; `integrate` checks the
inputs and calls the method. Parameters go through diffrax's `args`, so every adjoint
sees them.
"""

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from samplax.neural_ode import baselines
from samplax.neural_ode.local import ReservoirSolver, local_penalty, unbiased_time
from samplax.neural_ode.regularizers import (
    AGGREGATIONS,
    ZERO_GRADIENT_ADJOINTS,
    RegularizedSolver,
    adaptive_solve,
    penalties,
)

_KINDS = ("error", "stiffness")


class Output(eqx.Module):
    """One solve of a method.

    Attributes:
        ys: the states at the save times, shape (n, *y0.shape) (a pytree like `y0`).
        penalty: the regularization penalty, zero for methods without one (unregularized
            and STEER).
        nfe: the number of vector-field evaluations, rejected steps included.
    """

    ys: jax.Array
    penalty: jax.Array
    nfe: jax.Array


@dataclass(frozen=True)
class Problem:
    """The initial-value problem of one `integrate` call, as every method receives it.

    Attributes:
        vector_field: dy/dt = vector_field(t, y, params).
        params: the parameters, passed as diffrax's `args` so that every adjoint sees them.
        y0: the initial state at `t0` (an array or a pytree of arrays).
        t0: the initial time.
        ts: the increasing save times, a non-empty 1-D array; the solve ends at `ts[-1]`.
        rtol: relative tolerance of the step controller and of the error estimates.
        atol: absolute tolerance of the step controller and of the error estimates.
        adjoint: the diffrax adjoint (None: `RecursiveCheckpointAdjoint`).
        max_steps: the most steps one solve may take.
    """

    vector_field: Callable
    params: Any
    y0: Any
    t0: Any
    ts: jax.Array
    rtol: float
    atol: float
    adjoint: diffrax.AbstractAdjoint | None
    max_steps: int

    def solver(self, stiffness: bool = False) -> RegularizedSolver:
        """Tsit5 wrapped to accumulate the ERNODE (and, if `stiffness`, SRNODE) terms."""
        return RegularizedSolver(rtol=self.rtol, atol=self.atol, stiffness=stiffness)

    def zero(self) -> jax.Array:
        """A scalar zero in the dtype of the state (the start of an integrated penalty)."""
        return jnp.zeros((), jnp.result_type(*jtu.tree_leaves(self.y0)))

    def run(self, solver, field=None, y0=None, ts=None) -> diffrax.Solution:
        """Solves from `t0` to `ts[-1]` with `solver`, saving at `ts` and the solver state.

        Args:
            solver: a `RegularizedSolver`, or a wrapper of one (`ReservoirSolver`).
            field: the vector field (default: the problem's).
            y0: the initial state (default: the problem's).
            ts: the save times (default: the problem's).

        Returns:
            The diffrax solution; `sol.solver_state[1]` is the solver's own state.
        """
        field = self.vector_field if field is None else field
        y0 = self.y0 if y0 is None else y0
        ts = self.ts if ts is None else ts
        return adaptive_solve(
            diffrax.ODETerm(field), solver, self.t0, ts[-1], y0, self.params,
            saveat=diffrax.SaveAt(ts=ts), rtol=self.rtol, atol=self.atol,
            adjoint=self.adjoint, max_steps=self.max_steps,
        )


def _evaluations(solver: RegularizedSolver, sol: diffrax.Solution, state=None) -> jax.Array:
    """The number of vector-field evaluations of a solve with `solver`.

    `state` is the solver's `RegularizerState` where a wrapper hides it (default:
    `sol.solver_state[1]`).
    """
    state = sol.solver_state[1] if state is None else state
    return penalties(solver, sol, state).num_evaluations


def _unpenalized(problem: Problem, ts) -> Output:
    """The plain solve of the problem, saved at `ts`, with a zero penalty."""
    solver = problem.solver()
    sol = problem.run(solver, ts=ts)
    return Output(sol.ys, problem.zero(), _evaluations(solver, sol))


def _augmented(problem: Problem, field, num_integrals: int) -> Output:
    """Solves the state augmented with `num_integrals` running integrals that start at zero.

    Args:
        problem: the problem.
        field: the augmented vector field, d/dt (y, *integrals) = field(t, (y, *integrals), args).
        num_integrals: how many integrals follow `y` in the state.

    Returns:
        The states `y`, and as penalty the sum of the integrals at the last save time.
    """
    solver = problem.solver()
    zero = problem.zero()
    sol = problem.run(solver, field, (problem.y0,) + (zero,) * num_integrals)
    ys, *integrals = sol.ys
    penalty = integrals[0][-1]
    for integral in integrals[1:]:
        penalty = penalty + integral[-1]
    return Output(ys, penalty, _evaluations(solver, sol))


class Method(abc.ABC):
    """What every regularization method provides: `needs_key`, whether `solve` draws
    random numbers from its key, and `solve(problem, key)`, which solves the problem
    `integrate` built and computes the method's penalty (key None where not needed)."""

    needs_key: ClassVar[bool] = False

    @abc.abstractmethod
    def solve(self, problem: Problem, key) -> Output:
        """The method's `Output` for `problem`."""


@dataclass(frozen=True)
class NoRegularization(Method):
    """Plain maximum-likelihood training: the solve alone, with a zero penalty."""

    def solve(self, problem: Problem, key=None) -> Output:
        """Solves `problem`; the penalty is zero."""
        return _unpenalized(problem, problem.ts)


@dataclass(frozen=True)
class Steer(Method):
    """STEER (Ghosh et al., NeurIPS 2020): save times jittered by U(-b, b) times their gap.

    Attributes:
        b: the jitter, a fraction of the gap to the previous save time, in (0, 1).
    """

    b: float = 0.5
    needs_key: ClassVar[bool] = True

    def __post_init__(self):
        if not 0 < self.b < 1:
            raise ValueError(f"b must lie in (0, 1), got {self.b!r}.")

    def solve(self, problem: Problem, key) -> Output:
        """Solves `problem` up to and at jittered save times; the penalty is zero."""
        return _unpenalized(problem, baselines.steer_times(key, problem.t0, problem.ts, self.b))


@dataclass(frozen=True)
class GlobalRegularization(Method):
    """ERNODE or SRNODE (Pal et al., ICML 2021): solver heuristics over the whole solve.

    Attributes:
        kind: "error" (ERNODE: the error estimate times the step size) or "stiffness"
            (SRNODE: the stiffness estimate over the stability size).
        aggregation: "sum", "mean" or "max" over the accepted steps.
    """

    kind: Literal["error", "stiffness"] = "error"
    aggregation: Literal["sum", "mean", "max"] = "mean"

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}.")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(
                f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}."
            )

    def solve(self, problem: Problem, key=None) -> Output:
        """Solves `problem` with the accumulating solver and aggregates its `kind` term.

        Raises:
            ValueError: for the adjoints under which diffrax gives the penalty zero
                gradient (`BacksolveAdjoint`, `ImplicitAdjoint`).
        """
        solver = problem.solver(stiffness=self.kind == "stiffness")
        if isinstance(problem.adjoint, ZERO_GRADIENT_ADJOINTS):
            raise ValueError(
                f"adjoint={type(problem.adjoint).__name__}() gives a global penalty zero "
                "gradient in diffrax; use RecursiveCheckpointAdjoint or DirectAdjoint, or "
                "LocalRegularization."
            )
        sol = problem.run(solver)
        pen = penalties(solver, sol, sol.solver_state[1], self.aggregation)
        value = pen.error if self.kind == "error" else pen.stiffness
        return Output(sol.ys, value, pen.num_evaluations)


@dataclass(frozen=True)
class LocalRegularization(Method):
    """Local ERNODE or SRNODE (Pal et al., ICML 2023): one solver step at a random time.

    Attributes:
        kind: "error" or "stiffness", the term of the one step (see `local_penalty`).
        sampling: "unbiased" (a time uniform on [t0, ts[-1]), saved as one more time
            and stepped with the controller's step size) or "biased" (the start of an
            accepted step chosen uniformly, stepped with that step's size).
    """

    kind: Literal["error", "stiffness"] = "error"
    sampling: Literal["unbiased", "biased"] = "unbiased"
    needs_key: ClassVar[bool] = True

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}.")
        if self.sampling not in ("unbiased", "biased"):
            raise ValueError(
                f"sampling must be 'unbiased' or 'biased', got {self.sampling!r}."
            )

    def solve(self, problem: Problem, key) -> Output:
        """Solves `problem`, draws the time, and takes the one penalized step from there."""
        key_time, key_pick = jax.random.split(key)
        solver = problem.solver()
        if self.sampling == "unbiased":
            ys, t_reg, dt_reg, y_reg, nfe = _unbiased_sample(problem, solver, key_time)
        else:
            ys, t_reg, dt_reg, y_reg, nfe = _biased_sample(problem, solver, key_pick)
        local = local_penalty(
            diffrax.ODETerm(problem.vector_field), problem.params, t_reg, y_reg,
            problem.ts[-1], rtol=problem.rtol, atol=problem.atol, dt=dt_reg,
        )
        value = local.error if self.kind == "error" else local.stiffness
        return Output(ys, value, nfe)


def _unbiased_sample(problem: Problem, solver: RegularizedSolver, key):
    """Solves `problem` with one more save time, uniform on [t0, ts[-1]).

    Returns:
        (ys at the problem's save times, that time, None (the local step takes the
        controller's step size), the state there, the number of evaluations).
    """
    ts = problem.ts
    t_reg = unbiased_time(key, problem.t0, ts[-1])
    all_ts = jnp.concatenate([ts, t_reg[None]])
    order = jnp.argsort(all_ts)
    sol = problem.run(solver, ts=all_ts[order])
    ys = jtu.tree_map(lambda a: a[jnp.argsort(order)], sol.ys)
    ys, y_reg = jtu.tree_map(lambda a: a[:-1], ys), jtu.tree_map(lambda a: a[-1], ys)
    return ys, t_reg, None, y_reg, _evaluations(solver, sol)


def _biased_sample(problem: Problem, solver: RegularizedSolver, key):
    """Solves `problem` keeping the start of one accepted step, chosen uniformly.

    Returns:
        (ys, the start time of that step, its size, the state there, the number of
        evaluations).
    """
    sol = problem.run(ReservoirSolver(solver, key))
    (_, state), sample = sol.solver_state
    return sol.ys, sample.t, sample.dt, sample.y, _evaluations(solver, sol, state)


@dataclass(frozen=True)
class KineticJacobian(Method):
    """RNODE (Finlay et al., ICML 2020): kinetic energy plus the Jacobian Frobenius norm.

    The Frobenius norm is Hutchinson's estimate with one Gaussian probe drawn from the key.
    """

    needs_key: ClassVar[bool] = True

    def solve(self, problem: Problem, key) -> Output:
        """Solves `problem` with both integrals as extra state; the penalty is their sum."""
        y0 = problem.y0
        eps = jax.random.normal(key, jnp.shape(y0), jnp.result_type(y0))
        field = baselines.kinetic_jacobian_field(problem.vector_field, eps)
        return _augmented(problem, field, 2)


@dataclass(frozen=True)
class Taylor(Method):
    """TayNODE (Kelly et al., NeurIPS 2020) with the second total derivative."""

    def solve(self, problem: Problem, key=None) -> Output:
        """Solves `problem` with the integrated squared acceleration as extra state."""
        return _augmented(problem, baselines.taylor_field(problem.vector_field), 1)


def integrate(
    method: Method,
    vector_field,
    params,
    y0,
    t0,
    ts,
    *,
    key=None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    adjoint: diffrax.AbstractAdjoint | None = None,
    max_steps: int = 1024,
) -> Output:
    """Solves a neural ODE from `t0`, saving at `ts`, and computes `method`'s penalty.

    Args:
        method: the regularization method, e.g. `GlobalRegularization("error")`.
        vector_field: dy/dt = vector_field(t, y, params).
        params: the parameters, passed as diffrax's `args` (every adjoint sees them).
        y0: the initial state at `t0`.
        t0: the initial time.
        ts: the increasing save times, shape (n,) with n >= 1; the solve ends at ts[-1].
        key: a PRNG key, needed by the methods with `needs_key` (Steer,
            LocalRegularization and KineticJacobian).
        rtol: relative tolerance of the `PIDController` (and of the error estimates).
        atol: absolute tolerance of the `PIDController` (and of the error estimates).
        adjoint: the diffrax adjoint (None: `RecursiveCheckpointAdjoint`).
        max_steps: the most steps one solve may take.

    Returns:
        An `Output`: `ys` of shape (n, *y0.shape), the penalty (0 for `NoRegularization`
        and `Steer`) and the number of vector-field evaluations.
    """
    ts = jnp.asarray(ts)
    if ts.ndim != 1 or ts.shape[0] < 1:
        raise ValueError(f"ts must be a non-empty 1-D array of times, got shape {ts.shape}.")
    if not isinstance(method, Method):
        raise TypeError(f"method must be one of the samplax.neural_ode methods, got {method!r}.")
    if method.needs_key and key is None:
        raise ValueError(f"key is required for {type(method).__name__}.")
    problem = Problem(vector_field, params, y0, t0, ts, rtol, atol, adjoint, max_steps)
    return method.solve(problem, key)
