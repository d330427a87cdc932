"""What every benchmark shares: the problems (defined once, so that every benchmark and
the peer runners see the same mixture, schedule, noise and reference), the RMS error,
the choice of solvers by what they declare, and atomic writes of results and markdown
tables."""

from __future__ import annotations

import json

import jax
import numpy as np

import samplax as sx
from samplax.models.checkpoints import write_atomic

DIMENSION = 64
COMPONENTS = 8
STD_RANGE = (0.05, 0.25)
NFES = (5, 6, 8, 10, 15, 20)


def _mixture_and_noise(samples: int, seed: int, noise_seed: int, std_range=STD_RANGE):
    mixture = sx.GaussianMixture.random(seed, DIMENSION, COMPONENTS, tuple(std_range))
    noise = np.asarray(jax.random.normal(jax.random.PRNGKey(noise_seed), (samples, DIMENSION)))
    return mixture, noise


def diffusion_problem(samples: int = 1000, seed: int = 0, noise_seed: int = 1, std_range=STD_RANGE):
    """The sharp mixture (64-D, 8 components, stds 0.05-0.25, or `std_range`) under the
    DDPM discrete schedule (betas linear 1e-4..0.02, 1000 steps). Returns (mixture,
    schedule, noise, reference), where reference is the exact ODE endpoint at sigma = 0
    from x_T = sigma(1) * noise."""
    mixture, noise = _mixture_and_noise(samples, seed, noise_seed, std_range)
    schedule = sx.schedules.VPDiscrete.ddpm_linear()
    x_start = np.asarray(schedule.sigma(1.0)) * noise
    reference = mixture.flow_to_data(x_start, schedule, 1.0)
    return mixture, schedule, noise.astype(np.float32), reference


def stochastic_problem(samples: int = 8192, seed: int = 0, noise_seed: int = 1):
    """The sharp mixture under the DDPM discrete schedule, for samplers compared in
    distribution (stochastic ones end anywhere in the data distribution, so there is no
    per-sample reference). Returns (mixture, schedule, noise)."""
    mixture, noise = _mixture_and_noise(samples, seed, noise_seed)
    return mixture, sx.schedules.VPDiscrete.ddpm_linear(), noise.astype(np.float32)


def rectified_flow_problem(samples: int = 500, seed: int = 0, noise_seed: int = 1):
    """The same mixture under the rectified-flow path. Returns (mixture, model, noise,
    reference): the mixture's exact velocity as a Denoiser, standard normal noise at t = 1
    and the exact ODE endpoints at t = 0."""
    mixture, noise = _mixture_and_noise(samples, seed, noise_seed)
    schedule = sx.schedules.RectifiedFlow()
    # lambda(1) = -inf: start the reference 1e-9 before t = 1 (the state moves by ~1e-9).
    reference = mixture.flow_to_data(noise, schedule, 1.0 - 1e-9)
    return mixture, mixture.denoiser(schedule, "velocity"), noise.astype(np.float32), reference


def rms_error(x, reference) -> float:
    """Root-mean-square error per coordinate over all samples."""
    return float(np.sqrt(np.mean((np.asarray(x, np.float64) - np.asarray(reference, np.float64)) ** 2)))


def registered_solvers(keep, distinct: bool = False) -> dict:
    """{name: solver} of the registered solvers for which keep(solver) holds, in name
    order. With `distinct`, a name whose solver equals one listed before it (an alias,
    such as "dpm-solver-adaptive" of "dpm++23") is left out."""
    found = {}
    for name in sx.solvers.names():
        solver = sx.solvers.get(name)
        if keep(solver) and not (distinct and solver in found.values()):
            found[name] = solver
    return found


# -- output --------------------------------------------------------------------------------


def write_text(path, text: str) -> None:
    """Write a text file atomically (samplax's write_atomic: a temporary file in the same
    folder, then a rename), creating its folder."""
    write_atomic(path, text.encode())


def write_json(path, payload, indent: int | None = 1) -> None:
    """Write results as JSON, atomically."""
    write_text(path, json.dumps(payload, indent=indent))


def markdown_table(header, rows, align=None) -> list[str]:
    """The lines of a markdown table: `header` and every row are lists of cells (strings);
    `align` is one separator cell per column ("---", "---:"), left-aligned by default."""
    def line(cells):
        return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"

    return [line(header), "|" + "|".join(align or ["---"] * len(header)) + "|"] + [line(row) for row in rows]
