"""Shared pieces of exponential integrators (DPM-Solver, DEIS, UniPC): the phi functions
and the exact linear part of the diffusion ODE written in lambda = log(alpha / sigma).

With signed step hh = -h for data prediction and hh = +h for noise prediction
(h = lambda_t - lambda_s), every update has the form

    x_t = scale * x_s - multiplier * (psi_1(hh) m_s + psi_2(hh) D1 + psi_3(hh) D2 + ...)

where scale = sigma_t / sigma_s and multiplier = alpha_t for data prediction, and
scale = alpha_t / alpha_s and multiplier = sigma_t for noise prediction (Lu et al. 2022,
2023). psi_k are the phi functions psi_1 = e^hh - 1, psi_{k+1} = psi_k / hh - 1 / k!.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from samplax.schedules import Schedule
from samplax.solvers.engine import Plan
from samplax.solvers.toolkit import multistep_plan

__all__ = ["EXPONENTIAL_PREDICTIONS", "linear_part", "exponential_multistep_plan", "psi"]

EXPONENTIAL_PREDICTIONS = ("data", "noise")  # what an exponential integrator can integrate

_SERIES_TERMS = 16
_SERIES_BELOW = 1.0


def psi(order: int, hh):
    """psi_order(hh) = sum_{n >= 1} hh^n / (n + order - 1)!, stable for small |hh|.

    The closed form cancels catastrophically as hh -> 0, so below |hh| = 1 a truncated
    series is used (its remainder is below 1e-14 relative there); both branches are safe to
    differentiate."""
    hh = jnp.asarray(hh)
    small = jnp.abs(hh) < _SERIES_BELOW
    safe = jnp.where(small, 1.0, hh)
    closed = jnp.expm1(safe)
    for k in range(1, order):
        closed = closed / safe - 1.0 / float(math.factorial(k))
    series_h = jnp.where(small, hh, 0.0)
    series = jnp.zeros_like(hh)  # Horner's rule: few operations, so it compiles fast
    for n in range(_SERIES_TERMS, 0, -1):
        series = (series + 1.0 / float(math.factorial(n + order - 1))) * series_h
    return jnp.where(small, series, closed)


def linear_part(schedule, times_from, times_to, prediction: str):
    """(scale, multiplier, hh) of a step from `times_from` to `times_to`, for `prediction`
    in {"data", "noise"}."""
    lambda_from, lambda_to = schedule.lambda_(times_from), schedule.lambda_(times_to)
    h = lambda_to - lambda_from
    if prediction == "data":
        return schedule.sigma(times_to) / schedule.sigma(times_from), schedule.alpha(times_to), -h
    if prediction == "noise":
        return schedule.alpha(times_to) / schedule.alpha(times_from), schedule.sigma(times_to), h
    raise ValueError(f"exponential integrators predict 'data' or 'noise', got {prediction!r}")


def exponential_multistep_plan(solver, schedule: Schedule, times: jax.Array, denoise_to_zero: bool, weights) -> Plan:
    """The plan of a multistep exponential integrator, one evaluation per step:

        x_{i+1} = scale_i x_i - multiplier_i sum_j weights[i, j] m_{i-j},

    in the solver's prediction m (`toolkit.multistep_plan`). `weights(hh, orders)` gives
    the (steps, solver.order) weights, newest prediction first, from the signed steps hh
    and the per-step orders."""
    scale, multiplier, hh = linear_part(schedule, times[:-1], times[1:], solver.prediction)

    def update(orders):
        return scale, -multiplier[:, None] * weights(hh, orders)

    return multistep_plan(solver, schedule, times, denoise_to_zero, update)
