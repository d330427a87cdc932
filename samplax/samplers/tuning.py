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

The fit must generalise to noise it has not seen. On a sharp distribution a few-step
solve sends a few samples to another mode than the exact solve; with a small set of
training noises the fit learns to avoid those flips for its own samples only, and its
training error understates the error on new noise several times over. So the fit draws a
large pool of noise (its references computed once, in batches), steps Adam on mini-batches
of the training part, and measures the loss on a held-out validation part as it goes: the
grid returned is the one with the lowest validation loss over every starting grid and
iteration, and its training and validation errors are both reported.

The loss over the grid is not convex and has many local minima at few steps; fits start
from several hand-made grids if asked (`init=("logsnr", "karras", ...)`) and lower the
step size along a cosine.

`sample(model, solver, noise, grid=times)` takes the learned grid as it is.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

from samplax.checks import check_choice, check_count, check_flag, check_path, check_positive, check_real
from samplax.models.checkpoints import write_atomic
from samplax.samplers.denoiser import Denoiser
from samplax.samplers.inputs import (
    as_solver,
    check_key,
    check_model,
    check_sample_shape,
    check_shape,
    check_steps,
    end_points,
)
from samplax.samplers.sampling import check_plan, sample
from samplax.solvers.base import FixedGridSolver
from samplax.solvers.grids import time_grid

__all__ = ["TuneInfo", "tune_grid", "grid_from_logits", "save_grid", "load_grid"]

GRID_FORMAT = "samplax-time-grid-1"


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TuneInfo:
    """What a fit did. Losses are in the units of the fit's `loss` ("squared": mean squared
    distance to the reference; "rms": mean per-sample RMS distance).

    Attributes:
        losses: the mini-batch training loss before each Adam step of the run (starting
            grid) that found the returned grid.
        validation_losses: that run's loss on the validation noise, at
            `validation_iterations` (0 is its starting grid).
        validation_iterations: the iterations at which the validation loss was measured.
        validation_loss: the validation loss of the returned grid, the lowest seen.
        start: the index, in `init`, of the starting grid whose run found it.
        iteration: the iteration of that run at which it was found.
        training_rms, validation_rms: RMS distance (over samples and coordinates) of the
            returned grid's samples to the reference on the training and validation noise.
        logits: the logits of the returned grid.
    """

    losses: jax.Array
    validation_losses: jax.Array
    validation_iterations: jax.Array
    validation_loss: jax.Array
    start: int
    iteration: int
    training_rms: jax.Array
    validation_rms: jax.Array
    logits: jax.Array

    @property
    def gap(self) -> jax.Array:
        """validation_rms / training_rms: how optimistic the training error is (1 when the
        fit generalises to its validation noise)."""
        return self.validation_rms / self.training_rms


LOSSES = ("squared", "rms")


def _loss_from_squared_errors(loss: str, squared_errors: jax.Array) -> jax.Array:
    """The fit's loss from per-sample mean squared errors: their mean ("squared") or the
    mean of their square roots ("rms", which weighs the few samples that end in another
    mode of the data less than the squared error does)."""
    if loss == "squared":
        return jnp.mean(squared_errors)
    return jnp.mean(jnp.sqrt(squared_errors + jnp.finfo(squared_errors.dtype).tiny))


def _per_sample_squared_errors(x: jax.Array, reference: jax.Array) -> jax.Array:
    return jnp.mean((x - reference) ** 2, axis=tuple(range(1, x.ndim)))


def _map_in_batches(function, batch_size: int, rows):
    """function(batch) on consecutive batches of `batch_size` rows of the pytree `rows`
    (the last batch padded with repeated rows), concatenated: one compiled call whose
    memory is that of one batch, whatever the number of rows."""
    count = jax.tree.leaves(rows)[0].shape[0]
    batch_size = min(batch_size, count)
    batches = -(-count // batch_size)
    padding = batches * batch_size - count

    def split(array):
        padded = jnp.concatenate([array, array[:padding]]) if padding else array
        return padded.reshape(batches, batch_size, *array.shape[1:])

    results = jax.lax.map(function, jax.tree.map(split, rows))
    return jax.tree.map(lambda result: result.reshape(batches * batch_size, *result.shape[2:])[:count], results)


def _per_sample_conditions(model: Denoiser) -> dict:
    """The model's condition arrays with one row per sample (labels, embeddings), which
    travel with their noise through mini-batches; scalars stay in the model."""
    rows = lambda condition: {key: value for key, value in (condition or {}).items() if jnp.ndim(value) >= 1}  # noqa: E731
    return {"condition": rows(model.condition), "unconditional": rows(model.unconditional)}


def _conditioned(model: Denoiser, conditions: dict) -> Denoiser:
    """The model with the per-sample condition rows of one batch."""
    unconditional = None if model.unconditional is None else {**model.unconditional, **conditions["unconditional"]}
    return dataclasses.replace(model, condition={**model.condition, **conditions["condition"]},
                               unconditional=unconditional)


SPACINGS = ("lambda", "time")


def _spacing(schedule, spacing, t_start, t_end):
    """The variable the grid's fractions divide, by default "time" for rectified flow (whose
    default grid is uniform in t, and whose lambda = log(alpha / sigma) is infinite at t = 1
    and t = 0) or wherever lambda is infinite at an end point, and "lambda" otherwise."""
    finite = bool(jnp.all(jnp.isfinite(schedule.lambda_(jnp.stack([t_start, t_end])))))
    if spacing is None:
        return "lambda" if finite and not schedule.is_flow else "time"
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS} or None, got {spacing!r}")
    if spacing == "lambda" and not finite:
        raise ValueError(f"spacing='lambda' needs a finite lambda = log(alpha / sigma) at t_start = {float(t_start):g} "
                         f"and t_end = {float(t_end):g}; use spacing='time'")
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
        ends = np.asarray([t_start, t_end], np.float64)
        if not np.allclose(np.asarray(times)[[0, -1]], ends, rtol=1e-5, atol=0):
            raise ValueError(f"init must run from t_start = {ends[0]:g} to t_end = {ends[1]:g}, got "
                             f"{float(times[0]):g} to {float(times[-1]):g}")
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
    samples: int = 2048,
    validation: float = 0.25,
    batch_size: int = 128,
    iterations: int = 300,
    learning_rate: float = 0.2,
    loss: str = "squared",
    validate_every: int = 10,
    patience: int | None = None,
    t_start=None,
    t_end=None,
    denoise_to_zero: bool | None = None,
    init=None,
    spacing=None,
    reference=None,
    reference_solver=None,
    reference_steps: int = 200,
):
    """Fit the time grid of `solver` with `steps` intervals to `model`.

    The noise pool is split into training and validation noise. Adam steps on mini-batches
    of the training noise; every `validate_every` steps the grid's loss on the validation
    noise is measured, and the grid returned is the one with the lowest validation loss
    over all starting grids and iterations (early stopping). A few-step solver sends a few
    samples of a sharp distribution to another mode than the exact solve does; a small
    pool lets the fit learn to avoid those flips for its own noise only, so its training
    error understates the error on new noise by up to 10x. The pool is large enough by
    default for the flips to be represented (benchmarks/learned_grids.py --pool-curve).

    Args:
        model: the `Denoiser`.
        solver: a fixed-grid solver or its registry name.
        steps: number of grid intervals of the fitted grid.
        key: PRNG key for the noise pool (standard normal, `samples` draws of `shape`) and
            the mini-batches; a fit is a deterministic function of it.
        shape: the shape of one sample, without the batch axis.
        samples: size of the noise pool, training and validation together.
        validation: the fraction of the pool held out for validation; 0 validates on the
            training noise itself (selection by the full training loss).
        batch_size: training noises per Adam step (the whole training noise if fewer); the
            references and validation solves run in batches of this size too, so memory
            is bounded by it, not by `samples`.
        iterations: Adam steps per starting grid.
        learning_rate: the initial Adam step size on the logits, lowered along a cosine to
            1% of it over the iterations.
        loss: "squared" (mean squared distance to the reference) or "rms" (mean per-sample
            RMS distance, less dominated by the samples that flip mode).
        validate_every: Adam steps between validations (the last iterate is validated too).
        patience: stop a run after this many validations without a new lowest validation
            loss of that run (None: run every iteration).
        t_start, t_end: fixed end points (default: the schedule's t_max and t_min).
        denoise_to_zero: fit the solver as it will run, with (True) or without the final
            denoising step; pass the same value to `sample`. Default: True where the grid
            ends at noise (sigma(t_end) > 0), False where it ends at data (a flow to t = 0).
        init: the starting grid: a grid kind ("logsnr", "karras", ...) or an array, or a
            tuple of them, each fitted in turn (restarts against local minima). Default:
            the schedule's default grid ("logsnr", or "uniform" for rectified flow).
        spacing: the variable whose range the learned fractions divide: "lambda"
            (log(alpha / sigma); the natural scale of diffusion samplers) or "time" (t
            itself). Default: "lambda", or "time" where lambda is infinite at an end point,
            as on rectified flow with t_start = 1 or t_end = 0.
        reference: the high-accuracy solution from the pool's noise, if already known
            (`samples` x `shape`); otherwise computed once with `reference_solver` on
            `reference_steps` steps of the schedule's default grid.
        reference_solver: default "dpm++3m-taylor" for diffusion schedules (lambda
            spacing), "rk4" otherwise.

    Returns:
        (times, TuneInfo): the fitted decreasing grid of steps + 1 times, which
        `sample(..., grid=times, denoise_to_zero=denoise_to_zero)` accepts, and the fit's
        record, with the training and validation RMS of the returned grid (`info.gap`).
    """
    solver = as_solver(solver, "tune_grid")
    check_model(model, "tune_grid")
    shape = check_shape("shape", shape)
    check_sample_shape(model, shape, "shape")
    check_key("key", key)
    if not isinstance(solver, FixedGridSolver):
        hint = " (fit 'heun' and sample with it instead)" if solver.reversible else ""
        raise ValueError(f"tune_grid fits the times of a fixed-grid solver (one that runs a plan through the engine); "
                         f"{solver!r} is not one{hint}")
    if solver.stochastic:
        raise ValueError(f"tune_grid fits the grid of a deterministic solver (the loss compares fixed "
                         f"trajectories); {solver!r} is stochastic")
    steps = check_steps(steps, solver)
    samples = check_count("samples", samples, minimum=2)
    validation_samples = _validation_count(samples, validation)
    batch_size = check_count("batch_size", batch_size)
    check_count("iterations", iterations)
    check_positive("learning_rate", learning_rate)
    check_choice("loss", loss, LOSSES)
    check_count("validate_every", validate_every)
    if patience is not None:
        check_count("patience", patience)
    schedule = model.schedule
    dtype = jnp.result_type(float)
    t_start, t_end = end_points(schedule, t_start, t_end)
    if denoise_to_zero is None:
        denoise_to_zero = bool(schedule.sigma(t_end) > 0)
    check_flag("denoise_to_zero", denoise_to_zero)
    spacing = _spacing(schedule, spacing, t_start, t_end)
    inits = _as_inits(schedule.default_grid if init is None else init)
    noise_key, batch_key = jax.random.split(key)
    noise = jax.random.normal(noise_key, (samples, *shape), dtype)
    check_model(model, "tune_grid", noise, "the noise pool (samples)")
    pool = {"noise": noise, "conditions": _per_sample_conditions(model)}
    if reference is None:
        reference_solver = as_solver(reference_solver or ("dpm++3m-taylor" if spacing == "lambda" else "rk4"),
                                     "tune_grid")
        if not isinstance(reference_solver, FixedGridSolver) or reference_solver.stochastic:
            raise ValueError(f"reference_solver must be a deterministic fixed-grid solver, got {reference_solver!r}")
        check_steps(reference_steps, reference_solver, "reference_steps")
        reference = _references(model, pool, batch_size, reference_solver, steps=reference_steps, t_start=t_start,
                                t_end=t_end, denoise_to_zero=denoise_to_zero)
    elif reference_solver is not None:
        raise ValueError("give reference (a solve already made) or reference_solver (to make one), not both")
    pool["reference"] = jnp.asarray(reference, dtype)
    if pool["reference"].shape != noise.shape:
        raise ValueError(f"reference must have shape {noise.shape}, got {pool['reference'].shape}")
    if not bool(jnp.all(jnp.isfinite(pool["reference"]))):
        raise ValueError("the reference solves hold NaN or inf values; check the model, or the reference you passed")
    training = jax.tree.map(lambda rows: rows[validation_samples:], pool)
    held_out = jax.tree.map(lambda rows: rows[:validation_samples], pool) if validation_samples else training

    def squared_errors(logits, batch):
        """Per-sample squared errors of the grid of `logits` on a batch of the pool."""
        times = grid_from_logits(schedule, logits, t_start, t_end, spacing)
        x, _ = sample(_conditioned(model, batch["conditions"]), solver, batch["noise"], grid=times,
                      denoise_to_zero=denoise_to_zero)
        return _per_sample_squared_errors(x, batch["reference"])

    update, evaluate, initial_state = _optimizer_steps(
        squared_errors, loss, batch_size, samples - validation_samples if validation_samples else samples,
        learning_rate, iterations)
    starts = [_initial_logits(schedule, start, steps, t_start, t_end, spacing).astype(dtype) for start in inits]
    start_grid = grid_from_logits(schedule, starts[0], t_start, t_end, spacing)
    check_plan(schedule, solver, start_grid, denoise_to_zero)
    _check_differentiable_plan(schedule, solver, start_grid, denoise_to_zero)
    validate = lambda logits: _loss_from_squared_errors(loss, evaluate(logits, held_out))  # noqa: E731
    fit = _fit(update, initial_state, validate, starts, iterations, validate_every, patience, batch_key, training)
    logits = fit.pop("logits")
    times = grid_from_logits(schedule, logits, t_start, t_end, spacing)
    rms = lambda part: jnp.sqrt(jnp.mean(evaluate(logits, part)))  # noqa: E731
    return times, TuneInfo(**fit, training_rms=rms(training), validation_rms=rms(held_out), logits=logits)


def _validation_count(samples: int, validation) -> int:
    """How many noises of the pool `validation` (a fraction) holds out."""
    check_real("validation", validation)
    if not 0 <= validation < 1:
        raise ValueError(f"validation must be a fraction of the pool in [0, 1), got {validation!r}")
    count = round(validation * samples)
    if validation > 0 and not 0 < count < samples:
        raise ValueError(f"validation={validation} of samples={samples} leaves no training or no validation noise")
    return count


def _references(model, pool, batch_size, reference_solver, **options):
    """The reference solves from the pool's noise (with each noise's condition rows), in
    batches of `batch_size`."""

    def solve(batch):
        return sample(_conditioned(model, batch["conditions"]), reference_solver, batch["noise"], **options)[0]

    return jax.jit(lambda pool: _map_in_batches(solve, batch_size, pool))(pool)


def _optimizer_steps(squared_errors, loss, batch_size, training_count, learning_rate, iterations):
    """(update, evaluate, initial_state): one Adam step of the logits on a mini-batch of
    `batch_size` rows drawn without replacement from the training rows (all of them if
    fewer), returning the mini-batch loss before the step; the per-sample squared errors
    of a grid over any rows, in batches; the optimizer's initial state."""
    rate = optax.cosine_decay_schedule(learning_rate, iterations, alpha=0.01)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(rate))

    @jax.jit
    def update(logits, state, step_key, rows):
        if batch_size < training_count:
            chosen = jax.random.choice(step_key, training_count, (batch_size,), replace=False)
            rows = jax.tree.map(lambda rows: rows[chosen], rows)
        objective = lambda logits: _loss_from_squared_errors(loss, squared_errors(logits, rows))  # noqa: E731
        value, gradient = jax.value_and_grad(objective)(logits)
        updates, state = optimizer.update(gradient, state, logits)
        return optax.apply_updates(logits, updates), state, value

    @jax.jit
    def evaluate(logits, rows):
        return _map_in_batches(lambda batch: squared_errors(logits, batch), batch_size, rows)

    return update, evaluate, optimizer.init


def _check_differentiable_plan(schedule, solver, times, denoise_to_zero: bool) -> None:
    """The fit follows the gradient of the solver's coefficients with respect to the grid,
    which is not finite where an exponential integrator's lambda is infinite at an end
    point (a flow from t = 1 or to t = 0), though the coefficients themselves may be."""
    def coefficients(times):
        leaves = jax.tree.leaves(solver.plan(schedule, times, denoise_to_zero))
        return jnp.concatenate([jnp.ravel(leaf).astype(times.dtype) for leaf in leaves])

    if not bool(jnp.all(jnp.isfinite(jax.jacfwd(coefficients)(times)))):
        raise ValueError(
            f"tune_grid: the derivative of {solver!r}'s coefficients with respect to the grid is not finite from "
            f"t = {float(times[0]):g} to t = {float(times[-1]):g}, where lambda = log(alpha / sigma) is infinite at an "
            "end point, so the grid cannot be fitted: use end points where lambda is finite (t_start < 1, "
            "t_end > 0 on a flow) or a flow solver"
        )


def _fit(update, initial_state, validate, starts, iterations, validate_every, patience, batch_key, training):
    """Run the optimizer from each starting logits, validating every `validate_every` steps;
    returns the record of the run that reached the lowest validation loss and the logits
    that had it. A run stops early after `patience` validations without improving on its
    own best, or when its training loss stops being finite: if every run does, that is an
    error; if some do, a warning."""
    best, diverged = None, []
    for start, logits in enumerate(starts):
        state = initial_state(logits)
        losses, validation_losses, validation_iterations = [], [], []
        run_best, waited = np.inf, 0
        for iteration in range(iterations + 1):
            if iteration % validate_every == 0 or iteration == iterations:
                value = float(validate(logits))
                validation_losses.append(value)
                validation_iterations.append(iteration)
                run_best, waited = (value, 0) if value < run_best else (run_best, waited + 1)
                if value < (best["validation_loss"] if best else np.inf):
                    best = {"validation_loss": value, "start": start, "iteration": iteration, "logits": logits}
                if patience is not None and waited >= patience:
                    break
            if iteration == iterations:
                break
            step_key = jax.random.fold_in(batch_key, start * iterations + iteration)
            logits, state, value = update(logits, state, step_key, training)
            losses.append(value)
            if not bool(jnp.isfinite(value)):
                diverged.append(f"start {start} at iteration {iteration + 1} ({float(value)})")
                break
        if best is not None and best["start"] == start:
            best.update(losses=jnp.stack(losses) if losses else jnp.zeros((0,)),
                        validation_losses=jnp.asarray(validation_losses),
                        validation_iterations=jnp.asarray(validation_iterations))
    if best is None:
        raise FloatingPointError("tune_grid: the validation loss is not finite; lower learning_rate")
    if len(diverged) == len(starts):
        raise FloatingPointError(f"tune_grid: the training loss stopped being finite in every run "
                                 f"({', '.join(diverged)}); lower learning_rate")
    if diverged:
        warnings.warn(f"tune_grid: the training loss stopped being finite in {', '.join(diverged)}, which stopped "
                      f"there (lower learning_rate); the grid returned is start {best['start']}'s at iteration "
                      f"{best['iteration']}", stacklevel=3)
    best["validation_loss"] = jnp.asarray(best["validation_loss"])
    return best


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
    check_path("path", path)
    check_flag("overwrite", overwrite)
    if isinstance(times, tuple):
        raise TypeError("times must be an array of times; tune_grid returns (times, info): pass its first element")
    if not isinstance(times, (jax.Array, np.ndarray, list)):
        raise TypeError(f"times must be an array of times, got {type(times).__name__}")
    try:
        metadata_text = json.dumps(metadata)
    except TypeError as error:
        raise TypeError(f"save_grid metadata must be JSON-serialisable ({error}); {path} was not written") from None
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a folder; give the path of a .json file")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    times = np.asarray(times, np.float64)
    problem = _grid_problem(times)
    if problem:
        raise ValueError(f"times {problem}; {path} was not written")
    payload = {"format": GRID_FORMAT, "times": [float(t) for t in times], "metadata": json.loads(metadata_text)}
    write_atomic(path, json.dumps(payload, indent=1).encode())


def load_grid(path: str):
    """Read a grid written by `save_grid`: returns (times as a float64 array, metadata)."""
    check_path("path", path)
    try:
        with open(path, encoding="utf-8") as file:
            payload = json.load(file)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a samplax time grid (not JSON: {error})") from None
    if not isinstance(payload, dict) or payload.get("format") != GRID_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not a samplax time grid (format {found!r})")
    try:
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in payload["times"]):
            raise ValueError("its entries are not all numbers")
        times = np.asarray(payload["times"], np.float64)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} has no readable 'times' ({type(error).__name__}: {error})") from None
    problem = _grid_problem(times)
    if problem:
        raise ValueError(f"{path}: 'times' {problem}")
    return times, payload.get("metadata", {})
