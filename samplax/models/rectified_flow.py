"""Training rectified flows (Liu et al. 2023, "Flow straight and fast"): the flow-matching
loss on the linear path with several time densities and distances, reflow couplings,
k-step distillation, the straightness of a flow, and a diffusion model seen as a flow.

Conventions are the package's: t = 1 is noise, t = 0 is data, x_t = (1 - t) x0 + t noise,
and the network regresses the velocity dx/dt = noise - x0. Losses follow
`samplax.models.losses`: factories returning `loss(model, batch, key) -> scalar`, with the
data under batch["x"] and, for reflow and distillation, the paired noise under
batch["noise"].
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from samplax.checks import check_count
from samplax.models.losses import TIME_DENSITIES, flow_matching_loss, squared_error
from samplax.schedules import RectifiedFlow
from samplax.solvers.engine import run_plan
from samplax.solvers.flow import RungeKutta

__all__ = [
    "FLOW_TIME_DENSITIES",
    "DISTANCES",
    "u_shaped_time",
    "pseudo_huber",
    "rectified_flow_loss",
    "reflow_loss",
    "distillation_loss",
    "flow_trajectory",
    "reflow_couplings",
    "straightness",
    "velocity_from_diffusion",
]


def u_shaped_time(key, n: int, a: float = 4.0):
    """Times with density proportional to cosh(a (t - 1/2)) on [0, 1] (Lee et al. 2024,
    "Improving the training of rectified flows"), which puts more training near both ends.

    Sampled exactly by inverting the CDF: with u uniform,
    sinh(a (t - 1/2)) = (2 u - 1) sinh(a / 2)."""
    if not a > 0:
        raise ValueError(f"a must be positive, got {a!r}")
    u = jax.random.uniform(key, (n,))
    return 0.5 + jnp.arcsinh((2.0 * u - 1.0) * math.sinh(0.5 * a)) / a


FLOW_TIME_DENSITIES = {**TIME_DENSITIES, "u-shaped": u_shaped_time}


def pseudo_huber(prediction, target):
    """Pseudo-Huber distance per sample, sqrt(||p - y||^2 + c^2) - c with c = 0.00054 sqrt(d),
    d the number of values per sample (Song & Dhariwal 2024; Lee et al. 2024): quadratic
    for small errors, linear for large ones, so outliers weigh less than in squared error."""
    difference = (prediction - target).reshape(prediction.shape[0], -1)
    c = 0.00054 * math.sqrt(difference.shape[1])
    return jnp.sqrt(jnp.sum(difference**2, axis=1) + c**2) - c


DISTANCES = {"squared": squared_error, "pseudo-huber": pseudo_huber}


def _time_density(time_density):
    if callable(time_density):
        return time_density
    if time_density not in FLOW_TIME_DENSITIES:
        raise ValueError(
            f"time_density must be one of {sorted(FLOW_TIME_DENSITIES)} or a function, got {time_density!r}"
        )
    return FLOW_TIME_DENSITIES[time_density]


def _distance(distance):
    if callable(distance):
        return distance
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {sorted(DISTANCES)} or a function, got {distance!r}")
    return DISTANCES[distance]


def _expand(value, x):
    return jnp.reshape(value, (-1,) + (1,) * (x.ndim - 1))


def _path_loss(model, x0, noise, t, distance):
    """distance(v(x_t, t), noise - x0) on the straight line x_t = (1 - t) x0 + t noise."""
    x_t = (1.0 - _expand(t, x0)) * x0 + _expand(t, x0) * noise
    return jnp.mean(distance(model(x_t, t), noise - x0))


def rectified_flow_loss(time_density="uniform", distance="squared", **options) -> Callable:
    """Flow matching on the linear path with independent noise (`losses.flow_matching_loss`):
    the network, called as `model(x_t, t)`, regresses noise - x0.

    Args:
        time_density: "uniform", "logit-normal" (Esser et al. 2024), "u-shaped"
            (cosh(4 (t - 1/2)), Lee et al. 2024), or a function `(key, n) -> times`.
        distance: "squared", "pseudo-huber", or a function `(prediction, target) -> (batch,)`.
        options: label_dropout and null_label, for class-conditional networks.
    """
    return flow_matching_loss(_time_density(time_density), distance=_distance(distance), **options)


def reflow_loss(time_density="uniform", distance="squared") -> Callable:
    """Reflow (Liu et al. 2023): flow matching on fixed couplings batch["noise"] ->
    batch["x"], the noise and the endpoint the previous flow maps it to
    (`reflow_couplings`). Fine-tuning the previous flow on them straightens it."""
    time_density, distance = _time_density(time_density), _distance(distance)

    def loss(model, batch, key):
        x0, noise = jnp.asarray(batch["x"]), jnp.asarray(batch["noise"])
        return _path_loss(model, x0, noise, time_density(key, x0.shape[0]).astype(x0.dtype), distance)

    return loss


def distillation_loss(k: int, distance="squared") -> Callable:
    """k-step distillation (Liu et al. 2023) on couplings batch["noise"] -> batch["x"]: the
    velocity is trained only at the k times t = 1, 1 - 1/k, ..., 1/k of a k-step Euler
    sampler on the uniform grid, so that k Euler steps land on the coupled endpoint
    (k = 1: x0 = noise - v(noise, 1))."""
    k = check_count("k", k)
    distance = _distance(distance)

    def loss(model, batch, key):
        x0, noise = jnp.asarray(batch["x"]), jnp.asarray(batch["noise"])
        t = 1.0 - jax.random.randint(key, (x0.shape[0],), 0, k).astype(x0.dtype) / k
        return _path_loss(model, x0, noise, t, distance)

    return loss


def flow_trajectory(velocity: Callable, noise, steps: int = 32):
    """The states of the flow dx/dt = velocity(x, t) from `noise` at t = 1 to t = 0, solved
    by classical RK4 on a uniform grid of `steps` steps. Returns (states, times) with states
    shaped (steps + 1, *noise.shape), states[0] = noise and states[-1] the generated data."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    noise = jnp.asarray(noise)
    times = jnp.linspace(1.0, 0.0, steps + 1, dtype=noise.dtype)
    solver = RungeKutta(method="rk4")
    _, states = run_plan(solver.plan(RectifiedFlow(), times), velocity, noise, return_trajectory=True)
    return jnp.concatenate([noise[None], states[solver.stages - 1 :: solver.stages]]), times


def reflow_couplings(velocity: Callable, noise, steps: int = 32) -> dict:
    """Couplings for reflow and distillation: each noise sample paired with the endpoint the
    trained flow maps it to (RK4 with `steps` steps; Liu et al. use an adaptive RK45 solve).
    Returns {"x": endpoints, "noise": noise}, a data dict for `training.train`."""
    states, _ = flow_trajectory(velocity, noise, steps)
    return {"x": states[-1], "noise": jnp.asarray(noise)}


def straightness(velocity: Callable, noise, steps: int = 32):
    """Straightness S = integral over t in [0, 1] of E ||(Z_1 - Z_0) - v(Z_t, t)||^2 of a flow
    (Liu et al. 2023), along its own ODE trajectories Z from `noise`: zero exactly when
    every path is a straight line run at constant speed.

    ||.|| is the Euclidean norm over a sample's values; the trajectories come from
    `flow_trajectory` with `steps` RK4 steps and the time integral is the trapezoidal rule
    on the same grid."""
    states, times = flow_trajectory(velocity, noise, steps)
    chord = states[0] - states[-1]  # Z_1 - Z_0

    def deviation(x, t):
        return jnp.mean(jnp.sum((chord - velocity(x, t)).reshape(x.shape[0], -1) ** 2, axis=1))

    values = jax.vmap(deviation)(states, times)
    return jnp.sum(0.5 * (times[:-1] - times[1:]) * (values[1:] + values[:-1]))


def velocity_from_diffusion(model) -> Callable:
    """A trained diffusion model seen as a rectified-flow velocity network.

    The flow state x_t = (1 - t) x0 + t noise and the diffusion state alpha_s x0 + sigma_s
    noise carry the same information when sigma_s / alpha_s = t / (1 - t); the diffusion
    state is then alpha_s / (1 - t) x_t. The returned function evaluates the diffusion
    model's data and noise predictions there and returns the flow velocity noise - x0 (the
    conversion rfpp uses to start a flow from an EDM model). Times whose noise level lies
    outside the diffusion schedule are clipped to its range.

    Args:
        model: a `samplax.Denoiser` of the diffusion model (anything with `schedule`,
            `data(x, t)` and `noise(x, t)`).

    Returns:
        `network(x, t) -> velocity`, for `Denoiser(network, RectifiedFlow(), "velocity")`.
    """
    schedule = model.schedule

    def network(x, t):
        t = jnp.clip(jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],)), 1e-6, 1.0 - 1e-6)
        lambda_flow = jnp.log1p(-t) - jnp.log(t)
        lower, upper = schedule.lambda_(schedule.t_max), schedule.lambda_(schedule.t_min)
        s = schedule.inverse_lambda(jnp.clip(lambda_flow, lower, upper))
        # Equal to alpha_s / (1 - t) = sigma_s / t where the noise levels match; it keeps
        # the overall scale where they were clipped.
        scale = jnp.sqrt((schedule.alpha(s) ** 2 + schedule.sigma(s) ** 2) / ((1.0 - t) ** 2 + t**2))
        y = _expand(scale, x) * x
        data = model.data(y, s)
        noise = model.noise(y, s)
        return noise - data

    return jax.tree_util.Partial(network)
