"""Exact inversion: `reversible_invert` maps data to a noise state and `reversible_sample`
maps it back to the same data up to floating-point rounding, at any number of steps, with
reversible Heun (`samplax.solvers.reversible`).

The noise state is a `ReversibleState` (the noise and its companion); keep both for an
exact round trip. `reversible_sample` also samples from plain noise, as does
`samplax.sample(model, "reversible-heun", noise)`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from samplax.checks import check_flag
from samplax.samplers.denoiser import Denoiser
from samplax.samplers.gradients import Backpropagation, GradientMethod, as_gradient_method
from samplax.samplers.info import Info
from samplax.samplers.inputs import Grid, check_batch, check_model, resolve_grid
from samplax.solvers.reversible import ReversibleHeun, ReversibleState

__all__ = ["reversible_sample", "reversible_invert"]


@functools.partial(jax.jit, static_argnames=("solver", "return_trajectory", "adjoint"))
def _solve(model, solver, state, times, return_trajectory, adjoint):
    return adjoint.integrate_reversible(model, solver, state, times, return_trajectory)


def _as_state(noise) -> ReversibleState:
    state = noise if isinstance(noise, ReversibleState) else ReversibleState.start(noise)
    check_batch(state.x, "noise")
    check_batch(state.x_hat, "noise.x_hat")
    if state.x_hat.shape != state.x.shape or state.x_hat.dtype != state.x.dtype:
        raise ValueError(
            f"noise.x_hat (shape {state.x_hat.shape}, {state.x_hat.dtype}) must match noise.x (shape "
            f"{state.x.shape}, {state.x.dtype}): they are the two halves of one reversible Heun state"
        )
    _check_state_times(state.times)
    return state


def _check_state_times(times) -> None:
    """A state's `times` (the grid it was inverted over) is None or a concrete grid from
    noise to data: a 1-D array of at least two finite, strictly decreasing times."""
    if times is None or isinstance(times, jax.core.Tracer):
        return
    array = np.asarray(times)
    if array.ndim != 1 or array.shape[0] < 2 or not np.all(np.isfinite(array)) or not np.all(np.diff(array) < 0):
        raise ValueError(
            f"noise.times must be the grid the state was inverted over, a 1-D array of at least 2 finite times "
            f"decreasing from noise to data (or None), got {array!r}"
        )


def _check_state_grid(state: ReversibleState, times) -> None:
    """A state from `reversible_invert` maps back to the data only over the grid it was
    inverted over."""
    if state.times is None or isinstance(times, jax.core.Tracer) or isinstance(state.times, jax.core.Tracer):
        return
    if state.times.shape != times.shape or not bool(jnp.allclose(state.times, times, rtol=1e-6, atol=0.0)):
        raise ValueError(
            f"this ReversibleState was inverted over a grid of {state.times.shape[0]} times from "
            f"{float(state.times[0])} to {float(state.times[-1])}, but reversible_sample was given one of "
            f"{times.shape[0]} times from {float(times[0])} to {float(times[-1])}: pass the same grid "
            "(grid=state.times), or ReversibleState(state.x, state.x_hat) to sample over another"
        )


def solve_forward(model: Denoiser, solver: ReversibleHeun, noise, request: Grid, return_trajectory: bool,
                  adjoint: GradientMethod):
    """(samples, Info) of a reversible solve from noise (or a ReversibleState) over the
    checked grid `request`, differentiated by `adjoint`: what `reversible_sample` and
    `sample` with a reversible solver run."""
    state = _as_state(noise)
    times = request.concrete(model.schedule)
    _check_state_grid(state, times)
    sigma = model.schedule.sigma(times[0]).astype(state.x.dtype)
    start = ReversibleState(state.x, state.x_hat).scaled(sigma)
    result, trajectory = _solve(model, solver, start, times, return_trajectory, adjoint)
    if not isinstance(result.x, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(result.x))):
        raise FloatingPointError("reversible sampling produced NaN or inf values; try more steps")
    return result.x, Info(nfe=jnp.asarray(solver.evaluations(request.steps)), times=times, trajectory=trajectory)


def reversible_sample(
    model: Denoiser,
    noise,
    *,
    steps: int | None = None,
    grid=None,
    t_start=None,
    t_end=None,
    return_trajectory: bool = False,
    adjoint: GradientMethod | None = None,
):
    """Solve the probability-flow ODE from t_start to t_end with reversible Heun.

    Args:
        model: the `Denoiser`.
        noise: standard normal noise (batch first), or the `ReversibleState` returned by
            `reversible_invert` with the same grid, which this maps back to the data exactly.
        steps, grid, t_start, t_end: the time grid, as for `samplax.sample`. By default,
            a state's own `times` (the grid it was inverted over), else the schedule's
            `default_grid` (uniform on flows).
        adjoint: how the solve is differentiated: `samplax.Backpropagation()` (default,
            None), `Checkpointed()` or `ReversibleAdjoint()` (exact, constant memory).

    Returns:
        (samples, Info) with Info.nfe = steps + 1.
    """
    check_flag("return_trajectory", return_trajectory)
    state = _as_state(noise)
    check_model(model, "reversible_sample", state.x, "noise")
    if state.times is not None and all(value is None for value in (steps, grid, t_start, t_end)):
        grid = state.times  # the grid the state was inverted over, the only one that maps it back
    solver = ReversibleHeun()
    adjoint = as_gradient_method(adjoint, solver, return_trajectory=return_trajectory, share_compilation=False)
    request = resolve_grid(model.schedule, solver, steps, grid, t_start, t_end)
    return solve_forward(model, solver, noise, request, return_trajectory, adjoint)


def reversible_invert(model: Denoiser, data, *, steps: int | None = None, grid=None, t_start=None, t_end=None,
                      return_trajectory: bool = False):
    """Run reversible Heun from data at t_end back to noise at t_start, over the reversed
    grid. Returns (ReversibleState, Info): `state.x` is the noise (scaled like the noise of
    `samplax.sample`), and `reversible_sample(model, state, ...)` with the same grid
    returns `data` up to rounding."""
    check_flag("return_trajectory", return_trajectory)
    check_batch(data, "data")
    check_model(model, "reversible_invert", data, "data")
    solver = ReversibleHeun()
    times = resolve_grid(model.schedule, solver, steps, grid, t_start, t_end).concrete(model.schedule)
    reversed_times = times[::-1]
    result, trajectory = _solve(
        model, solver, ReversibleState.start(data), reversed_times, return_trajectory, Backpropagation()
    )
    noise = dataclasses.replace(result.scaled(1.0 / model.schedule.sigma(times[0]).astype(data.dtype)), times=times)
    if not isinstance(noise.x, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(noise.x))):
        raise FloatingPointError("reversible inversion produced NaN or inf values; try more steps")
    steps = times.shape[0] - 1
    return noise, Info(nfe=jnp.asarray(solver.evaluations(steps)), times=reversed_times, trajectory=trajectory)
