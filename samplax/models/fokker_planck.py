"""The Fokker-Planck residual of a learned score, as a training penalty.

The marginals p_t of the forward SDE dx = f x dt + g dW (the schedule's, see
`Schedule.drift_and_diffusion`) obey the Fokker-Planck equation, so their scores
s = grad log p_t obey

    ds/dt = grad_x [ g^2 / 2 (div s + |s|^2) - f x . s ].

A learned score need not: its probability-flow ODE and its reverse SDE then sample
different distributions. Deveney et al. (2023, "Closing the ODE-SDE gap in score-based
diffusion models through the Fokker-Planck equation") bound the 2-Wasserstein distance
between the two by the residual of this equation, and Lai et al. (2023, "FP-Diffusion")
penalise the residual of the score equation above during training. Here the time
derivative is a forward-mode product in t, the divergence exact (one forward-mode product
per dimension) or a Hutchinson estimate (`samplax.divergence`), and grad_x a reverse-mode
gradient; training
through it differentiates the network three times.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from samplax.divergence import ExactDivergence, Hutchinson
from samplax.predictions import broadcast_to_batch, data_and_noise
from samplax.schedules import Schedule

__all__ = ["DIVERGENCES", "fokker_planck_penalty", "fokker_planck_residual", "score_from_output"]

DIVERGENCES = ("exact", "hutchinson")


def score_from_output(prediction: str, schedule: Schedule, x, out, t):
    """The score grad log p_t(x) = -noise / sigma from a network's `prediction` at (x, t)."""
    if prediction == "score":
        return out
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    d_alpha, d_sigma = schedule.alpha_sigma_derivatives(t) if prediction == "velocity" else (None, None)
    noise = data_and_noise(prediction, x, out, alpha, sigma, d_alpha, d_sigma)[1]
    return -noise / broadcast_to_batch(sigma, x)


def _per_sample_sum(values):
    return jnp.sum(values.reshape(values.shape[0], -1), axis=1)


def fokker_planck_residual(score, schedule: Schedule, x, t, divergence=None, probes=None):
    """r = ds/dt - grad_x [g^2 / 2 (div s + |s|^2) - f x . s] at the batch (x, t), for
    `score(x, t) -> (batch, ...)`; zero for the exact scores of the schedule's marginals.
    `divergence` is an estimator of `samplax.divergence` (exact by default); with
    Hutchinson's, `probes` holds each sample's probes and r is an unbiased estimate."""
    divergence = ExactDivergence() if divergence is None else divergence
    f, g2 = schedule.drift_and_diffusion(t)
    time_derivative = jax.jvp(lambda times: score(x, times), (t,), (jnp.ones_like(t),))[1]

    def potential(point, time, drift, diffusion2, sample_probes):  # of one sample
        value, trace = divergence(lambda y: score(y[None], time[None])[0], point, sample_probes)
        return 0.5 * diffusion2 * (trace + jnp.sum(value**2)) - drift * jnp.sum(point * value)

    gradient = jax.vmap(jax.grad(potential))(x, t, f, g2, probes)
    return time_derivative - gradient


def fokker_planck_penalty(score, schedule: Schedule, x, t, *, divergence: str = "exact", key=None):
    """The mean over the batch of |sigma^3 r / g^2|^2 / dimension.

    The residual r of a score of size 1 / sigma is of size g^2 / sigma^3, so the scaled
    residual weighs every noise level alike. With divergence="hutchinson", two
    independent Rademacher probes per sample give two unbiased residuals r1 and r2, and
    the penalty uses r1 . r2, an unbiased estimate of |r|^2 (squaring one estimate would
    add the probe's variance to the penalty)."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    scale = broadcast_to_batch(schedule.sigma(t) ** 3 / schedule.drift_and_diffusion(t)[1], x)
    dimension = x[0].size
    if divergence == "exact":
        scaled = scale * fokker_planck_residual(score, schedule, x, t)
        return jnp.mean(_per_sample_sum(scaled**2)) / dimension
    if key is None:
        raise ValueError("the Hutchinson divergence draws probes: pass a key")
    estimator = Hutchinson(1)
    first, second = (
        scale * fokker_planck_residual(score, schedule, x, t, estimator, estimator.probes(probe_key, x)[0][:, None])
        for probe_key in jax.random.split(key)
    )
    return jnp.mean(_per_sample_sum(first * second)) / dimension
