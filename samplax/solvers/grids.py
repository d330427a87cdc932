"""Time grids: where a fixed-step solver evaluates the model, from t_start (noise) to t_end.

Each grid is computed in `jax.numpy` from traced end points, so a grid can be jitted and
differentiated. The kinds follow the literature: uniform in t and quadratic in t (DDIM,
DPM-Solver), uniform in lambda (DPM-Solver's "logSNR"), Karras et al. (2022)'s rho-spacing
of sigma / alpha, and the resolution-dependent shift of SD3 for flows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from samplax.checks import check_count, check_positive, check_real
from samplax.schedules import Schedule

__all__ = ["GRIDS", "check_finite_lambda", "check_grid", "time_grid"]

GRIDS = ("uniform", "logsnr", "quadratic", "karras", "shifted")


def time_grid(
    schedule: Schedule,
    steps: int,
    kind: str = "logsnr",
    t_start=None,
    t_end=None,
    rho: float | None = None,
    shift: float | None = None,
) -> jax.Array:
    """A decreasing grid of steps + 1 times from t_start (default t_max) to t_end (default
    t_min), both included.

    Args:
        kind: "uniform" (in t), "logsnr" (uniform in lambda), "quadratic" (uniform in
            sqrt(t)), or "karras" (uniform in (sigma / alpha)^(1 / rho)).
        rho: the exponent of the "karras" grid (default 7, the EDM paper's); refused for
            other kinds, which it would not change.
        shift: the factor s of the "shifted" grid: uniform in u, then t = s u / (1 + (s - 1) u),
            the time shift of SD3 (Esser et al. 2024) and FLUX for flows (default 3, SD3's);
            refused for other kinds.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a samplax schedule object, got {schedule!r}")
    check_count("steps", steps)
    if kind not in GRIDS:
        raise ValueError(f"unknown grid {kind!r}; choose one of {GRIDS} or pass an array of times")
    for name, value, owner in (("rho", rho, "karras"), ("shift", shift, "shifted")):
        if value is not None and kind != owner:
            raise ValueError(f"{name}={value} applies to the {owner!r} grid only; grid {kind!r} would ignore it")
        if value is not None:
            check_positive(name, value)
    rho = 7.0 if rho is None else rho
    shift = 3.0 if shift is None else shift
    t_start = schedule.t_max if t_start is None else t_start
    t_end = schedule.t_min if t_end is None else t_end
    for name, value in (("t_start", t_start), ("t_end", t_end)):
        check_real(name, value)
    schedule.check_times(t_start, t_end)
    if not any(isinstance(t, jax.core.Tracer) for t in (t_start, t_end)) and not float(t_start) > float(t_end):
        raise ValueError(f"t_start={float(t_start):g} must be greater than t_end={float(t_end):g} (grids run from "
                         "noise to data)")
    dtype = jnp.result_type(float)
    t_start, t_end = jnp.asarray(t_start, dtype), jnp.asarray(t_end, dtype)
    fraction = jnp.linspace(0.0, 1.0, steps + 1, dtype=dtype)
    if kind == "uniform":
        times = t_start + fraction * (t_end - t_start)
    elif kind == "shifted":
        if schedule.t_max > 1.0:
            raise ValueError(f"grid 'shifted' maps times in [0, 1] (flows and VP schedules); "
                             f"{type(schedule).__name__} runs to t = {schedule.t_max:g}")
        # Uniform in u, where t = s u / (1 + (s - 1) u); the inverse is u = t / (s - (s - 1) t).
        u_start, u_end = (t / (shift - (shift - 1.0) * t) for t in (t_start, t_end))
        u = u_start + fraction * (u_end - u_start)
        times = shift * u / (1.0 + (shift - 1.0) * u)
    elif kind == "quadratic":
        times = (jnp.sqrt(t_start) + fraction * (jnp.sqrt(t_end) - jnp.sqrt(t_start))) ** 2
    else:
        lambda_start, lambda_end = schedule.lambda_(t_start), schedule.lambda_(t_end)
        check_finite_lambda(kind, lambda_start, lambda_end)
        if kind == "logsnr":
            lambdas = lambda_start + fraction * (lambda_end - lambda_start)
        else:  # karras: rho-spacing of the VE noise level sigma / alpha = exp(-lambda)
            start, end = jnp.exp(-lambda_start / rho), jnp.exp(-lambda_end / rho)
            lambdas = -rho * jnp.log(start + fraction * (end - start))
        times = schedule.inverse_lambda(lambdas)
    # Pin the end points exactly: inverse_lambda may round them.
    times = times.at[0].set(t_start).at[-1].set(t_end)
    if not isinstance(times, jax.core.Tracer) and not (bool(jnp.all(jnp.isfinite(times)))
                                                      and bool(jnp.all(jnp.diff(times) < 0))):
        raise ValueError(f"the {kind!r} grid of {steps} steps from {float(t_start):g} to {float(t_end):g} is not a "
                         f"decreasing finite grid (rho={rho:g}, shift={shift:g}); choose other settings or kind")
    return times


def check_finite_lambda(kind, lambda_start, lambda_end):
    """Raise a ValueError when a grid spaced in lambda has an infinite end point."""
    if isinstance(lambda_start, jax.core.Tracer) or isinstance(lambda_end, jax.core.Tracer):
        return
    if not (np.isfinite(float(lambda_start)) and np.isfinite(float(lambda_end))):
        raise ValueError(
            f"grid {kind!r} is spaced in lambda = log(alpha / sigma), which is infinite at an "
            "end point here (t = 0 or t = 1 on rectified flow); use grid='uniform' or "
            "'shifted', or end points strictly inside the schedule's range"
        )


def check_grid(schedule: Schedule, times) -> None:
    """Raise a ValueError if a concrete grid is not a strictly monotone 1-D array of at
    least two finite times inside the schedule's range. Traced grids are not checked."""
    if isinstance(times, jax.core.Tracer):
        return
    times = np.asarray(times)
    if times.ndim != 1 or times.shape[0] < 2:
        raise ValueError(f"a time grid must be a 1-D array of at least 2 times, got shape {times.shape}")
    if not np.all(np.isfinite(times)):
        raise ValueError("the time grid contains non-finite values")
    steps = np.diff(times)
    if not (np.all(steps < 0) or np.all(steps > 0)):
        raise ValueError("the time grid must be strictly decreasing (sampling) or increasing (inversion)")
    schedule.check_times(times.min(), times.max())
