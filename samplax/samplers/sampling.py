"""`sample` and `invert`: the one entry point every solver goes through.

Both are jitted once per (solver, shapes, static options); the grid's end points and an
explicit grid are traced arguments, so changing them never recompiles, and the whole
computation can be differentiated with respect to the noise, the model parameters and the
time grid.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from samplax.samplers.denoiser import Denoiser
from samplax.solvers.base import AdaptiveSolver, FixedGridSolver
from samplax.solvers.base import get as get_solver
from samplax.solvers.engine import run_plan
from samplax.solvers.grids import GRIDS, check_finite_lambda, check_grid, default_grid, time_grid

__all__ = ["Info", "sample", "invert"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Info:
    """What a run did: model evaluations (a scalar, or one per sample for adaptive
    solvers), the time grid it used (None for adaptive solvers), and the state after each
    evaluation when a trajectory was asked for."""

    nfe: jax.Array
    times: jax.Array | None
    trajectory: jax.Array | None = None


def _check_inputs(model, solver, x, name, check_finite=True):
    if not isinstance(model, Denoiser):
        raise TypeError(f"model must be a samplax Denoiser, got {type(model).__name__}")
    if not isinstance(solver, (FixedGridSolver, AdaptiveSolver)):
        raise TypeError(
            f"solver must be a samplax solver (see samplax.solvers.get), got {type(solver).__name__}"
        )
    if jnp.ndim(x) < 2:
        raise ValueError(f"{name} must have a leading batch axis, got shape {jnp.shape(x)}")
    if check_finite and not isinstance(x, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"{name} contains NaN or inf values")


def _resolve_grid(model, solver, steps, grid, t_start, t_end, reverse):
    """(kind, times, steps, t_start, t_end): a grid kind to compute inside the jitted run
    (times None), or an explicit grid from noise to data (kind None). Checks everything
    that can be checked before running."""
    schedule = model.schedule
    if grid is None:
        grid = default_grid(schedule)
    if isinstance(grid, str):
        if steps is None:
            raise ValueError("steps is required when grid is a name; pass steps=... or an array grid")
        if not isinstance(steps, (int, np.integer)) or steps < solver.min_steps():
            raise ValueError(f"{type(solver).__name__} needs at least {solver.min_steps()} steps, got {steps}")
        if grid not in GRIDS:
            raise ValueError(f"unknown grid {grid!r}; choose one of {GRIDS} or pass an array of times")
        t_start = schedule.t_max if t_start is None else t_start
        t_end = schedule.t_min if t_end is None else t_end
        schedule.check_times(t_start, t_end)
        dtype = jnp.result_type(float)
        return grid, None, int(steps), jnp.asarray(t_start, dtype), jnp.asarray(t_end, dtype)
    check_grid(schedule, grid)
    times = jnp.asarray(grid, jnp.result_type(float))
    if steps is not None and steps != times.shape[0] - 1:
        raise ValueError(f"steps={steps} disagrees with a grid of {times.shape[0]} times")
    if not isinstance(grid, jax.core.Tracer):
        decreasing = bool(np.asarray(grid)[0] > np.asarray(grid)[-1])
        if not decreasing:
            raise ValueError(
                "give the grid from noise to data (decreasing times); invert() reverses it itself"
                if not reverse
                else "give the grid from noise to data (decreasing times), as for sample()"
            )
    return None, times, times.shape[0] - 1, None, None


@functools.partial(
    jax.jit, static_argnames=("solver", "kind", "steps", "denoise_to_zero", "return_trajectory", "reverse")
)
def _run_fixed(model, solver, state, times, t_start, t_end, kind, steps, denoise_to_zero, return_trajectory, reverse):
    """One compiled call: the grid (from its kind, or as given), the plan, the scan, the
    scaling between noise and the state at t_start, and finiteness flags (input, grid,
    coefficients, output) that the caller reads with a single transfer."""
    schedule = model.schedule
    if kind is not None:
        times = time_grid(schedule, steps, kind, t_start, t_end)
    sigma_start = schedule.sigma(times[0]).astype(state.dtype)
    run_times = times[::-1] if reverse else times
    x = state if reverse else sigma_start * state
    plan = solver.plan(schedule, run_times, denoise_to_zero)
    coefficients_finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(plan)]))
    result, trajectory = run_plan(plan, model.predict(solver.prediction), x, return_trajectory)
    if reverse:
        result = result / sigma_start
    checks = jnp.stack([
        jnp.all(jnp.isfinite(state)),
        jnp.all(jnp.isfinite(times)),
        coefficients_finite,
        jnp.all(jnp.isfinite(result)),
    ])
    return result, trajectory, run_times, checks


def _raise_on_checks(checks, solver, kind, name, what):
    if isinstance(checks, jax.core.Tracer):
        return
    input_finite, grid_finite, coefficients_finite, output_finite = np.asarray(checks)
    if not input_finite:
        raise ValueError(f"{name} contains NaN or inf values")
    if not grid_finite:  # a grid spaced in lambda between end points where lambda is infinite
        check_finite_lambda(kind, np.inf, np.inf)
    _check_coefficients(coefficients_finite, solver)
    if not output_finite:
        _check_output(jnp.asarray(np.nan), what)


def _check_coefficients(finite, solver):
    """A solver's coefficients are not finite where its step is undefined on the grid: an
    exponential integrator stepping from or to a point where lambda = log(alpha / sigma) is
    infinite (t = 1 or t = 0 on rectified flow), for instance."""
    if isinstance(finite, jax.core.Tracer) or bool(finite):
        return
    raise ValueError(
        f"{solver!r} has non-finite coefficients on this grid; exponential integrators step in "
        "lambda = log(alpha / sigma), which is infinite at t = 1 and t = 0 on rectified flow: "
        "use t_start < 1 and t_end > 0 (e.g. t_end=1e-3 with denoise_to_zero=True), or a flow solver"
    )


@functools.partial(jax.jit, static_argnames=("solver",))
def _run_adaptive(model, solver, x, t_start, t_end):
    return solver.solve(model.predict(solver.prediction), model.schedule, x, t_start, t_end)


def _check_output(result, what):
    if not isinstance(result, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(result))):
        raise FloatingPointError(
            f"{what} produced NaN or inf values; try more steps, a lower-order solver, "
            "lower_order_final=True, or a t_end further from 0"
        )


def sample(
    model: Denoiser,
    solver,
    noise: jax.Array,
    *,
    steps: int | None = None,
    grid=None,
    t_start=None,
    t_end=None,
    denoise_to_zero: bool = False,
    return_trajectory: bool = False,
):
    """Solve the probability-flow ODE from noise at t_start to t_end.

    Args:
        model: the `Denoiser`.
        solver: a solver object or a registry name (`samplax.solvers.names()`).
        noise: standard normal noise, batch first; the initial state is
            sigma(t_start) * noise.
        steps: number of grid intervals (ignored by adaptive solvers).
        grid: a grid kind ("logsnr", "uniform", "quadratic", "karras", "shifted") or an
            explicit decreasing array of times from t_start to t_end. Default: "logsnr" for
            diffusion schedules, "uniform" for rectified flow.
        t_start, t_end: end points (default: the schedule's t_max and t_min).
        denoise_to_zero: finish with one more evaluation at t_end that returns the data
            prediction there (the step to sigma = 0).
        return_trajectory: keep the state after every evaluation in `info.trajectory`.

    Returns:
        (samples, Info).
    """
    solver = _as_solver(solver)
    _check_inputs(model, solver, noise, "noise", check_finite=solver.adaptive)
    schedule = model.schedule
    if solver.adaptive:
        t_start = schedule.t_max if t_start is None else t_start
        t_end = schedule.t_min if t_end is None else t_end
        schedule.check_times(t_start, t_end)
        x = schedule.sigma(jnp.asarray(t_start, noise.dtype)).astype(noise.dtype) * noise
        result, nfe = _run_adaptive(model, solver, x, t_start, t_end)
        if denoise_to_zero:
            result = model.data(result, jnp.asarray(t_end, noise.dtype))
            nfe = nfe + 1
        _check_output(result, "sampling")
        return result, Info(nfe=nfe, times=None)
    kind, times, steps, t_start, t_end = _resolve_grid(model, solver, steps, grid, t_start, t_end, reverse=False)
    result, trajectory, times, checks = _run_fixed(
        model, solver, noise, times, t_start, t_end, kind, steps, denoise_to_zero, return_trajectory, False
    )
    _raise_on_checks(checks, solver, kind, "noise", "sampling")
    nfe = jnp.asarray(solver.evaluations(steps, denoise_to_zero))
    return result, Info(nfe=nfe, times=times, trajectory=trajectory)


def invert(
    model: Denoiser,
    solver,
    data: jax.Array,
    *,
    steps: int | None = None,
    grid=None,
    t_start=None,
    t_end=None,
    return_trajectory: bool = False,
):
    """Run the probability-flow ODE backwards, from data at t_end to noise at t_start, with
    the same solver over the reversed grid. Returns (noise, Info) where noise is scaled so
    that `sample(model, solver, noise, ...)` with the same grid maps it back to `data`."""
    solver = _as_solver(solver)
    _check_inputs(model, solver, data, "data", check_finite=False)
    if solver.adaptive:
        raise ValueError("invert() needs a fixed-grid solver; adaptive solvers only sample")
    kind, times, steps, t_start, t_end = _resolve_grid(model, solver, steps, grid, t_start, t_end, reverse=True)
    noise, trajectory, reversed_times, checks = _run_fixed(
        model, solver, data, times, t_start, t_end, kind, steps, False, return_trajectory, True
    )
    _raise_on_checks(checks, solver, kind, "data", "inversion")
    return noise, Info(nfe=jnp.asarray(solver.evaluations(steps)), times=reversed_times, trajectory=trajectory)


def _as_solver(solver):
    return get_solver(solver) if isinstance(solver, str) else solver
