"""What the stochastic solvers share: the exact steps of the diffusion SDEs written with
the schedule's alpha and sigma, so that they stay finite where lambda is infinite (t = 1
and t = 0 on rectified flow).

With h = lambda_next - lambda the log-SNR step, e^-h = sigma_next alpha / (alpha_next
sigma). The marginal-preserving reverse SDEs dx = [f x - (1 + eta) g^2 s / 2] dt +
sqrt(eta) g dW (eta = 0 is the probability-flow ODE, eta = 1 the reverse SDE of Anderson
1982) integrated exactly with the data prediction frozen over a step give

    x_next = (sigma_next / sigma) e^(-eta h) x + alpha_next (1 - e^-((1 + eta) h)) D
             + sigma_next sqrt(1 - e^(-2 eta h)) xi,

the first-order step of SDE-DPM-Solver++ (Lu et al. 2022) and, with eta = tau^2, of
SA-Solver (Xue et al. 2023); eta = 1 is DDPM's posterior step.
"""

from __future__ import annotations

import jax.numpy as jnp

from samplax.schedules import Schedule

__all__ = ["decay", "forward_jump", "nonnegative_sqrt", "posterior_step", "sde_noise"]


def nonnegative_sqrt(value):
    """sqrt(max(value, 0)) with a zero (not NaN) derivative where the value is zero."""
    positive = value > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, value, 1.0)), 0.0)


def decay(schedule: Schedule, times_from, times_to):
    """e^-h = e^-(lambda_to - lambda_from), finite at the ends of a flow's range."""
    numerator = schedule.sigma(times_to) * schedule.alpha(times_from)
    return numerator / (schedule.alpha(times_to) * schedule.sigma(times_from))


def sde_noise(schedule: Schedule, times_from, times_to, eta):
    """(e^(-eta h), the scale sigma_to sqrt(1 - e^(-2 eta h)) of the noise) of the exact
    step of the eta-SDE; eta may vary per step (0 gives 1 and 0 exactly)."""
    factor = jnp.power(decay(schedule, times_from, times_to), eta)
    return factor, schedule.sigma(times_to) * nonnegative_sqrt(1.0 - factor**2)


def posterior_step(schedule: Schedule, times_from, times_to, eta, prediction: str):
    """(state, weight, noise) of DDIM with eta (Song et al. 2021, "Denoising Diffusion
    Implicit Models"): x_to = alpha_to D + sqrt(sigma_to^2 - c^2) eps + c xi with
    c = eta sigma_to sqrt(1 - e^-2h), the DDPM posterior's standard deviation times eta,
    written as x_to = state x + weight m + noise xi for m the data or noise prediction."""
    alpha, sigma = schedule.alpha(times_from), schedule.sigma(times_from)
    alpha_to, sigma_to = schedule.alpha(times_to), schedule.sigma(times_to)
    noise = eta * sigma_to * nonnegative_sqrt(1.0 - decay(schedule, times_from, times_to) ** 2)
    direction = nonnegative_sqrt(sigma_to**2 - noise**2)  # the weight on eps
    if prediction == "data":  # eps = (x - alpha D) / sigma
        return direction / sigma, alpha_to - direction * alpha / sigma, noise
    if prediction == "noise":  # D = (x - sigma eps) / alpha
        return alpha_to / alpha, direction - alpha_to * sigma / alpha, noise
    raise ValueError(f"the posterior step uses a 'data' or 'noise' prediction, got {prediction!r}")


def forward_jump(schedule: Schedule, times_from, times_to):
    """(scale, noise) of the forward process from times_from to the noisier times_to:
    x_to = scale x + noise xi, scale = alpha_to / alpha_from and noise^2 = sigma_to^2 -
    scale^2 sigma_from^2 (EDM's churn, Restart's jumps); zero noise where the times agree."""
    scale = schedule.alpha(times_to) / schedule.alpha(times_from)
    variance = schedule.sigma(times_to) ** 2 - (scale * schedule.sigma(times_from)) ** 2
    return scale, nonnegative_sqrt(variance)
