"""Posterior sampling for inverse problems, and classifier guidance, through the score:
a Denoiser whose score gains the gradient of a log-likelihood of its data prediction
(`PosteriorGuidance`), which every solver then samples with.

For a linear observation y = A x0 + sigma_y n, `gaussian_observation(A, y, sigma_y)` is
log N(y; A D(x_t), sigma_y^2 I), the approximation p(y | x_t) ~ p(y | D(x_t)) of diffusion
posterior sampling (DPS, Chung et al. 2023, "Diffusion Posterior Sampling for General
Noisy Inverse Problems"). DPS's published step normalises its weight by the residual norm
(zeta / ||y - A D||); that is the log-likelihood -zeta ||y - A D||, which can be passed as
a function of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from samplax.checks import check_callable_as, check_flag, check_positive, check_real
from samplax.samplers.denoiser import Denoiser
from samplax.samplers.guidance import PosteriorGuidance

__all__ = ["gaussian_observation", "posterior_guidance"]


def _log_normal(operator, observed, noise_std, inflate, data, alpha, sigma):
    predicted = operator(data)
    if jnp.shape(predicted) != jnp.shape(observed):
        raise ValueError(f"gaussian_observation(): operator(data) has shape {jnp.shape(predicted)} but observed has "
                         f"shape {jnp.shape(observed)}; give one observation row per sample, shaped like the "
                         "operator's output")
    residual = observed - predicted
    variance = noise_std**2 + inflate * sigma**2 / (alpha**2 + sigma**2)
    variance = jnp.reshape(variance, (-1,) + (1,) * (residual.ndim - 1))
    return -0.5 * jnp.sum((residual**2 / variance).reshape(residual.shape[0], -1), axis=1)


def gaussian_observation(operator: Callable, observed: jax.Array, noise_std: float,
                         inflate: float = 1.0) -> jax.tree_util.Partial:
    """log N(observed; operator(x0), v I) per sample, as a function of the data prediction
    x0 (batch first) at noise level (alpha, sigma), with v = noise_std^2 + inflate r^2 and
    r^2 = sigma^2 / (alpha^2 + sigma^2), the variance of x0 given x_t under a unit-variance
    data prior (Song et al. 2023, "Pseudoinverse-Guided Diffusion Models for Inverse
    Problems"). inflate = 0 is DPS's approximation N(y; A D(x_t), noise_std^2 I), which
    ignores how uncertain D is at high noise and makes the guided ODE stiff there (see
    docs/benchmarks.md). `operator` maps a batch of data to a batch of observations (a
    mask, box down-sampling, any differentiable function); `observed` is batch first."""
    if not callable(operator):
        raise TypeError(f"operator must be a function of a batch of data, got {type(operator).__name__}")
    check_callable_as("operator", operator, ("data",))
    if not isinstance(observed, (jax.Array, np.ndarray)):
        raise TypeError(f"observed must be an array of observations, batch first, got {type(observed).__name__}")
    if not isinstance(observed, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(observed))):
        raise ValueError("gaussian_observation(): observed contains NaN or inf values")
    check_positive("noise_std (the observation noise; a small value for noiseless observations)", noise_std)
    check_positive("inflate", inflate, allow_zero=True)
    return jax.tree_util.Partial(_log_normal, jax.tree_util.Partial(operator), jnp.asarray(observed), noise_std,
                                 inflate)


def posterior_guidance(model: Denoiser, log_likelihood: Callable, scale=1.0, *,
                       through_network: bool = True) -> Denoiser:
    """`model` with the gradient of `log_likelihood(D(x), alpha, sigma)` (per sample) added
    to its score at weight `scale` (see `PosteriorGuidance`): one network evaluation and
    its gradient per stage, or with `through_network=False` (FlowChef's gradient
    skipping) one plain evaluation."""
    check_flag("through_network", through_network)
    if not isinstance(model, Denoiser):
        raise TypeError(f"posterior_guidance(): model must be a samplax Denoiser, got {type(model).__name__}")
    if not callable(log_likelihood):
        raise TypeError(
            f"log_likelihood must be a function of the data prediction, got {type(log_likelihood).__name__}"
        )
    check_callable_as("log_likelihood", log_likelihood, ("data_prediction", "alpha", "sigma"))
    check_real("scale", scale)
    if not isinstance(scale, jax.core.Tracer) and np.any(np.asarray(scale) < 0):
        raise ValueError(f"scale must be >= 0 (the weight of the log-likelihood's gradient; a negative one pushes "
                         f"away from the observation), got {scale}")
    if model.posterior is not None:
        raise ValueError("posterior_guidance(): model already has posterior guidance; a second would replace it. "
                         "Guide by both likelihoods with one function that adds them")
    if not isinstance(log_likelihood, jax.tree_util.Partial):
        log_likelihood = jax.tree_util.Partial(log_likelihood)
    return dataclasses.replace(model, posterior=PosteriorGuidance(log_likelihood=log_likelihood, scale=scale,
                                                                  through_network=through_network))
