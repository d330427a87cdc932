"""Inpainting: sampling the unknown part of an image given its known part.

The known region is kept at its noised value along the whole solve: the Denoiser's data
prediction is replaced by the known image there (`KnownRegion`). For an exponential
integrator, whose step is exact for a constant data prediction, this keeps the known part
of the state at alpha_t image + sigma_t z with the noise z it started from, which is
RePaint's replacement (Lugmayr et al. 2022, "RePaint: Inpainting using Denoising Diffusion
Probabilistic Models") with that fixed noise; stochastic solvers move z as their SDE does.
Any fixed-grid solver runs it.

Replacement alone does not sample the posterior: the unknown part commits to a mode
before the known part has told it which. RePaint's resampling lets them agree: after every
`jump` intervals, the state is noised back up over those intervals (the forward process,
fresh noise) and they are solved again, `resample` times in all.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from samplax.checks import check_count, check_flag
from samplax.samplers.denoiser import Denoiser, KnownRegion
from samplax.samplers.info import Info
from samplax.samplers.inputs import as_solver, check_batch, check_model, resolve_grid
from samplax.samplers.noise import sample_keys
from samplax.samplers.sampling import sample

__all__ = ["inpaint"]


def _check_mask(mask, image) -> jax.Array:
    if not isinstance(mask, (jax.Array, np.ndarray, int, float)):
        raise TypeError(f"inpaint(): mask must be an array of 0s and 1s broadcasting against image {image.shape}, "
                        f"got {type(mask).__name__}")
    mask = jnp.asarray(mask)
    try:
        shape = np.broadcast_shapes(mask.shape, image.shape)
    except ValueError:
        shape = None
    if shape != image.shape:
        hint = "; add the channel axis (mask[..., None])" if mask.shape == image.shape[1:-1] else ""
        raise ValueError(
            f"mask of shape {mask.shape} does not broadcast against image of shape {image.shape} without changing "
            f"its shape{hint}"
        )
    if not isinstance(mask, jax.core.Tracer):
        values = np.asarray(mask)
        if not np.all((values == 0) | (values == 1)):
            raise ValueError("mask must hold 1 where the image is known and 0 where it is to be sampled")
        if np.all(values == 1):
            raise ValueError("mask keeps every pixel (all 1): there is nothing to inpaint")
        if np.all(values == 0):
            raise ValueError("mask keeps no pixel (all 0): that is sampling from scratch; use sample()")
    return mask.astype(image.dtype)


def _noise_up(schedule, x, t_low, t_high, key):
    """x at t_low noised forward to t_high: the forward process's transition,
    x_high = (alpha_high / alpha_low) x + sqrt(sigma_high^2 - (alpha_high / alpha_low)^2 sigma_low^2) z."""
    ratio = schedule.alpha(t_high) / schedule.alpha(t_low)
    spread = jnp.sqrt(jnp.maximum(schedule.sigma(t_high) ** 2 - (ratio * schedule.sigma(t_low)) ** 2, 0.0))
    z = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(key)
    return (ratio * x + spread * z).astype(x.dtype)


def inpaint(
    model: Denoiser,
    solver,
    image: jax.Array,
    mask,
    *,
    key,
    steps: int | None = None,
    grid=None,
    t_start=None,
    t_end=None,
    denoise_to_zero: bool = False,
    resample: int = 1,
    jump: int = 1,
    noise_source=None,
):
    """Sample where `mask` is 0 given `image` where it is 1, with any fixed-grid solver.

    Args:
        image: batch first; its values where the mask is 0 are not used.
        mask: 1 where the image is known, 0 elsewhere, broadcasting against `image`.
        key: one key (sample i uses fold_in(key, i)) or one per sample: the initial noise,
            the resampling noise and a stochastic solver's noise.
        steps, grid, t_start, t_end, denoise_to_zero: the grid, as for `sample`.
        resample: RePaint's r, how many times each block of `jump` intervals is solved
            (1: replacement alone).
        jump: RePaint's j, the intervals of each block noised back up and solved again.

    Returns:
        (samples, Info): the samples equal `image` where the mask is 1; `info.nfe` counts
        every solve of every block.
    """
    solver = as_solver(solver, "inpaint")
    if solver.adaptive:
        raise ValueError(f"inpaint(): {solver!r} chooses its own steps; inpainting runs a fixed grid")
    check_batch(image, "image")
    check_model(model, "inpaint", image, "image")
    mask = _check_mask(mask, image)
    resample, jump = check_count("resample", resample), check_count("jump", jump)
    check_flag("denoise_to_zero", denoise_to_zero)
    if noise_source is not None and not solver.stochastic:
        raise ValueError(f"inpaint(): {solver!r} is deterministic: noise_source= applies to stochastic solvers only")
    schedule = model.schedule
    request = resolve_grid(schedule, solver, steps, grid, t_start, t_end)
    times = request.concrete(schedule)
    known = dataclasses.replace(model, known=KnownRegion(image=image, mask=mask))
    keys = sample_keys(key, image.shape[0])

    def fold(index):
        return jax.vmap(lambda k: jax.random.fold_in(k, index))(keys)

    # The known region starts at its noised value, alpha image + sigma z, like the rest of the solve.
    noise = jax.vmap(lambda k: jax.random.normal(k, image.shape[1:], image.dtype))(fold(0))
    x = (schedule.sigma(times[0]) * noise + mask * schedule.alpha(times[0]) * image).astype(image.dtype)
    nfe, draws = 0, 1
    for begin in range(0, request.steps, jump):
        end = min(begin + jump, request.steps)
        last = end == request.steps
        for repeat in range(resample):
            stochastic = {"key": fold(draws), "noise_source": noise_source} if solver.stochastic else {}
            draws += 1
            block = times[begin : end + 1]
            x, info = sample(known, solver, x / schedule.sigma(block[0]).astype(x.dtype), grid=block,
                             denoise_to_zero=denoise_to_zero and last and repeat == resample - 1, **stochastic)
            nfe += int(info.nfe)
            if repeat < resample - 1:
                x = _noise_up(schedule, x, times[end], times[begin], fold(draws))
                draws += 1
    return mask * image + (1 - mask) * x, Info(nfe=jnp.asarray(nfe), times=times)
