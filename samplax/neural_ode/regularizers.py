"""Global regularizers read from an adaptive solver's own heuristics.

ERNODE and SRNODE of Pal, Ma, Shah and Rackauckas, "Opening the Blackbox: Accelerating
Neural Differential Equations by Regularizing Internal Solver Heuristics" (ICML 2021).
`RegularizedSolver` wraps an explicit Runge-Kutta solver of diffrax and accumulates, in its
solver state, the scaled error estimate times the step size and the stiffness estimate
over the accepted steps of a solve (diffrax keeps the solver state of accepted steps only).
"""

from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

Aggregation = Literal["sum", "mean", "max"]
AGGREGATIONS = ("sum", "mean", "max")


def stability_size(tableau: diffrax.ButcherTableau) -> float:
    """Length of the real-axis stability interval [-x, 0] of an explicit RK tableau.

    SRNODE (Pal et al., ICML 2021) divides the stiffness estimate by it. The stability
    function is R(z) = 1 + z b^T (I - z A)^{-1} 1; for Tsit5 this gives 3.5068, the
    `alg_stability_size` of OrdinaryDiffEq.

    Args:
        tableau: the Butcher tableau of an explicit Runge-Kutta method.

    Returns:
        x > 0 such that |R(-s)| <= 1 for s in [0, x].
    """
    s = tableau.num_stages
    a = np.zeros((s, s))
    for i, row in enumerate(tableau.a_lower):
        a[i + 1, : len(row)] = row
    b = np.asarray(tableau.b_sol, dtype=float)

    def amplification(x):
        return abs(1.0 + (-x) * b @ np.linalg.solve(np.eye(s) + x * a, np.ones(s)))

    grid = np.linspace(1e-6, 10.0, 100_001)
    unstable = np.array([amplification(x) > 1.0 + 1e-12 for x in grid[::100]])
    hi = grid[::100][np.argmax(unstable)]
    lo = hi - 100 * (grid[1] - grid[0])
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if amplification(mid) <= 1.0 else (lo, mid)
    return float(lo)


def _rms(tree) -> jax.Array:
    """Root mean square over all entries of all leaves of `tree`."""
    leaves = jtu.tree_leaves(tree)
    total = sum(jnp.sum(jnp.square(x)) for x in leaves)
    return jnp.sqrt(total / sum(x.size for x in leaves))


def error_estimate(y0, y1, y_error, rtol, atol) -> jax.Array:
    """Tolerance-scaled RMS norm of the local error, as `diffrax.PIDController` computes it.

    This is the quantity the step controller compares with 1 (ERNODE, Pal et al. 2021).

    Args:
        y0: the state at the start of the step.
        y1: the state at the end of the step.
        y_error: the embedded error estimate of the step.
        rtol: relative tolerance.
        atol: absolute tolerance.

    Returns:
        The scalar RMS of y_error / (atol + rtol * max(|y0|, |y1|)).
    """
    scaled = jtu.tree_map(
        lambda e, a, b: e / (atol + rtol * jnp.maximum(jnp.abs(a), jnp.abs(b))),
        y_error,
        y0,
        y1,
    )
    return _rms(scaled)


def stiffness_estimate(tableau: diffrax.ButcherTableau, y0, y1, k, dt) -> jax.Array:
    """Dominant-eigenvalue estimate |rho| from the last two stages (Hairer's DOPRI5 test).

    SRNODE (Pal et al. 2021) penalizes it. Needs an FSAL tableau whose last two stages
    sit at c = 1, so that k_s - k_{s-1} = dt (f(y1) - f(g_{s-1})).

    Args:
        tableau: the solver's Butcher tableau.
        y0: the state at the start of the step.
        y1: the state at the end of the step.
        k: the stage increments of the step (diffrax's `dense_info["k"]`).
        dt: the step size.

    Returns:
        |rho| >= 0; non-finite or 0/0 estimates are zero.
    """
    row = jnp.asarray(tableau.a_lower[-2])
    g = jtu.tree_map(lambda y, kk: y + jnp.tensordot(row, kk[: row.size], axes=1), y0, k)
    num = _rms(jtu.tree_map(lambda kk: kk[-1] - kk[-2], k))
    den = _rms(jtu.tree_map(lambda a, b: a - b, y1, g)) * jnp.abs(dt)
    rho = num / jnp.where(den > 0, den, 1.0)
    return jnp.where((den > 0) & jnp.isfinite(rho), rho, 0.0)


def check_tableau(solver, stiffness: bool) -> diffrax.ButcherTableau:
    """The tableau of `solver`, checked to give the estimates the regularizers read.

    Args:
        solver: the diffrax solver to wrap or step.
        stiffness: whether the stiffness estimate is needed as well as the error estimate.

    Returns:
        The solver's Butcher tableau.

    Raises:
        TypeError: `solver` is not an explicit Runge-Kutta solver.
        ValueError: it has no embedded error estimate, or (with `stiffness`) its last two
            stages are not both at c = 1 in an FSAL tableau.
    """
    if not isinstance(solver, diffrax.AbstractERK):
        raise TypeError(
            f"solver must be an explicit Runge-Kutta solver of diffrax (e.g. Tsit5(), "
            f"Dopri5(), Bosh3()), got {type(solver).__name__}."
        )
    tableau = solver.tableau
    if tableau.b_error is None or not np.any(tableau.b_error):
        raise ValueError(f"solver {type(solver).__name__} has no embedded error estimate.")
    if stiffness and not (tableau.fsal and tableau.c[-1] == 1 and tableau.c[-2] == 1):
        raise ValueError(
            f"stiffness=True needs an FSAL tableau whose last two stages are at c = 1 "
            f"(Tsit5, Dopri5); {type(solver).__name__} has none. Pass stiffness=False."
        )
    return tableau


class RegularizerState(eqx.Module):
    """Running sums and maxima over the accepted steps of a solve.

    Attributes:
        error_sum: sum of E * dt (E the scaled error estimate).
        error_max: largest E * dt.
        stiffness_sum: sum of |rho| / stability size.
        stiffness_max: largest |rho| / stability size.
        num_accepted: the number of accepted steps.
        num_evaluations: vector-field calls of the accepted steps.
    """

    error_sum: jax.Array
    error_max: jax.Array
    stiffness_sum: jax.Array
    stiffness_max: jax.Array
    num_accepted: jax.Array
    num_evaluations: jax.Array


class AbstractForwardingSolver(diffrax.AbstractWrappedSolver):
    """A diffrax solver wrapper that takes everything except `init` and `step` from `solver`.

    Subclasses keep their own state next to the wrapped solver's, so the step controller,
    interpolation and orders stay those of the wrapped solver.
    """

    @property
    def term_structure(self):
        """The wrapped solver's term structure."""
        return self.solver.term_structure

    @property
    def interpolation_cls(self):  # pyright: ignore
        """The wrapped solver's dense interpolation."""
        return self.solver.interpolation_cls

    @property
    def term_compatible_contr_kwargs(self):
        """The wrapped solver's control keyword arguments."""
        return self.solver.term_compatible_contr_kwargs

    @property
    def scan_kind(self):
        """The wrapped solver's scan kind over stages."""
        return self.solver.scan_kind

    def order(self, terms):
        """The wrapped solver's order."""
        return self.solver.order(terms)

    def strong_order(self, terms):
        """The wrapped solver's strong order."""
        return self.solver.strong_order(terms)

    def error_order(self, terms):
        """The wrapped solver's error order, which the step controller uses."""
        return self.solver.error_order(terms)

    def func(self, terms, t0, y0, args):
        """The vector field, evaluated by the wrapped solver."""
        return self.solver.func(terms, t0, y0, args)


class RegularizedSolver(diffrax.AbstractAdaptiveSolver, AbstractForwardingSolver):
    """Wraps an explicit RK solver and accumulates ERNODE/SRNODE terms (Pal et al. 2021).

    Per accepted step of size dt it adds `E * dt`, with E the RMS of the error estimate
    scaled by `atol + rtol * max(|y0|, |y1|)` (the quantity the step controller compares
    with 1), and `|rho| / stability_size`, with rho the dominant-eigenvalue estimate.
    Use it with a `PIDController` with the same `rtol` and `atol` (see `solve`).

    Args:
        solver: an explicit RK solver of diffrax with an error estimate (default Tsit5).
        rtol: relative tolerance of the error estimate, positive.
        atol: absolute tolerance of the error estimate, positive.
        stiffness: also accumulate the stiffness estimate (needs Tsit5, Dopri5 or
            another FSAL tableau whose last two stages are at c = 1).

    Attributes:
        stability_size: the real-axis stability size of the solver's tableau.
    """

    solver: diffrax.AbstractERK
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    stiffness: bool = eqx.field(static=True)
    stability_size: float = eqx.field(static=True)

    def __init__(self, solver=None, *, rtol: float, atol: float, stiffness: bool = True):
        solver = diffrax.Tsit5() if solver is None else solver
        tableau = check_tableau(solver, stiffness)
        for name, value in (("rtol", rtol), ("atol", atol)):
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
        self.solver = solver
        self.rtol = float(rtol)
        self.atol = float(atol)
        self.stiffness = stiffness
        self.stability_size = stability_size(tableau)

    def init(self, terms, t0, t1, y0, args):
        """The wrapped solver's state and a zero `RegularizerState`."""
        dtype = jnp.result_type(*jtu.tree_leaves(y0))
        zero = jnp.zeros((), dtype)
        count = jnp.zeros((), jnp.int32)
        reg = RegularizerState(zero, zero, zero, zero, count, count)
        return self.solver.init(terms, t0, t1, y0, args), reg

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        """One step of the wrapped solver, adding its terms to the `RegularizerState`."""
        inner, reg = solver_state
        tableau = self.solver.tableau
        if tableau.fsal:
            first_step = inner[0]
            evals = tableau.num_stages - 1 + (first_step | made_jump).astype(jnp.int32)
        else:
            evals = jnp.asarray(tableau.num_stages, jnp.int32)
        y1, y_error, dense_info, inner, result = self.solver.step(
            terms, t0, t1, y0, args, inner, made_jump
        )
        dt = t1 - t0
        err = error_estimate(y0, y1, y_error, self.rtol, self.atol) * dt
        if self.stiffness:
            stiff = stiffness_estimate(tableau, y0, y1, dense_info["k"], dt)
            stiff = stiff / self.stability_size
        else:
            stiff = jnp.zeros_like(err)
        reg = RegularizerState(
            error_sum=reg.error_sum + err,
            error_max=jnp.maximum(reg.error_max, err),
            stiffness_sum=reg.stiffness_sum + stiff,
            stiffness_max=jnp.maximum(reg.stiffness_max, stiff),
            num_accepted=reg.num_accepted + 1,
            num_evaluations=reg.num_evaluations + evals,
        )
        return y1, y_error, dense_info, (inner, reg), result


class Penalties(eqx.Module):
    """ERNODE and SRNODE terms of one solve, and its cost.

    Attributes:
        error: the aggregated error term (ERNODE).
        stiffness: the aggregated stiffness term (SRNODE).
        num_evaluations: vector-field calls, rejected steps included.
        num_accepted: the number of accepted steps.
    """

    error: jax.Array
    stiffness: jax.Array
    num_evaluations: jax.Array
    num_accepted: jax.Array


def aggregate(state: RegularizerState, aggregation: Aggregation = "mean") -> tuple:
    """The error and stiffness terms of a solve, aggregated over its accepted steps.

    Args:
        state: the `RegularizerState` at the end of a solve.
        aggregation: "sum", "mean" or "max".

    Returns:
        (error term, stiffness term).
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}.")
    if aggregation == "max":
        return state.error_max, state.stiffness_max
    if aggregation == "sum":
        return state.error_sum, state.stiffness_sum
    n = jnp.maximum(state.num_accepted, 1).astype(state.error_sum.dtype)
    return state.error_sum / n, state.stiffness_sum / n


# Adjoints under which diffrax gives the solver state, so a global penalty, zero gradient.
ZERO_GRADIENT_ADJOINTS = (diffrax.BacksolveAdjoint, diffrax.ImplicitAdjoint)


def _with_scan_kind(solver, kind: str):
    """Sets `scan_kind` on the innermost RK solver (DirectAdjoint/ForwardMode need it)."""
    if isinstance(solver, diffrax.AbstractWrappedSolver):
        return eqx.tree_at(lambda s: s.solver, solver, _with_scan_kind(solver.solver, kind))
    if solver.scan_kind is None:
        return eqx.tree_at(lambda s: s.scan_kind, solver, kind, is_leaf=lambda x: x is None)
    return solver


def adaptive_solve(
    term, solver, t0, t1, y0, args, *, saveat, rtol, atol, dt0=None, adjoint=None,
    max_steps=4096,
) -> diffrax.Solution:
    """`diffrax.diffeqsolve` with a `PIDController` and the solver state saved.

    Args:
        term: the diffrax term.
        solver: the (wrapped) solver.
        t0: the initial time.
        t1: the final time.
        y0: the initial state.
        args: the vector field's `args`.
        saveat: what to save; `solver_state=True` is added.
        rtol: relative tolerance of the controller.
        atol: absolute tolerance of the controller.
        dt0: the initial step size (None: the controller's choice).
        adjoint: the diffrax adjoint (None: `RecursiveCheckpointAdjoint`); for
            `ForwardMode` and `DirectAdjoint` the scan kind they need is set.
        max_steps: the most steps the solve may take.

    Returns:
        The diffrax solution.
    """
    adjoint = diffrax.RecursiveCheckpointAdjoint() if adjoint is None else adjoint
    if isinstance(adjoint, diffrax.ForwardMode):
        solver = _with_scan_kind(solver, "lax")
    elif isinstance(adjoint, diffrax.DirectAdjoint):
        solver = _with_scan_kind(solver, "bounded")
    saveat = diffrax.SaveAt(
        subs=saveat.subs,
        dense=saveat.dense,
        solver_state=True,
        controller_state=saveat.controller_state,
        made_jump=saveat.made_jump,
    )
    return diffrax.diffeqsolve(
        term,
        solver,
        t0,
        t1,
        dt0,
        y0,
        args,
        saveat=saveat,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        adjoint=adjoint,
        max_steps=max_steps,
    )


def penalties(
    solver: RegularizedSolver, sol: diffrax.Solution, state: RegularizerState,
    aggregation: Aggregation = "mean",
) -> Penalties:
    """Aggregated penalties and the vector-field count of a solve with `solver`.

    Args:
        solver: the `RegularizedSolver` of the solve.
        sol: its solution.
        state: the solver's `RegularizerState` at the end of the solve.
        aggregation: "sum", "mean" or "max" over accepted steps.

    Returns:
        `Penalties`; `num_evaluations` counts every vector-field call, rejected steps
        included (a rejected *first* step of an FSAL solver costs one call more than
        counted).
    """
    error, stiffness = aggregate(state, aggregation)
    tableau = solver.solver.tableau
    per_step = tableau.num_stages - int(tableau.fsal)
    nfe = state.num_evaluations + per_step * sol.stats["num_rejected_steps"]
    return Penalties(error, stiffness, nfe, state.num_accepted)


def solve(
    term: diffrax.AbstractTerm,
    solver: RegularizedSolver,
    t0,
    t1,
    y0,
    args=None,
    *,
    saveat: diffrax.SaveAt | None = None,
    dt0=None,
    adjoint: diffrax.AbstractAdjoint | None = None,
    aggregation: Aggregation = "mean",
    max_steps: int = 4096,
) -> tuple[diffrax.Solution, Penalties]:
    """Solves with a `PIDController` at the solver's tolerances and reads the penalties.

    Args:
        term: the diffrax term.
        solver: a `RegularizedSolver`.
        t0: the initial time.
        t1: the final time.
        y0: the initial state.
        args: the vector field's `args`.
        saveat: what to save (default: the state at t1).
        dt0: the initial step size (None: the controller's choice).
        adjoint: the diffrax adjoint (None: `RecursiveCheckpointAdjoint`).
        aggregation: "sum", "mean" or "max" over accepted steps.
        max_steps: the most steps the solve may take.

    Returns:
        (diffrax solution, `Penalties`).

    Raises:
        ValueError: for `BacksolveAdjoint` and `ImplicitAdjoint`, under which diffrax
            gives the solver state zero gradient; use `RecursiveCheckpointAdjoint`
            (default), `DirectAdjoint`, or local regularization.
    """
    if not isinstance(solver, RegularizedSolver):
        raise TypeError(f"solver must be a RegularizedSolver, got {type(solver).__name__}.")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}.")
    if isinstance(adjoint, ZERO_GRADIENT_ADJOINTS):
        raise ValueError(
            f"adjoint={type(adjoint).__name__}() cannot differentiate a global penalty: "
            "diffrax propagates gradients only through `ys`, so the penalty would get a "
            "zero gradient. Use RecursiveCheckpointAdjoint or DirectAdjoint, or local "
            "regularization (samplax.neural_ode.local_penalty) with this adjoint."
        )
    sol = adaptive_solve(
        term, solver, t0, t1, y0, args,
        saveat=diffrax.SaveAt(t1=True) if saveat is None else saveat,
        rtol=solver.rtol, atol=solver.atol, dt0=dt0, adjoint=adjoint, max_steps=max_steps,
    )
    return sol, penalties(solver, sol, sol.solver_state[1], aggregation)
