"""CODE: restoring corrupted or out-of-distribution images along the probability-flow ODE
(van Kempen et al. 2024, "Confident Ordinary Differential Editing").

The input is inverted along the ODE to a chosen noise level (`invert`), where Langevin
steps on the model's score move it towards the model's distribution at that level, with
the latent clipped to the confidence interval alpha [-1, 1] +- k sigma of data in [-1, 1]
(the paper's confidence-based clipping); the result is then regenerated along the ODE
(`sample`) over the same grid. The noise level and the number and size of the Langevin
steps trade realism against fidelity to the input: no Langevin step and no clipping gives
the input back (up to the solver's error), as the ODE is a bijection.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from samplax.checks import check_count, check_positive, check_real
from samplax.samplers.denoiser import Denoiser
from samplax.samplers.info import Info
from samplax.samplers.inputs import as_solver, check_batch, check_model, end_points
from samplax.samplers.noise import sample_keys
from samplax.samplers.sampling import invert, sample
from samplax.solvers.grids import time_grid

__all__ = ["code"]

# The paper anneals its Langevin step in stages, shrinking it by this factor at each.
ANNEALING_STAGES = 4
ANNEALING_FACTOR = 0.8


@functools.partial(jax.jit, static_argnames=("steps",))
def _langevin(model, x, t, keys, step_size, steps, clip_stds):
    """`steps` Langevin steps x <- x + e score + sqrt(2 e) z at time t, with the step e
    shrinking by ANNEALING_FACTOR over ANNEALING_STAGES stages, and the state clipped to
    alpha [-1, 1] +- clip_stds sigma after each step (no clipping where clip_stds is inf)."""
    alpha, sigma = model.schedule.alpha(t).astype(x.dtype), model.schedule.sigma(t).astype(x.dtype)
    bound = alpha + clip_stds * sigma
    stage_length = max(1, -(-steps // ANNEALING_STAGES))

    def step(x, index):
        size = step_size * ANNEALING_FACTOR ** (index // stage_length)
        score = -model.noise(x, t) / sigma
        z = jax.vmap(lambda key: jax.random.normal(jax.random.fold_in(key, index), x.shape[1:], x.dtype))(keys)
        return jnp.clip(x + size * score + jnp.sqrt(2.0 * size) * z, -bound, bound), None

    return jax.lax.scan(step, jnp.clip(x, -bound, bound), jnp.arange(steps))[0]


def code(
    model: Denoiser,
    solver,
    image: jax.Array,
    *,
    key,
    level,
    steps: int,
    langevin_steps: int = 0,
    step_size=None,
    clip_stds=1.7,
    grid=None,
    t_end=None,
):
    """Restore `image` (batch first, data in [-1, 1]) with CODE.

    Args:
        solver: a deterministic fixed-grid solver, for the inversion and the regeneration.
        key: one key (sample i uses fold_in(key, i)) or one per sample: the Langevin noise.
        level: the time the input is inverted to (t_end < level <= t_max); higher is more
            realism and less fidelity.
        steps: grid intervals between t_end and `level`, each way.
        langevin_steps: Langevin steps at `level` (one network evaluation each).
        step_size: the first Langevin step e, annealed by ANNEALING_FACTOR over
            ANNEALING_STAGES stages; default 0.1 sigma(level)^2 (a step in units of the
            noise variance there).
        clip_stds: k of the confidence interval alpha [-1, 1] +- k sigma (the paper's 1.7);
            None for no clipping.
        grid: the kind of grid between t_end and `level` (the schedule's default if None).

    Returns:
        (restored images, Info) with `info.nfe` the evaluations of all three parts.
    """
    solver = as_solver(solver, "code")
    if solver.adaptive or solver.stochastic or solver.reversible:
        raise ValueError(f"code() inverts and regenerates along the ODE with one fixed-grid solver; {solver!r} "
                         "is not a deterministic fixed-grid solver")
    check_batch(image, "image")
    check_model(model, "code", image, "image")
    schedule = model.schedule
    if level is None:
        raise ValueError("code(): level, the time the input is inverted to (t_end < level <= t_max), is required")
    if grid is not None and not isinstance(grid, str):
        raise TypeError(f"code(): grid is the kind of grid between t_end and level (such as 'logsnr'), got "
                        f"{type(grid).__name__}; code() builds its own times")
    try:
        level, t_end = end_points(schedule, level, t_end)
    except (TypeError, ValueError) as error:
        raise type(error)(f"code(): {str(error).replace('t_start', 'level')}") from None
    langevin_steps = check_count("langevin_steps", langevin_steps, minimum=0)
    if clip_stds is not None:
        check_positive("clip_stds", clip_stds)
    sigma = schedule.sigma(level)
    if step_size is not None and langevin_steps == 0:
        raise ValueError("code(): step_size applies to the Langevin steps, and langevin_steps=0 takes none; drop "
                         "step_size or give langevin_steps")
    if step_size is None:
        step_size = 0.1 * sigma**2
    check_real("step_size", step_size)
    if not isinstance(step_size, jax.core.Tracer) and not float(step_size) > 0:
        raise ValueError(f"step_size must be positive, got {float(step_size)}")
    times = time_grid(schedule, steps, grid or schedule.default_grid, level, t_end)
    noise, inverted = invert(model, solver, image, grid=times)
    x = sigma.astype(image.dtype) * noise
    if langevin_steps or clip_stds is not None:
        clip = jnp.inf if clip_stds is None else clip_stds
        x = _langevin(model, x, level, sample_keys(key, image.shape[0]), jnp.asarray(step_size, image.dtype),
                      langevin_steps, jnp.asarray(clip, image.dtype))
    restored, regenerated = sample(model, solver, x / sigma.astype(x.dtype), grid=times)
    nfe = inverted.nfe + langevin_steps + regenerated.nfe
    return restored, Info(nfe=jnp.asarray(nfe), times=times)
