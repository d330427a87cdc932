"""img2img: sampling from a given image noised part of the way (SDEdit, Meng et al. 2022,
"SDEdit: Guided Image Synthesis and Editing with Stochastic Differential Equations").

Where the solve begins is set by `strength` on the grid of the whole solve: the grid of
`steps` intervals from t_start (t_max by default) to t_end is computed as `sample` computes
it, and the last floor(strength * steps) of its intervals are run, from the image noised to
the grid point where they begin. So strength 1 runs every step from t_start, strength 0.5
of 10 steps runs the last 5 from times[5], and a strength that leaves no interval is an
error rather than a silent copy of the image. This is diffusers' img2img rule (begin index
steps - floor(strength * steps)), without its off-by-one hazards: the begin point is an
entry of the grid itself, never looked up again by value.
"""

from __future__ import annotations

import math

import jax

from samplax.checks import check_real
from samplax.samplers.denoiser import Denoiser
from samplax.samplers.inputs import as_solver, check_batch, check_model, resolve_grid
from samplax.samplers.noise import sample_keys
from samplax.samplers.sampling import sample

__all__ = ["begin_index", "sdedit"]


def begin_index(steps: int, strength) -> int:
    """The grid index where an img2img solve of `strength` begins: steps - floor(strength * steps)."""
    check_real("strength", strength)
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must lie in (0, 1] (the fraction of the grid's steps that is run), got {strength}")
    run = math.floor(strength * steps + 1e-9)
    if run < 1:
        raise ValueError(f"strength={strength} of {steps} steps runs no step (floor(strength * steps) = 0): raise "
                         "strength or steps")
    return steps - run


def sdedit(
    model: Denoiser,
    solver,
    image: jax.Array,
    *,
    strength,
    key,
    steps: int | None = None,
    grid=None,
    t_start=None,
    t_end=None,
    denoise_to_zero: bool = False,
    noise_source=None,
):
    """Noise `image` (batch first) to the grid point where `strength` of the steps remain,
    x = alpha image + sigma noise, and solve from there with `solver` (ODE or SDE).

    Args:
        strength: in (0, 1]: the solve runs the last floor(strength * steps) intervals of
            the grid (see the module docstring).
        key: one key (sample i uses fold_in(key, i)) or one per sample; it draws the noise
            that is added to the image and, for a stochastic solver, the solver's noise.
        steps, grid, t_start, t_end: the grid of the whole solve, as for `sample`.
        denoise_to_zero, noise_source: as for `sample`.

    Returns:
        (samples, Info), with `info.times` the part of the grid that was run.
    """
    solver = as_solver(solver, "sdedit")
    if solver.adaptive:
        raise ValueError(f"sdedit(): strength picks a point of a fixed grid; {solver!r} chooses its own steps")
    check_batch(image, "image")
    check_model(model, "sdedit", image, "image")
    request = resolve_grid(model.schedule, solver, steps, grid, t_start, t_end)
    times = request.concrete(model.schedule)
    begin = begin_index(request.steps, strength)
    keys = sample_keys(key, image.shape[0])
    noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 0), image.shape[1:], image.dtype))(keys)
    schedule, start = model.schedule, times[begin]
    alpha, sigma = schedule.alpha(start).astype(image.dtype), schedule.sigma(start).astype(image.dtype)
    # sample() starts from sigma(times[0]) * its noise argument: give it x / sigma.
    scaled = noise + (alpha / sigma) * image
    stochastic = {}
    if solver.stochastic:
        stochastic = {"key": jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys), "noise_source": noise_source}
    elif noise_source is not None:
        raise ValueError(f"{solver!r} is deterministic: noise_source= applies to stochastic solvers only")
    return sample(model, solver, scaled, grid=times[begin:], denoise_to_zero=denoise_to_zero, **stochastic)
