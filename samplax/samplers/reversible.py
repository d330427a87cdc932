"""Exact inversion: `reversible_invert` maps data to a noise state and `reversible_sample`
maps it back to the same data up to floating-point rounding, at any number of steps, with
reversible Heun (`samplax.solvers.reversible`).

The noise state is a `ReversibleState` (the noise and its companion); keep both for an
exact round trip. `reversible_sample` also samples from plain noise.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from samplax.samplers.denoiser import Denoiser
from samplax.samplers.sampling import Info
from samplax.solvers.grids import check_grid, time_grid
from samplax.solvers.reversible import ReversibleHeun, ReversibleState

__all__ = ["reversible_sample", "reversible_invert"]


def _grid(model, steps, grid, t_start, t_end):
    if isinstance(grid, str):
        if steps is None:
            raise ValueError("steps is required when grid is a name; pass steps=... or an array grid")
        return time_grid(model.schedule, steps, grid, t_start, t_end)
    check_grid(model.schedule, grid)
    times = jnp.asarray(grid, jnp.result_type(float))
    if steps is not None and steps != times.shape[0] - 1:
        raise ValueError(f"steps={steps} disagrees with a grid of {times.shape[0]} times")
    if not isinstance(grid, jax.core.Tracer) and not bool(times[0] > times[-1]):
        raise ValueError("give the grid from noise to data (decreasing times)")
    return times


@functools.partial(jax.jit, static_argnames=("return_trajectory",))
def _solve(model, state, times, return_trajectory):
    return ReversibleHeun().solve(model.velocity, state, times, return_trajectory)


def _check(model, x, name):
    if not isinstance(model, Denoiser):
        raise TypeError(f"model must be a samplax Denoiser, got {type(model).__name__}")
    if jnp.ndim(x) < 2:
        raise ValueError(f"{name} must have a leading batch axis, got shape {jnp.shape(x)}")
    if not isinstance(x, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"{name} contains NaN or inf values")


def reversible_sample(
    model: Denoiser,
    noise,
    *,
    steps: int | None = None,
    grid="uniform",
    t_start=None,
    t_end=None,
    return_trajectory: bool = False,
):
    """Solve the probability-flow ODE from t_start to t_end with reversible Heun.

    Args:
        model: the `Denoiser`.
        noise: standard normal noise (batch first), or the `ReversibleState` returned by
            `reversible_invert` with the same grid, which this maps back to the data exactly.
        steps, grid, t_start, t_end: the time grid, as for `samplax.sample`.

    Returns:
        (samples, Info) with Info.nfe = steps + 1.
    """
    state = noise if isinstance(noise, ReversibleState) else ReversibleState.start(jnp.asarray(noise))
    _check(model, state.x, "noise")
    _check(model, state.x_hat, "noise.x_hat")
    times = _grid(model, steps, grid, t_start, t_end)
    sigma = model.schedule.sigma(times[0]).astype(state.x.dtype)
    result, trajectory = _solve(model, state.scaled(sigma), times, return_trajectory)
    if not bool(jnp.all(jnp.isfinite(result.x))):
        raise FloatingPointError("reversible sampling produced NaN or inf values; try more steps")
    steps = times.shape[0] - 1
    return result.x, Info(nfe=jnp.asarray(ReversibleHeun().evaluations(steps)), times=times, trajectory=trajectory)


def reversible_invert(
    model: Denoiser,
    data,
    *,
    steps: int | None = None,
    grid="uniform",
    t_start=None,
    t_end=None,
    return_trajectory: bool = False,
):
    """Run reversible Heun from data at t_end back to noise at t_start, over the reversed
    grid. Returns (ReversibleState, Info): `state.x` is the noise (scaled like the noise of
    `samplax.sample`), and `reversible_sample(model, state, ...)` with the same grid
    returns `data` up to rounding."""
    data = jnp.asarray(data)
    _check(model, data, "data")
    times = _grid(model, steps, grid, t_start, t_end)
    reversed_times = times[::-1]
    result, trajectory = _solve(model, ReversibleState.start(data), reversed_times, return_trajectory)
    noise = result.scaled(1.0 / model.schedule.sigma(times[0]).astype(data.dtype))
    if not bool(jnp.all(jnp.isfinite(noise.x))):
        raise FloatingPointError("reversible inversion produced NaN or inf values; try more steps")
    steps = times.shape[0] - 1
    info = Info(nfe=jnp.asarray(ReversibleHeun().evaluations(steps)), times=reversed_times, trajectory=trajectory)
    return noise, info
