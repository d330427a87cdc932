"""`Denoiser`: a network, its schedule and what it predicts, seen as the data, noise or
velocity prediction a solver asks for.

The network is called as `network(x, network_time, **condition)`. Whatever it predicts
(noise, data, v, flow velocity or score), every prediction is an affine function of the
network output at fixed (x, t), so classifier-free guidance can be applied to the raw
output in one batched call and converted afterwards.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from samplax.checks import check_count, check_positive, check_real
from samplax.predictions import (
    PREDICTIONS,
    TIME_INPUTS,
    broadcast_to_batch,
    data_and_noise,
    output_from_data_and_noise,
)
from samplax.pytrees import static_field
from samplax.samplers.guidance import CFG, Guidance, PosteriorGuidance, guided_only_where_active
from samplax.schedules import Schedule, VPDiscrete
from samplax.solvers.engine import Predictor

__all__ = ["Denoiser", "KnownRegion", "PREDICTIONS", "TIME_INPUTS", "classifier_free_guidance"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KnownRegion:
    """Part of the data that is known (inpainting): `image` (batch first) where `mask`
    (broadcasting against it) is 1."""

    image: jax.Array
    mask: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Denoiser:
    """Adapter from a network to the predictions solvers consume.

    Attributes:
        network: `network(x, network_time, **condition) -> array` shaped like x. A plain
            function is wrapped in `jax.tree_util.Partial`; pass a `Partial` that binds
            parameters (`Partial(apply, params)`) to keep them as traced arguments.
        schedule: the schedule the network was trained with.
        prediction: what the network outputs: "noise", "data", "v" (alpha noise - sigma
            data), "velocity" (dx/dt along the schedule) or "score" (grad log p_t).
        time_input: what the network takes as time: "continuous" (t itself), "discrete"
            (the training step index of a `VPDiscrete` schedule, t N - 1), "sigma", or
            "reversed" (1 - t, for flow models trained with t = 0 at the noise end; their
            velocity, dx/d(1 - t), is negated into dx/dt).
        condition: keyword arguments for the network (class labels, text embeddings).
        unconditional: the condition that means "no condition", for guidance.
        guidance_scale: classifier-free guidance weight w: uncond + w (cond - uncond).
        guidance: how guidance combines the two predictions: `CFG()` (the default; with
            `rescale=`), `APG(...)`, either limited to an `interval` of noise levels
            (`samplax.samplers.guidance`).
        threshold_ratio: if set, Imagen's dynamic thresholding (Saharia et al. 2022) of
            the data prediction at this quantile of |x0| (0.995 in the paper).
        threshold_max: the smallest clipping bound thresholding may use.
        sample_shape: the shape of one sample the network takes, if it declares one; the
            workflows then refuse noise and data of another shape.
        classes: the number of classes of a class-conditional network, if it declares
            one; the workflows then refuse `condition["label"]` outside 0..classes - 1.
        known: a `KnownRegion` for inpainting: the data prediction is the known image
            there, so that the solve keeps that region at its noised value (`inpaint`).
        posterior: a `PosteriorGuidance`: the gradient of a log-likelihood of the data
            prediction added to the score (DPS, classifier guidance; `posterior_guidance`).
    """

    network: Callable[..., jax.Array]
    schedule: Schedule
    prediction: str = static_field("noise")
    time_input: str = static_field("continuous")
    condition: dict[str, Any] = dataclasses.field(default_factory=dict)
    unconditional: dict[str, Any] | None = None
    guidance_scale: Any = 1.0
    guidance: Guidance = static_field(CFG())
    threshold_ratio: float | None = static_field(None)
    threshold_max: float = static_field(1.0)
    sample_shape: tuple[int, ...] | None = static_field(None)
    classes: int | None = static_field(None)
    known: KnownRegion | None = None
    posterior: PosteriorGuidance | None = None

    def __post_init__(self):
        if not callable(self.network):
            raise TypeError(f"network must be callable, got {type(self.network).__name__}")
        if not isinstance(self.network, jax.tree_util.Partial):
            object.__setattr__(self, "network", jax.tree_util.Partial(self.network))
        if not isinstance(self.schedule, Schedule):
            raise TypeError(
                "schedule must be a samplax schedule object, such as samplax.schedules.VPLinear() or "
                f"samplax.schedules.get('vp-linear'), got {self.schedule!r}"
            )
        shape = self.sample_shape
        if shape is not None and not (isinstance(shape, tuple) and all(
                isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0 for n in shape)):
            raise TypeError(f"sample_shape must be a tuple of positive integers, got {self.sample_shape!r}")
        if self.classes is not None:
            check_count("classes", self.classes)
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.time_input not in TIME_INPUTS:
            raise ValueError(f"time_input must be one of {TIME_INPUTS}, got {self.time_input!r}")
        if self.time_input == "discrete" and not isinstance(self.schedule, VPDiscrete):
            raise ValueError("time_input='discrete' needs a VPDiscrete schedule")
        if self.prediction == "v" and self.schedule.is_flow:
            raise ValueError("prediction='v' is for diffusion schedules; use 'velocity' for flows")
        if not isinstance(self.condition, dict) or not isinstance(self.unconditional, (dict, type(None))):
            raise TypeError(f"condition and unconditional must be dicts of network keyword arguments ({{}} for none), "
                            f"got {type(self.condition).__name__} and {type(self.unconditional).__name__}")
        for name, value, kind, hint in (("known", self.known, KnownRegion, "sx.inpaint"),
                                        ("posterior", self.posterior, PosteriorGuidance, "sx.posterior_guidance")):
            if value is not None and not isinstance(value, kind):
                raise TypeError(f"{name} must be a {kind.__name__} or None (or use {hint}), got {type(value).__name__}")
        if not isinstance(self.guidance, Guidance):
            raise TypeError(f"guidance must be a guidance rule such as samplax.CFG(rescale=0.7) or samplax.APG(), "
                            f"got {self.guidance!r}")
        if self.threshold_ratio is not None:
            check_real("threshold_ratio", self.threshold_ratio)
            if not 0.0 < self.threshold_ratio < 1.0:
                raise ValueError(f"threshold_ratio must lie in (0, 1), got {self.threshold_ratio}")
        check_positive("threshold_max (the smallest clipping bound of thresholding)", self.threshold_max)
        if self.unconditional is not None and set(self.unconditional) != set(self.condition):
            raise ValueError(
                "unconditional must have the same keys as condition: "
                f"{sorted(self.unconditional)} != {sorted(self.condition)}"
            )

    # -- the raw network, with time mapping and guidance ---------------------------------

    def network_time(self, t):
        """Map continuous time to what the network was trained to receive."""
        if self.time_input == "discrete":
            return self.schedule.to_index(t)
        if self.time_input == "sigma":
            return self.schedule.sigma(t)
        if self.time_input == "reversed":
            return 1.0 - t
        return t

    def time_features(self, t, derivatives: bool = True) -> dict:
        """Everything the conversions need that depends on time alone: the network's time
        input, alpha, sigma and (if asked) their derivatives. For any shape of t; the
        sampling engine computes them for all stage times before its loop."""
        t = jnp.asarray(t, jnp.result_type(float))
        features = {
            "network_time": self.network_time(t),
            "alpha": self.schedule.alpha(t),
            "sigma": self.schedule.sigma(t),
        }
        if derivatives:
            features["d_alpha"], features["d_sigma"] = self.schedule.alpha_sigma_derivatives(t)
        return features

    def _needs_derivatives(self, kind: str) -> bool:
        return self.prediction == "velocity" or kind == "velocity"

    def output(self, x, t):
        """The network output at (x, t), guided (in one batched call) when the Denoiser has
        an unconditional condition. A velocity in reversed time (dx/d(1 - t)) is negated
        into dx/dt."""
        return self._output(x, self.time_features(t, derivatives=self._needs_derivatives("data")))[0]

    def _call(self, x, network_t, condition, options, arguments, auxiliary, expected):
        """(output, auxiliary or None) of one network call, the output signed into dx/dt."""
        sign = -1.0 if self.prediction == "velocity" and self.time_input == "reversed" else 1.0
        result = self.network(x, network_t, **condition, **arguments, **options)
        out, extra = result if auxiliary else (result, None)
        _check_output_shape(out, expected)
        return sign * out, extra

    def _output(self, x, features, options=None, arguments=None, auxiliary=False):
        """(guided network output, auxiliary output or None). `options` are fixed keyword
        arguments of the network; `arguments` are keyword arrays with a leading batch axis
        (repeated for the guided batch); with `auxiliary` the network returns (output,
        auxiliary) and the auxiliary arrays of the conditional batch are kept."""
        batch = x.shape[0]
        network_t = jnp.broadcast_to(jnp.asarray(features["network_time"], x.dtype), (batch,))
        options, arguments = dict(options or {}), dict(arguments or {})
        if self.unconditional is None:
            return self._call(x, network_t, self.condition, options, arguments, auxiliary, x.shape)

        def both():
            condition = {
                key: jnp.concatenate([jnp.asarray(self.unconditional[key]), jnp.asarray(value)])
                for key, value in self.condition.items()
            }
            doubled = jax.tree.map(lambda value: jnp.concatenate([value, value]), arguments)
            out, extra = self._call(jnp.concatenate([x, x]), jnp.concatenate([network_t, network_t]), condition,
                                    options, doubled, auxiliary, (2 * batch, *x.shape[1:]))
            return out[batch:], out[:batch], jax.tree.map(lambda value: value[batch:], extra)

        def conditional_only():
            out, extra = self._call(x, network_t, self.condition, options, arguments, auxiliary, x.shape)
            return out, out, extra

        conditional, unconditional, extra = guided_only_where_active(
            self.guidance, features["alpha"], features["sigma"], both, conditional_only
        )
        return self._combine(x, features, conditional, unconditional), extra

    def _combine(self, x, features, conditional, unconditional):
        """The guided network output: the guidance rule applied to the outputs themselves,
        or to the data or noise predictions they stand for (then converted back)."""
        guidance, scale = self.guidance, self.guidance_scale
        if guidance.affine or guidance.space == "output" or guidance.space == self.prediction:
            return guidance.combine(conditional, unconditional, scale)
        alpha, sigma = features["alpha"], features["sigma"]
        pairs = [self._data_and_noise(x, features, out) for out in (conditional, unconditional)]
        if guidance.space == "data":
            data = guidance.combine(pairs[0][0], pairs[1][0], scale)
            noise = (x - broadcast_to_batch(alpha, x) * data) / broadcast_to_batch(sigma, x)
        else:
            noise = guidance.combine(pairs[0][1], pairs[1][1], scale)
            data = (x - broadcast_to_batch(sigma, x) * noise) / broadcast_to_batch(alpha, x)
        return output_from_data_and_noise(self.prediction, x, data, noise, alpha, sigma, features.get("d_alpha"),
                                          features.get("d_sigma"))

    # -- conversions -----------------------------------------------------------------------

    def _data_and_noise(self, x, features, out):
        return data_and_noise(
            self.prediction, x, out, features["alpha"], features["sigma"],
            features.get("d_alpha"), features.get("d_sigma"),
        )

    def _threshold(self, data):
        if self.threshold_ratio is None:
            return data
        flat = jnp.abs(data.reshape(data.shape[0], -1))
        bound = jnp.maximum(jnp.quantile(flat, self.threshold_ratio, axis=1), self.threshold_max)
        bound = bound.reshape((-1,) + (1,) * (data.ndim - 1))
        return jnp.clip(data, -bound, bound) / bound

    def _predict(self, kind, options, x, features):
        """The `kind` prediction at x, from precomputed time features."""
        if self.posterior is None:
            return self._convert(kind, x, features, self._output(x, features, options)[0])
        return self._select(kind, x, features, *self._posterior_pair(options, x, features))

    def _predict_with_auxiliary(self, kind, options, x, features, arguments):
        if self.posterior is not None:
            raise ValueError("posterior guidance differentiates the network's prediction; the auxiliary outputs "
                             "that edit() records are not supported with it")
        out, extra = self._output(x, features, options, arguments, auxiliary=True)
        return self._convert(kind, x, features, out), extra

    def _convert(self, kind, x, features, out):
        """The `kind` prediction from the network output `out` at x."""
        if kind == "velocity" and self.prediction == "velocity" and self.threshold_ratio is None and self.known is None:
            return out
        return self._select(kind, x, features, *self._pair(x, features, out))

    def _pair(self, x, features, out):
        """(data, noise) predictions from the network output, thresholded and with the
        known region in place."""
        data, noise = self._data_and_noise(x, features, out)
        alpha, sigma = broadcast_to_batch(features["alpha"], x), broadcast_to_batch(features["sigma"], x)
        if self.threshold_ratio is not None:
            data = self._threshold(data)
            noise = (x - alpha * data) / sigma
        if self.known is not None:
            mask = self.known.mask
            data = mask * self.known.image + (1 - mask) * data
            # At sigma = 0 (a flow's last stage) the state is the data: keep the network's noise.
            consistent = (x - alpha * data) / jnp.where(sigma > 0, sigma, 1)
            noise = jnp.where(sigma > 0, consistent, noise)
        return data, noise

    def _posterior_pair(self, options, x, features):
        """(data, noise) with the posterior guidance's gradient (through the network, or
        skipping it) added to the score; the data correction sigma^2 / alpha is left out
        where alpha = 0 (a flow's pure noise)."""
        def log_likelihood(data):
            value = self.posterior.log_likelihood(data, features["alpha"], features["sigma"])
            if not jnp.issubdtype(jnp.result_type(value), jnp.floating):
                raise TypeError(f"posterior guidance: log_likelihood must return floating-point values (one per "
                                f"sample), got {jnp.result_type(value)}")
            return jnp.sum(value)

        def objective(x):
            data, noise = self._pair(x, features, self._output(x, features, options)[0])
            return log_likelihood(data), (data, noise)

        alpha, sigma = broadcast_to_batch(features["alpha"], x), broadcast_to_batch(features["sigma"], x)
        if self.posterior.through_network:
            gradient, (data, noise) = jax.grad(objective, has_aux=True)(x)
        else:
            data, noise = self._pair(x, features, self._output(x, features, options)[0])
            # dD/dx taken as alpha / (alpha^2 + sigma^2) I, the unit Gaussian's (see PosteriorGuidance).
            gradient = alpha / (alpha**2 + sigma**2) * jax.grad(log_likelihood)(data)
        scale = self.posterior.scale
        data = data + jnp.where(alpha > 0, scale * sigma**2 / jnp.where(alpha > 0, alpha, 1), 0) * gradient
        return data, noise - scale * sigma * gradient

    def _select(self, kind, x, features, data, noise):
        if kind == "data":
            return data
        if kind == "noise":
            return noise
        return broadcast_to_batch(features["d_alpha"], x) * data + broadcast_to_batch(features["d_sigma"], x) * noise

    def data(self, x, t):
        """Prediction of the clean sample x0 (thresholded if asked)."""
        return self._predict("data", None, x, self.time_features(t, self._needs_derivatives("data")))

    def noise(self, x, t):
        """Prediction of the noise; consistent with the thresholded data prediction."""
        return self._predict("noise", None, x, self.time_features(t, self._needs_derivatives("noise")))

    def velocity(self, x, t):
        """dx/dt of the probability-flow ODE along the schedule: alpha' x0 + sigma' noise."""
        return self._predict("velocity", None, x, self.time_features(t))

    def predict(self, kind: str, *, network_options: dict | None = None, auxiliary: bool = False) -> Predictor:
        """What a solver evaluates: the "data", "noise" or "velocity" prediction, as a
        `Predictor` whose time-only work the engine does once, before its loop.

        Args:
            network_options: fixed keyword arguments of every network call (Python values,
                such as `return_values=True`).
            auxiliary: the network returns (output, auxiliary) and takes per-stage keyword
                arrays: the Predictor's `evaluate(x, prepared, arguments)` then returns
                (prediction, auxiliary), where `arguments` (a dict of batch-first arrays, or
                None) and the auxiliary arrays concern the samples of x, also under guidance.
        """
        if kind not in ("data", "noise", "velocity"):
            raise ValueError(f"solvers ask for 'data', 'noise' or 'velocity', got {kind!r}")
        prepare = functools.partial(self.time_features, derivatives=self._needs_derivatives(kind))
        if auxiliary:
            evaluate = functools.partial(self._predict_with_auxiliary, kind, network_options)
            return Predictor(prepare=prepare, evaluate=evaluate, auxiliary=True)
        return Predictor(prepare=prepare, evaluate=functools.partial(self._predict, kind, network_options))


def _check_output_shape(out, expected: tuple[int, ...]) -> None:
    """The network returns one array shaped like its input (checked while tracing)."""
    shape = getattr(out, "shape", None)
    if shape is None or tuple(shape) != tuple(expected):
        found = f"shape {tuple(shape)}" if shape is not None else type(out).__name__
        raise ValueError(f"the network returned {found} for an input of shape {tuple(expected)}; it must return an "
                         "array shaped like its input")


def classifier_free_guidance(model: Denoiser, condition: dict, unconditional: dict, scale,
                             guidance: Guidance | None = None) -> Denoiser:
    """Classifier-free guidance (Ho & Salimans 2022): the guided model predicts
    uncond + scale (cond - uncond), evaluated as one batched network call, or combines the
    two by another rule (`guidance`: `CFG(rescale=...)`, `APG(...)`, with an `interval`)."""
    if not isinstance(model, Denoiser):
        raise TypeError(f"classifier_free_guidance(): model must be a samplax Denoiser, got {type(model).__name__}")
    if not isinstance(condition, dict) or not isinstance(unconditional, dict):
        raise TypeError(f"classifier_free_guidance(): condition and unconditional must be dicts of network keyword "
                        f"arguments ({{}} for none), got {type(condition).__name__} and {type(unconditional).__name__}")
    if not condition and not unconditional:
        raise ValueError("classifier_free_guidance(): condition and unconditional are both empty, so the two "
                         "branches are the same network call and guidance would change nothing; give the network's "
                         "condition (e.g. {'label': labels}) and its unconditional value")
    return dataclasses.replace(
        model, condition=dict(condition), unconditional=dict(unconditional), guidance_scale=scale,
        guidance=model.guidance if guidance is None else guidance,
    )
