"""The benchmark problems, defined once so that every benchmark and the peer runner see the
same mixture, schedule, noise and reference."""

from __future__ import annotations

import jax
import numpy as np

import samplax as sx

DIMENSION = 64
COMPONENTS = 8
STD_RANGE = (0.05, 0.25)
NFES = (5, 6, 8, 10, 15, 20)


def diffusion_problem(samples: int = 1000, seed: int = 0, noise_seed: int = 1):
    """The sharp mixture (64-D, 8 components, stds 0.05-0.25) under the DDPM discrete
    schedule (betas linear 1e-4..0.02, 1000 steps). Returns (mixture, schedule, noise,
    reference), where reference is the exact ODE endpoint at sigma = 0 from
    x_T = sigma(1) * noise."""
    mixture = sx.GaussianMixture.random(seed, DIMENSION, COMPONENTS, STD_RANGE)
    schedule = sx.schedules.VPDiscrete.ddpm_linear()
    noise = np.asarray(jax.random.normal(jax.random.PRNGKey(noise_seed), (samples, DIMENSION)))
    x_start = np.asarray(schedule.sigma(1.0)) * noise
    reference = mixture.flow_to_data(x_start, schedule, 1.0)
    return mixture, schedule, noise.astype(np.float32), reference


def rms_error(x, reference) -> float:
    """Root-mean-square error per coordinate over all samples."""
    return float(np.sqrt(np.mean((np.asarray(x, np.float64) - reference) ** 2)))
