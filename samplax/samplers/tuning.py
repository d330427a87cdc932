"""Time grids learned by differentiating through the sampler.

A few-step solver's error depends strongly on where its steps are. Because every sampler
here is a differentiable function of its time grid, the grid can be fitted for one model,
solver and number of steps: minimise, by gradient descent, the mean squared distance
between the few-step samples and a high-accuracy solve from the same noise (the idea of
LD3, Tong et al., ICLR 2025, "Learning to Discretize Denoising Diffusion ODEs", here with a
plain squared distance and without LD3's relaxation of the training noise). The grid is
parametrised by the softmax of free logits, which gives the fractions of the range that
each step covers, so it is strictly monotone with fixed end points whatever the logits are.
The range is that of lambda = log(alpha / sigma) for diffusion schedules (as LD3's
"lambda" mode) and that of t itself for rectified flow, whose lambda is infinite at t = 1
and t = 0 (as LD3's "time" mode).

The loss over the grid is not convex and has many local minima at few steps; fits start
from several hand-made grids if asked (`init=("logsnr", "karras", ...)`), lower the step
size along a cosine, and keep the grid with the lowest training loss seen.

Fit on one set of noise, check on another: `sample(model, solver, held_out_noise,
grid=times)` takes the learned grid as it is.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from samplax.models.checkpoints import write_atomic
from samplax.samplers.denoiser import Denoiser
from samplax.samplers.inputs import (
    as_solver,
    check_count,
    check_flag,
    check_key,
    check_model,
    check_positive,
    check_sample_shape,
    check_shape,
    check_steps,
    end_points,
)
from samplax.samplers.sampling import sample
from samplax.solvers.base import FixedGridSolver
from samplax.solvers.grids import time_grid

__all__ = ["TuneInfo", "tune_grid", "grid_from_logits", "save_grid", "load_grid"]

GRID_FORMAT = "samplax-time-grid-1"


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TuneInfo:
    """What a fit did: the training loss (mean squared distance to the reference) of the
    starting grid and after every iteration of the fit that found the returned grid (with
    several starting grids, the one that won), the lowest training loss, and the logits of
    the returned grid."""

    initial_loss: jax.Array
    losses: jax.Array
    best_loss: jax.Array
    logits: jax.Array


SPACINGS = ("lambda", "time")


def _spacing(schedule, spacing, t_start, t_end):
    """The variable the grid's fractions divide, by default "time" for rectified flow (whose
    default grid is uniform in t, and whose lambda = log(alpha / sigma) is infinite at t = 1
    and t = 0) or wherever lambda is infinite at an end point, and "lambda" otherwise."""
    if spacing is None:
        finite = bool(jnp.all(jnp.isfinite(schedule.lambda_(jnp.stack([t_start, t_end])))))
        return "lambda" if finite and not schedule.is_flow else "time"
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS} or None, got {spacing!r}")
    return spacing


def grid_from_logits(schedule, logits, t_start, t_end, spacing="lambda"):
    """The decreasing grid whose steps cover softmax(logits) fractions of the range from
    t_start to t_end, in lambda (spacing="lambda") or in t (spacing="time"). Strictly
    monotone whatever the logits are, with the end points exactly t_start and t_end."""
    fractions = jnp.concatenate([jnp.zeros((1,), logits.dtype), jnp.cumsum(jax.nn.softmax(logits))])
    if spacing == "time":
        times = t_start + fractions * (t_end - t_start)
    elif spacing == "lambda":
        lambda_start, lambda_end = schedule.lambda_(t_start), schedule.lambda_(t_end)
        times = schedule.inverse_lambda(lambda_start + fractions * (lambda_end - lambda_start))
    else:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    return times.at[0].set(t_start).at[-1].set(t_end)


def _initial_logits(schedule, init, steps, t_start, t_end, spacing):
    """Logits that reproduce the grid `init` (a grid kind or an array of steps + 1 times)."""
    if isinstance(init, str):
        times = time_grid(schedule, steps, init, t_start, t_end)
    else:
        times = jnp.asarray(init, jnp.result_type(float))
        if times.shape != (steps + 1,):
            raise ValueError(f"init must be a grid kind or an array of steps + 1 = {steps + 1} times")
    increments = jnp.diff(schedule.lambda_(times) if spacing == "lambda" else -times)
    if not bool(jnp.all(increments > 0)):
        raise ValueError("init must be a strictly decreasing grid from t_start to t_end")
    return jnp.log(increments / jnp.sum(increments))


def _as_inits(init):
    """A tuple of starting grids: `init` is one grid kind or array, or a tuple/list of them."""
    if isinstance(init, (tuple, list)) and len(init) > 0 and (isinstance(init[0], str) or np.ndim(init[0]) == 1):
        return tuple(init)
    return (init,)


def tune_grid(
    model: Denoiser,
    solver,
    steps: int,
    key: jax.Array,
    *,
    shape: tuple[int, ...],
    samples: int = 128,
    iterations: int = 300,
    learning_rate: float = 0.2,
    t_start=None,
    t_end=None,
    denoise_to_zero: bool = True,
    init=None,
    spacing=None,
    reference=None,
    reference_solver=None,
    reference_steps: int = 200,
):
    """Fit the time grid of `solver` with `steps` intervals to `model`.

    Args:
        model: the `Denoiser`.
        solver: a fixed-grid solver or its registry name.
        steps: number of grid intervals of the fitted grid.
        key: PRNG key for the training noise (standard normal, `samples` draws of `shape`).
        shape: the shape of one sample, without the batch axis.
        samples: number of training noises.
        iterations: Adam steps (full batch) per starting grid.
        learning_rate: the initial Adam step size on the logits, lowered along a cosine to
            1% of it over the iterations.
        t_start, t_end: fixed end points (default: the schedule's t_max and t_min).
        denoise_to_zero: fit the solver as it will run, with (True) or without the final
            denoising step; pass the same value to `sample`.
        init: the starting grid: a grid kind ("logsnr", "karras", ...) or an array, or a
            tuple of them: each is fitted in turn and the grid with the lowest training loss
            over all of them is returned (restarts against local minima). Default: the
            schedule's default grid ("logsnr", or "uniform" for rectified flow).
        spacing: the variable whose range the learned fractions divide: "lambda"
            (log(alpha / sigma); the natural scale of diffusion samplers) or "time" (t
            itself). Default: "lambda", or "time" where lambda is infinite at an end point,
            as on rectified flow with t_start = 1 or t_end = 0.
        reference: the high-accuracy solution from the training noise, if already known
            (`samples` x `shape`); otherwise computed with `reference_solver` on
            `reference_steps` steps of the schedule's default grid.
        reference_solver: default "dpm++3m-taylor" for diffusion schedules (lambda
            spacing), "rk4" otherwise.

    Returns:
        (times, TuneInfo): the fitted decreasing grid of steps + 1 times, which
        `sample(..., grid=times, denoise_to_zero=denoise_to_zero)` accepts, and the fit's
        record. The grid is the one with the lowest training loss seen.
    """
    solver = as_solver(solver, "tune_grid")
    check_model(model, "tune_grid")
    shape = check_shape("shape", shape)
    check_sample_shape(model, shape, "shape")
    check_key("key", key)
    if not isinstance(solver, FixedGridSolver):
        raise ValueError(f"tune_grid needs a fixed-grid solver, got {type(solver).__name__}")
    if solver.stochastic:
        raise ValueError(f"tune_grid fits the grid of a deterministic solver (the loss compares fixed "
                         f"trajectories); {solver!r} is stochastic")
    steps = check_steps(steps, solver)
    check_count("samples", samples)
    check_count("iterations", iterations)
    check_positive("learning_rate", learning_rate)
    check_flag("denoise_to_zero", denoise_to_zero)
    schedule = model.schedule
    dtype = jnp.result_type(float)
    t_start, t_end = end_points(schedule, t_start, t_end)
    spacing = _spacing(schedule, spacing, t_start, t_end)
    inits = _as_inits(schedule.default_grid if init is None else init)
    noise = jax.random.normal(key, (samples, *shape), dtype)
    if reference is None:
        reference_solver = as_solver(reference_solver or ("dpm++3m-taylor" if spacing == "lambda" else "rk4"),
                                     "tune_grid")
        check_steps(reference_steps, reference_solver, "reference_steps")
        reference, _ = sample(model, reference_solver, noise, steps=reference_steps, t_start=t_start, t_end=t_end,
                              denoise_to_zero=denoise_to_zero)
    reference = jnp.asarray(reference, dtype)
    if reference.shape != noise.shape:
        raise ValueError(f"reference must have shape {noise.shape}, got {reference.shape}")

    def loss(logits, noise, reference):
        times = grid_from_logits(schedule, logits, t_start, t_end, spacing)
        x, _ = sample(model, solver, noise, grid=times, denoise_to_zero=denoise_to_zero)
        return jnp.mean((x - reference) ** 2)

    rate = optax.cosine_decay_schedule(learning_rate, iterations, alpha=0.01)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(rate))

    @jax.jit
    def update(logits, state, noise, reference):
        value, gradient = jax.value_and_grad(loss)(logits, noise, reference)
        updates, state = optimizer.update(gradient, state, logits)
        return optax.apply_updates(logits, updates), state, value

    starts = [_initial_logits(schedule, start, steps, t_start, t_end, spacing).astype(dtype) for start in inits]
    losses, best_logits, best_loss = _fit(update, optimizer.init, starts, iterations, noise, reference)
    times = grid_from_logits(schedule, best_logits, t_start, t_end, spacing)
    return times, TuneInfo(initial_loss=losses[0], losses=losses, best_loss=best_loss, logits=best_logits)


def _fit(update, initial_state, starts, iterations, noise, reference):
    """Run the optimizer from each starting logits; returns the losses of the run that found
    the lowest training loss, the logits that had it, and that loss."""
    runs, best_run, best_logits, best_loss = [], None, None, jnp.inf
    for logits in starts:
        state = initial_state(logits)
        losses = []
        for _ in range(iterations + 1):
            # value is the loss of `logits`, before this update; the last update is not applied.
            new_logits, state, value = update(logits, state, noise, reference)
            if bool(value < best_loss):
                best_run, best_logits, best_loss = len(runs), logits, value
            losses.append(value)
            logits = new_logits
        runs.append(jnp.stack(losses))
    if best_logits is None or not bool(jnp.isfinite(best_loss)):
        raise FloatingPointError("tune_grid: the training loss is not finite; lower learning_rate")
    return runs[best_run], best_logits, best_loss


def _grid_problem(times: np.ndarray) -> str | None:
    """What makes `times` unusable as a stored grid, or None: the one check of save and load."""
    if times.ndim != 1 or times.shape[0] < 2:
        return f"must be a 1-D grid of at least 2 times, got shape {times.shape}"
    if not np.all(np.isfinite(times)):
        return f"contains NaN or inf values: {times.tolist()[:8]}"
    if not np.all(np.diff(times) < 0):
        return f"must decrease strictly, from noise to data, got {times.tolist()[:8]}"
    return None


def save_grid(path: str, times, *, overwrite: bool = False, **metadata) -> None:
    """Write a grid and JSON-serialisable metadata (solver, steps, denoise_to_zero, the
    checkpoint it was fitted for, ...) to a small JSON file, atomically. Refuses to
    replace an existing file unless overwrite=True."""
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    times = np.asarray(times, np.float64)
    problem = _grid_problem(times)
    if problem:
        raise ValueError(f"times {problem}; {path} was not written")
    payload = {"format": GRID_FORMAT, "times": [float(t) for t in times], "metadata": metadata}
    write_atomic(path, json.dumps(payload, indent=1).encode())


def load_grid(path: str):
    """Read a grid written by `save_grid`: returns (times as a float64 array, metadata)."""
    try:
        with open(path, encoding="utf-8") as file:
            payload = json.load(file)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a samplax time grid (not JSON: {error})") from None
    if not isinstance(payload, dict) or payload.get("format") != GRID_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not a samplax time grid (format {found!r})")
    try:
        times = np.asarray(payload["times"], np.float64)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} has no readable 'times' ({type(error).__name__}: {error})") from None
    problem = _grid_problem(times)
    if problem:
        raise ValueError(f"{path}: 'times' {problem}")
    return times, payload.get("metadata", {})
