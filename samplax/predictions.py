"""What a network may predict, and each prediction as the data and noise predictions.

For x = alpha x0 + sigma noise, a network may output the noise, the data x0,
v = alpha noise - sigma x0 (Salimans & Ho 2022), the velocity dx/dt = alpha' x0 +
sigma' noise, or the score grad log p_t = -noise / sigma. At fixed (x, t) each is an
affine function of the others; `data_and_noise` inverts them. The Denoiser (for
sampling) and the training losses share it.
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["PREDICTIONS", "TIME_INPUTS", "broadcast_to_batch", "data_and_noise", "output_from_data_and_noise"]

PREDICTIONS = ("noise", "data", "v", "velocity", "score")
TIME_INPUTS = ("continuous", "discrete", "sigma", "reversed")


def broadcast_to_batch(value, x):
    """A scalar or per-sample (batch,) coefficient, shaped to broadcast against x."""
    value = jnp.asarray(value, x.dtype)
    return value if value.ndim == 0 else value.reshape((-1,) + (1,) * (x.ndim - 1))


def data_and_noise(prediction: str, x, out, alpha, sigma, d_alpha=None, d_sigma=None):
    """(data, noise) predictions from the network output `out` at x, where alpha and sigma
    (and, for a velocity, their time derivatives) are scalars or per-sample (batch,)."""
    alpha, sigma = broadcast_to_batch(alpha, x), broadcast_to_batch(sigma, x)
    if prediction == "noise":
        return (x - sigma * out) / alpha, out
    if prediction == "data":
        return out, (x - alpha * out) / sigma
    if prediction == "score":
        noise = -sigma * out
        return (x - sigma * noise) / alpha, noise
    if prediction == "v":
        # x = alpha x0 + sigma eps and v = alpha eps - sigma x0, solved for (x0, eps).
        norm = alpha**2 + sigma**2
        return (alpha * x - sigma * out) / norm, (sigma * x + alpha * out) / norm
    if prediction == "velocity":
        # x = alpha x0 + sigma eps and dx/dt = alpha' x0 + sigma' eps.
        d_alpha, d_sigma = broadcast_to_batch(d_alpha, x), broadcast_to_batch(d_sigma, x)
        determinant = alpha * d_sigma - sigma * d_alpha
        return (d_sigma * x - sigma * out) / determinant, (alpha * out - d_alpha * x) / determinant
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def output_from_data_and_noise(prediction: str, x, data, noise, alpha, sigma, d_alpha=None, d_sigma=None):
    """The network output of type `prediction` that stands for the (data, noise) pair at
    x: the inverse of `data_and_noise`."""
    alpha, sigma = broadcast_to_batch(alpha, x), broadcast_to_batch(sigma, x)
    if prediction == "noise":
        return noise
    if prediction == "data":
        return data
    if prediction == "score":
        return -noise / sigma
    if prediction == "v":
        return alpha * noise - sigma * data
    if prediction == "velocity":
        return broadcast_to_batch(d_alpha, x) * data + broadcast_to_batch(d_sigma, x) * noise
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
