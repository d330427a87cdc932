"""Training losses, each a factory returning `loss(model, batch, key) -> scalar`.

A batch is a dict with "x" (data, batch first) and optionally "label" (int class labels).
With `label_dropout > 0` each label is replaced by the null label with that probability,
so the one network learns both the conditional and the unconditional model that
classifier-free guidance (Ho & Salimans 2022) combines.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from samplax.models.fokker_planck import DIVERGENCES, fokker_planck_penalty, score_from_output
from samplax.predictions import PREDICTIONS, TIME_INPUTS, broadcast_to_batch
from samplax.schedules import Schedule, VPDiscrete

__all__ = [
    "PREDICTIONS",
    "TIME_DENSITIES",
    "TIME_INPUTS",
    "denoising_loss",
    "flow_matching_loss",
    "logit_normal_time",
    "network_time",
    "squared_error",
    "uniform_time",
]



def network_time(schedule: Schedule, t, time_input: str):
    """Continuous time mapped to what the network receives (the same convention as
    `samplax.Denoiser`): t, the VPDiscrete step index, sigma(t), or 1 - t."""
    if time_input == "discrete":
        return schedule.to_index(t)
    if time_input == "sigma":
        return schedule.sigma(t)
    if time_input == "reversed":
        return 1.0 - t
    return t


def uniform_time(key, n: int, t_min: float = 0.0, t_max: float = 1.0):
    """Times uniform on [t_min, t_max]."""
    return jax.random.uniform(key, (n,), minval=t_min, maxval=t_max)


def logit_normal_time(key, n: int, mean: float = 0.0, std: float = 1.0):
    """Times sigmoid(mean + std * normal): the logit-normal density of Esser et al. (2024),
    which spends more training on the middle of the path."""
    return jax.nn.sigmoid(mean + std * jax.random.normal(key, (n,)))


TIME_DENSITIES = {"uniform": uniform_time, "logit-normal": logit_normal_time}


def squared_error(prediction, target):
    """Mean squared error per sample, (batch,)."""
    return jnp.mean(jnp.square(prediction - target).reshape(prediction.shape[0], -1), axis=1)


def _labels(batch, key, label_dropout: float, null_label: int | None):
    """The batch's labels with label dropout applied, or None for unconditional data."""
    if "label" not in batch:
        if label_dropout > 0.0 or null_label is not None:
            raise ValueError("label_dropout and null_label apply to labelled data (batch['label']), and this data has "
                             f"no labels (its keys: {sorted(batch)}); drop them for unconditional training")
        return None
    label = jnp.asarray(batch["label"], jnp.int32)
    if label_dropout > 0.0:
        if null_label is None:
            raise ValueError("label_dropout > 0 needs null_label (the network's num_classes)")
        drop = jax.random.bernoulli(key, label_dropout, label.shape)
        label = jnp.where(drop, null_label, label)
    return label


def _call(model, x, t, label):
    return model(x, t) if label is None else model(x, t, label=label)


def _check(label_dropout: float):
    if not 0.0 <= label_dropout < 1.0:
        raise ValueError(f"label_dropout must lie in [0, 1), got {label_dropout}")


def _network_score(model, schedule: Schedule, prediction: str, time_input: str, labels):
    """`score(x, t)`: the score of the network's prediction at continuous times t."""

    def score(x, t):
        output = _call(model, x, network_time(schedule, t, time_input), labels)
        return score_from_output(prediction, schedule, x, output, t)

    return score


def _regression_error(prediction: str, schedule: Schedule, t, alpha, sigma, x0, noise, out):
    """Per-sample squared error of the output of a network with this `prediction` at
    x_t = alpha x0 + sigma noise (alpha and sigma shaped to broadcast against x0); a score
    is weighted by sigma^2 (its error is that of -sigma out against the noise)."""
    if prediction == "noise":
        return squared_error(out, noise)
    if prediction == "data":
        return squared_error(out, x0)
    if prediction == "v":
        return squared_error(out, alpha * noise - sigma * x0)
    if prediction == "score":
        return squared_error(sigma * out, -noise)
    d_alpha, d_sigma = (broadcast_to_batch(value, x0) for value in schedule.alpha_sigma_derivatives(t))
    return squared_error(out, d_alpha * x0 + d_sigma * noise)


def denoising_loss(
    schedule: Schedule,
    prediction: str = "noise",
    time_input: str = "continuous",
    *,
    label_dropout: float = 0.0,
    null_label: int | None = None,
    t_min: float | None = None,
    fokker_planck_weight: float = 0.0,
    fokker_planck_divergence: str = "exact",
    fokker_planck_samples: int | None = None,
) -> Callable:
    """Denoising loss on any schedule (Ho et al. 2020; Song et al. 2021; Salimans & Ho 2022).

    For x_t = alpha(t) x0 + sigma(t) noise the network regresses onto its prediction
    target: the noise, the data x0, v = alpha noise - sigma x0, the velocity
    dx/dt = alpha' x0 + sigma' noise, or the score -noise / sigma (weighted by sigma^2,
    which makes it the noise loss up to sign, the usual score-matching weighting). Time is
    uniform over the schedule's training steps for `time_input="discrete"`, otherwise
    uniform on [t_min, t_max].

    With `fokker_planck_weight` w > 0 the loss adds w times the Fokker-Planck penalty of
    the network's score at the same noisy points and times (`fokker_planck_penalty`, with
    the "exact" or "hutchinson" divergence), which pulls the probability-flow ODE and the
    reverse SDE of the model towards the same distribution (Deveney et al. 2023). The
    penalty differentiates the network three times; `fokker_planck_samples` evaluates it
    on the first that many samples of each batch only, to bound its cost.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a samplax schedule object, such as samplax.schedules.VPLinear() or "
                        f"samplax.schedules.get('vp-linear'), got {schedule!r}")
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    if time_input not in TIME_INPUTS:
        raise ValueError(f"time_input must be one of {TIME_INPUTS}, got {time_input!r}")
    if time_input == "discrete" and not isinstance(schedule, VPDiscrete):
        raise ValueError("time_input='discrete' needs a VPDiscrete schedule")
    if prediction == "v" and schedule.is_flow:
        raise ValueError("prediction='v' is for diffusion schedules; use 'velocity' for flows")
    _check(label_dropout)
    if fokker_planck_weight < 0.0:
        raise ValueError(f"fokker_planck_weight must be >= 0, got {fokker_planck_weight}")
    if fokker_planck_divergence not in DIVERGENCES:
        raise ValueError(f"fokker_planck_divergence must be one of {DIVERGENCES}, got {fokker_planck_divergence!r}")
    if fokker_planck_samples is not None and fokker_planck_samples < 1:
        raise ValueError(f"fokker_planck_samples must be positive, got {fokker_planck_samples}")
    low = schedule.t_min if t_min is None else t_min
    schedule.check_times(low)
    if schedule.is_flow and low <= 0.0 and prediction in ("noise", "score"):
        raise ValueError("noise and score prediction need t_min > 0 on the rectified-flow schedule")

    def loss(model, batch, key):
        x0 = jnp.asarray(batch["x"])
        n = x0.shape[0]
        time_key, noise_key, label_key = jax.random.split(key, 3)
        if time_input == "discrete":
            steps = schedule.num_steps
            t = (jax.random.randint(time_key, (n,), 0, steps) + 1.0) / steps
        else:
            t = uniform_time(time_key, n, low, schedule.t_max)
        noise = jax.random.normal(noise_key, x0.shape, x0.dtype)
        alpha, sigma = broadcast_to_batch(schedule.alpha(t), x0), broadcast_to_batch(schedule.sigma(t), x0)
        x_t = alpha * x0 + sigma * noise
        labels = _labels(batch, label_key, label_dropout, null_label)
        out = _call(model, x_t, network_time(schedule, t, time_input), labels)
        value = jnp.mean(_regression_error(prediction, schedule, t, alpha, sigma, x0, noise, out))
        if fokker_planck_weight == 0.0:
            return value
        count = n if fokker_planck_samples is None else min(fokker_planck_samples, n)
        score = _network_score(model, schedule, prediction, time_input, None if labels is None else labels[:count])
        penalty = fokker_planck_penalty(
            score, schedule, x_t[:count], t[:count], divergence=fokker_planck_divergence, key=jax.random.fold_in(key, 1)
        )
        return value + fokker_planck_weight * penalty

    return loss


def flow_matching_loss(
    time_density: str | Callable = "uniform",
    *,
    distance: Callable = squared_error,
    label_dropout: float = 0.0,
    null_label: int | None = None,
) -> Callable:
    """Conditional flow matching on the rectified-flow path (Lipman et al. 2023; Liu et al.
    2023): x_t = (1 - t) x0 + t noise, and the network, called with continuous t, regresses
    onto the velocity noise - x0.

    Args:
        time_density: "uniform", "logit-normal", or a function `(key, n) -> times`.
        distance: `(prediction, target) -> (batch,)` per-sample distance; squared error
            by default.
    """
    if isinstance(time_density, str):
        if time_density not in TIME_DENSITIES:
            accepted = sorted(TIME_DENSITIES)
            raise ValueError(f"time_density must be one of {accepted} or a function, got {time_density!r}")
        time_density = TIME_DENSITIES[time_density]
    if not callable(distance):
        raise TypeError(f"distance must be a function (prediction, target) -> per-sample distance, got {distance!r}; "
                        "rectified_flow_loss also takes the names of its distances")
    _check(label_dropout)

    def loss(model, batch, key):
        x0 = jnp.asarray(batch["x"])
        time_key, noise_key, label_key = jax.random.split(key, 3)
        t = time_density(time_key, x0.shape[0])
        noise = jax.random.normal(noise_key, x0.shape, x0.dtype)
        x_t = (1.0 - broadcast_to_batch(t, x0)) * x0 + broadcast_to_batch(t, x0) * noise
        out = _call(model, x_t, t, _labels(batch, label_key, label_dropout, null_label))
        return jnp.mean(distance(out, noise - x0))

    return loss
