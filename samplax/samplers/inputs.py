"""The one input path of every workflow (sample, invert, reversible_*, edit, tune_grid):
turn (solver or name, steps, grid, t_start, t_end) into a checked solver and time grid,
and check the model and the arrays, so that one mistake gives one message everywhere.
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from samplax.checks import check_callable_as, check_real
from samplax.samplers.denoiser import Denoiser
from samplax.samplers.noise import as_noise_source, sample_keys
from samplax.schedules import Schedule
from samplax.solvers.base import Solver
from samplax.solvers.grids import GRIDS, check_grid, time_grid
from samplax.solvers.registry import get as get_solver

__all__ = [
    "Grid", "as_solver", "check_batch", "check_key", "check_model", "check_sample_shape", "check_shape", "check_steps",
    "end_points", "noise_keys", "resolve_grid",
]


@dataclasses.dataclass(frozen=True)
class Grid:
    """A checked time grid, from noise to data: either a kind to compute inside a compiled
    call (`kind` with `t_start` and `t_end`, `times` None) or explicit decreasing
    `times` (`kind` None). `steps` is the number of intervals either way."""

    steps: int
    kind: str | None = None
    t_start: jax.Array | None = None
    t_end: jax.Array | None = None
    times: jax.Array | None = None

    @property
    def ends(self) -> tuple:
        """(first time, last time) of the grid."""
        return (self.t_start, self.t_end) if self.times is None else (self.times[0], self.times[-1])

    def concrete(self, schedule: Schedule) -> jax.Array:
        """The grid's times, computing them from the kind where needed."""
        if self.times is not None:
            return self.times
        return time_grid(schedule, self.steps, self.kind, self.t_start, self.t_end)


def as_solver(solver, workflow: str):
    """The solver object for a solver or a registry name."""
    if isinstance(solver, str):
        return get_solver(solver)
    if not isinstance(solver, Solver):
        raise TypeError(
            f"{workflow}(): solver must be a samplax solver or a registry name (samplax.solvers.names()), "
            f"got {type(solver).__name__}"
        )
    return solver


def check_model(model, workflow: str, x=None, name: str = "noise") -> None:
    """A Denoiser with valid schedule parameters and a finite guidance scale; with the
    batch `x` (called `name`), also a network callable with the model's condition and what
    the model declares about the batch: the sample shape, one condition row per sample,
    and labels among its classes. Traced values are not checked."""
    if not isinstance(model, Denoiser):
        raise TypeError(f"{workflow}(): model must be a samplax Denoiser, got {type(model).__name__}")
    model.schedule.check_parameters()
    check_real(f"{workflow}(): guidance_scale", model.guidance_scale, scalar=False)
    if model.unconditional is None and isinstance(model.guidance_scale, (int, float)) and model.guidance_scale != 1:
        raise ValueError(f"{workflow}(): guidance_scale={model.guidance_scale} needs unconditional= (the condition "
                         "meaning 'no condition'); see classifier_free_guidance")
    if x is None:
        return
    _check_network_signature(model, workflow)
    if model.sample_shape is not None and tuple(jnp.shape(x)) == tuple(model.sample_shape):
        raise ValueError(f"{workflow}(): {name} of shape {jnp.shape(x)} is one sample without its batch axis; pass "
                         f"{name}[None]")
    check_sample_shape(model, jnp.shape(x)[1:], name)
    batch = jnp.shape(x)[0]
    scale_shape = jnp.shape(model.guidance_scale)
    try:
        # An array of scales has the batch's rank, so that its first axis is the batch's.
        if scale_shape and (len(scale_shape) != jnp.ndim(x) or np.broadcast_shapes(scale_shape, jnp.shape(x))
                            != jnp.shape(x)):
            raise ValueError
    except ValueError:
        per_sample = (batch,) + (1,) * (jnp.ndim(x) - 1)
        raise ValueError(
            f"{workflow}(): guidance_scale of shape {scale_shape} does not line up with {name} of shape "
            f"{jnp.shape(x)}; give one number, or per-sample scales of shape {per_sample}"
        ) from None
    for part, condition in (("condition", model.condition), ("unconditional", model.unconditional or {})):
        for key, value in condition.items():
            if not isinstance(value, (jax.Array, np.ndarray, np.generic, int, float, bool)):
                raise TypeError(f"{workflow}(): {part}[{key!r}] must be an array (one row per sample), got "
                                f"{type(value).__name__}")
            if jnp.ndim(value) >= 1 and jnp.shape(value)[0] != batch:
                raise ValueError(
                    f"{workflow}(): {part}[{key!r}] has {jnp.shape(value)[0]} rows (shape {jnp.shape(value)}) but "
                    f"{name} has {batch} samples; give one row per sample"
                )
    for key, value in (model.unconditional or {}).items():
        if jnp.ndim(value) != jnp.ndim(model.condition[key]):
            raise ValueError(f"{workflow}(): unconditional[{key!r}] has shape {jnp.shape(value)} but "
                             f"condition[{key!r}] has shape {jnp.shape(model.condition[key])}; give both the same "
                             "shape (one row per sample)")
    if model.classes is not None:
        # The null label of guidance is `classes` itself.
        _check_labels(model.condition.get("label"), "condition['label']", model.classes - 1, batch, workflow)
        _check_labels((model.unconditional or {}).get("label"), "unconditional['label']", model.classes, batch,
                      workflow)
    _check_known_and_posterior(model, x, name, workflow)


def _check_labels(labels, name: str, largest: int, batch: int, workflow: str) -> None:
    """Integer labels in 0..largest, one or one per sample (not checked when traced or absent)."""
    if labels is None or isinstance(labels, jax.core.Tracer):
        return
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{workflow}(): {name} must hold integer class labels, got {labels.dtype}")
    if labels.ndim > 1:
        raise ValueError(f"{workflow}(): {name} must be one label or one per sample (shape ({batch},)), got shape "
                         f"{labels.shape}")
    outside = labels[(labels < 0) | (labels > largest)]
    if outside.size:
        raise ValueError(
            f"{workflow}(): {name} must lie in 0..{largest}, got {sorted(set(outside.tolist()))[:5]}; "
            "for unconditional samples pass no labels"
        )


def _check_known_and_posterior(model: Denoiser, x, name: str, workflow: str) -> None:
    """A known region shaped like the batch with a 0/1 mask; a posterior guidance with a
    function and a real scale (`inpaint` and `posterior_guidance` build them checked)."""
    known = model.known
    if known is not None:
        for field in ("image", "mask"):
            if not isinstance(getattr(known, field), (jax.Array, np.ndarray)):
                raise TypeError(f"{workflow}(): KnownRegion.{field} must be an array, got "
                                f"{type(getattr(known, field)).__name__}")
        try:
            shape = np.broadcast_shapes(jnp.shape(known.image), jnp.shape(known.mask), jnp.shape(x))
        except ValueError:
            shape = None
        if shape != jnp.shape(x) or jnp.shape(known.image) != jnp.shape(x):
            raise ValueError(f"{workflow}(): KnownRegion's image {jnp.shape(known.image)} and mask "
                             f"{jnp.shape(known.mask)} must be shaped like {name} {jnp.shape(x)} (the mask may "
                             "broadcast against it)")
        if not isinstance(known.mask, jax.core.Tracer) and not bool(jnp.all((known.mask == 0) | (known.mask == 1))):
            raise ValueError(f"{workflow}(): KnownRegion.mask must hold 0 (unknown) and 1 (known) only")
    posterior = model.posterior
    if posterior is not None:
        if not callable(posterior.log_likelihood):
            raise TypeError(f"{workflow}(): PosteriorGuidance.log_likelihood must be a function of the data "
                            f"prediction, got {type(posterior.log_likelihood).__name__}")
        check_real(f"{workflow}(): PosteriorGuidance.scale", posterior.scale)


def _check_network_signature(model: Denoiser, workflow: str) -> None:
    """The network can be called as network(x, time, **condition), where its signature
    can be read (a network whose signature cannot is called as it is)."""
    check_callable_as(f"{workflow}(): the network", model.network, ("x", "time"), tuple(model.condition), "network")


def check_key(name: str, key) -> None:
    """One PRNG key: jax.random.key(seed), or the raw jax.random.PRNGKey(seed)."""
    typed = isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ()
    raw = isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32 and key.shape == (2,)
    if not (typed or raw):
        raise TypeError(f"{name} must be one jax.random key, such as jax.random.key(0), got {key!r}")


def check_shape(name: str, shape) -> tuple[int, ...]:
    """The shape of one sample: a tuple (or list) of positive integers."""
    if not isinstance(shape, (tuple, list)) or not all(
        isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size > 0 for size in shape
    ):
        raise TypeError(f"{name} must be a tuple of positive integers (one sample's shape, e.g. (3,)), got {shape!r}")
    return tuple(int(size) for size in shape)


def check_sample_shape(model: Denoiser, shape, name: str) -> None:
    """The shape of one sample, against the shape the model declares (if it does)."""
    if model.sample_shape is not None and tuple(shape) != tuple(model.sample_shape):
        raise ValueError(
            f"{name} has samples of shape {tuple(shape)}, but the model's network takes {tuple(model.sample_shape)}"
        )


def check_batch(x, name: str, finite: bool = True) -> None:
    """A floating-point array with a leading batch axis (and, unless traced, finite)."""
    if not isinstance(x, (jax.Array, np.ndarray)):
        raise TypeError(f"{name} must be a jax or numpy array, got {type(x).__name__}; convert it with jnp.asarray")
    if isinstance(x, np.ndarray) and not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array, got numpy dtype {x.dtype}")
    if jnp.ndim(x) < 2:
        raise ValueError(f"{name} must have a leading batch axis, got shape {jnp.shape(x)}")
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {jnp.result_type(x)}")
    if jnp.finfo(jnp.result_type(x)).bits < 32:
        warnings.warn(f"{name} is {jnp.result_type(x)}: the solve runs in that precision (about "
                      f"{jnp.finfo(jnp.result_type(x)).precision} significant digits, and 1 / alpha reaches about 150 "
                      "near t_max on VP schedules), so its error can be of order 1e-2; give float32 for the solver's "
                      "state and run only the network in lower precision (samplax.models.load_diffusers(dtype=))",
                      stacklevel=3)
    if finite and not isinstance(x, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"{name} contains NaN or inf values")


def end_points(schedule: Schedule, t_start, t_end):
    """(t_start, t_end) as float arrays, defaulting to the schedule's range and checked to
    lie inside it, with t_start on the noise side of t_end."""
    t_start = schedule.t_max if t_start is None else t_start
    t_end = schedule.t_min if t_end is None else t_end
    for name, value in (("t_start", t_start), ("t_end", t_end)):
        check_real(name, value)
    schedule.check_times(t_start, t_end)
    if not isinstance(t_start, jax.core.Tracer) and not isinstance(t_end, jax.core.Tracer):
        if not float(t_start) > float(t_end):
            raise ValueError(
                f"t_start={float(t_start)} must be greater than t_end={float(t_end)}: time runs from noise "
                "(t_start) to data (t_end); invert() runs it backwards itself"
            )
    dtype = jnp.result_type(float)
    return jnp.asarray(t_start, dtype), jnp.asarray(t_end, dtype)


def check_steps(steps, solver, name: str = "steps") -> int:
    """A number of grid intervals (called `name`) that `solver` can run."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {steps!r}")
    if steps < solver.min_steps():
        raise ValueError(f"{name}: {type(solver).__name__} needs at least {solver.min_steps()} steps, got {steps}")
    return int(steps)


def _check_explicit_grid(grid, t_start, t_end) -> None:
    """An explicit grid runs from noise to data, and t_start and t_end given beside it must
    be its end points (a traced grid is not checked)."""
    if isinstance(grid, jax.core.Tracer):
        return
    times = np.asarray(grid, np.float64)
    if not times[0] > times[-1]:
        raise ValueError("give the grid from noise to data (decreasing times); inversion reverses it itself")
    for name, given, end, where in (("t_start", t_start, times[0], "starts"), ("t_end", t_end, times[-1], "ends")):
        if given is None or isinstance(given, jax.core.Tracer):
            continue
        if abs(float(given) - end) > 1e-6 * max(1.0, abs(end)):
            raise ValueError(f"{name}={float(given)} disagrees with the explicit grid, which {where} at {end}")


def resolve_grid(schedule: Schedule, solver, steps, grid, t_start=None, t_end=None) -> Grid:
    """The checked grid of a fixed-grid workflow. `grid` is a kind (None: the schedule's
    default) with `steps`, or an explicit array of times from noise to data."""
    if grid is None:
        grid = schedule.default_grid
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise ValueError(f"unknown grid {grid!r}; choose one of {GRIDS} or pass an array of times")
        if steps is None:
            raise ValueError("steps is required when grid is a name; pass steps=... or an array grid")
        t_start, t_end = end_points(schedule, t_start, t_end)
        return Grid(steps=check_steps(steps, solver), kind=grid, t_start=t_start, t_end=t_end)
    if not isinstance(grid, (jax.Array, np.ndarray)):
        hint = "; load_grid returns (times, metadata): pass its times" if isinstance(grid, tuple) else ""
        raise TypeError(f"grid must be a grid kind {GRIDS} or an array of times, got {type(grid).__name__}{hint}")
    check_grid(schedule, grid)
    _check_explicit_grid(grid, t_start, t_end)
    times = jnp.asarray(grid, jnp.result_type(float))
    if steps is not None and steps != times.shape[0] - 1:
        raise ValueError(f"steps={steps} disagrees with a grid of {times.shape[0]} times")
    check_steps(times.shape[0] - 1, solver)
    return Grid(steps=times.shape[0] - 1, times=times)


def noise_keys(solver, key, noise_source, batch: int):
    """(per-sample keys, noise source) for a stochastic solver, which needs a key, and
    (None, None) for a deterministic one, which refuses a key or a noise source."""
    if not solver.stochastic:
        if key is not None or noise_source is not None:
            given = "key" if key is not None else "noise_source"
            raise ValueError(f"{solver!r} is deterministic: {given}= applies to stochastic solvers only")
        return None, None
    if key is None:
        raise ValueError(
            f"{solver!r} is stochastic: pass key=jax.random.key(seed) (sample i then uses fold_in(key, i)) "
            "or an array of one key per sample"
        )
    source = as_noise_source("independent" if noise_source is None else noise_source)
    return sample_keys(key, batch), source
