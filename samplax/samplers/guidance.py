"""How a guided Denoiser combines its conditional and unconditional predictions.

Classifier-free guidance (Ho & Salimans 2022) predicts u + w (c - u) from the conditional
prediction c and the unconditional u at the guidance scale w. Every prediction type is an
affine function of the network output at fixed (x, t), so that combination is the same
whichever prediction it acts on. The variants below are not affine, so they name the
prediction they act on (`space`): "output" (the network's own output, as diffusers does),
"data" (the denoised x0) or "noise".

- `CFG(rescale=phi)`: guidance rescale (Lin et al. 2024, "Common Diffusion Noise Schedules
  and Sample Steps are Flawed"): the guided prediction scaled to the per-sample standard
  deviation of the conditional one, mixed with the plain guided prediction by phi.
- `APG(parallel=eta, norm_threshold=r)`: adaptive projected guidance (Sadat, Hilliges and
  Weber 2025, "Eliminating Oversaturation and Artifacts of High Guidance Scales in
  Diffusion Models"): the update c - u, capped to norm r, split into its parts parallel and
  orthogonal to c, with the parallel part (which oversaturates) weighted by eta. The
  paper's optional momentum needs state across steps, which a Denoiser does not carry: it
  is not offered.
- `interval=(low, high)` on either: guidance only where the noise level sigma / alpha (the
  EDM sigma, exp(-lambda)) lies in [low, high] (Kynkaanniemi et al. 2024, "Applying
  Guidance in a Limited Interval Improves Sample and Distribution Quality in Diffusion
  Models"); elsewhere the conditional prediction alone, and the unconditional network
  evaluation is skipped.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from samplax.checks import check_choice, check_fields, check_interval, check_positive
from samplax.pytrees import static_field

__all__ = ["APG", "CFG", "GUIDANCE_SPACES", "Guidance", "PosteriorGuidance", "guided_only_where_active"]

GUIDANCE_SPACES = ("output", "data", "noise")


def _per_sample_norm(value):
    return jnp.sqrt(jnp.sum(value**2, axis=tuple(range(1, value.ndim)), keepdims=True))


class Guidance(abc.ABC):
    """A rule that combines the conditional and unconditional predictions (frozen
    dataclass fields: `space`, `interval`, and the rule's own settings)."""

    space: str
    interval: tuple[float, float] | None
    affine: ClassVar[bool] = False

    def __post_init__(self):
        check_fields(self)
        check_choice(f"{type(self).__name__}.space", self.space, GUIDANCE_SPACES)
        if self.interval is not None:
            check_interval(f"{type(self).__name__}.interval (noise levels sigma / alpha)", self.interval,
                           infinite_high=True)

    def active(self, alpha, sigma):
        """Whether guidance applies at noise level sigma / alpha (True without an interval)."""
        if self.interval is None:
            return jnp.ones(jnp.shape(alpha), bool)
        low, high = self.interval
        ratio = sigma / alpha
        return (ratio >= low) & (ratio <= high)

    @abc.abstractmethod
    def combine(self, conditional, unconditional, scale):
        """The guided prediction from the conditional and unconditional ones (batch first)
        at guidance scale `scale` (a number or an array broadcasting against them)."""


@dataclasses.dataclass(frozen=True)
class CFG(Guidance):
    """Classifier-free guidance, u + w (c - u), with optional guidance rescale.

    Attributes:
        rescale: phi in [0, 1]; 0 is plain guidance, 1 matches the conditional prediction's
            per-sample standard deviation exactly (Lin et al. recommend 0.7).
        space: the prediction rescaling acts on ("output", "data" or "noise").
        interval: (low, high) noise levels sigma / alpha where guidance applies, or None.
    """

    rescale: float = 0.0
    space: str = "output"
    interval: tuple[float, float] | None = None

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.rescale <= 1.0:
            raise ValueError(f"CFG.rescale must lie in [0, 1] (0: plain guidance), got {self.rescale}")

    @property
    def affine(self) -> bool:
        return self.rescale == 0.0

    def combine(self, conditional, unconditional, scale):
        guided = unconditional + scale * (conditional - unconditional)
        if self.rescale == 0.0:
            return guided
        axes = tuple(range(1, guided.ndim))
        ratio = jnp.std(conditional, axis=axes, keepdims=True) / jnp.std(guided, axis=axes, keepdims=True)
        return self.rescale * ratio * guided + (1.0 - self.rescale) * guided


@dataclasses.dataclass(frozen=True)
class APG(Guidance):
    """Adaptive projected guidance: c + (w - 1) (D_orthogonal + eta D_parallel), with
    D = c - u capped to norm `norm_threshold` and split along c (per sample).

    Attributes:
        parallel: eta, the weight of the update's part parallel to c (0 in the paper's
            reference settings; 1 with no norm cap is plain guidance).
        norm_threshold: r, the largest per-sample norm of the update, or None for no cap.
        space: the prediction APG acts on (the paper: "data", the denoised sample).
        interval: (low, high) noise levels sigma / alpha where guidance applies, or None.
    """

    parallel: float = 0.0
    norm_threshold: float | None = None
    space: str = "data"
    interval: tuple[float, float] | None = None

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.parallel <= 1.0:
            raise ValueError(f"APG.parallel must lie in [0, 1] (the weight of the update's part along the "
                             f"conditional prediction; 0 in the paper), got {self.parallel}")
        if self.norm_threshold is not None:
            check_positive("APG.norm_threshold", self.norm_threshold)

    def combine(self, conditional, unconditional, scale):
        update = conditional - unconditional
        if self.norm_threshold is not None:
            norm = _per_sample_norm(update)
            update = update * jnp.minimum(1.0, self.norm_threshold / jnp.maximum(norm, jnp.finfo(update.dtype).tiny))
        direction = conditional / jnp.maximum(_per_sample_norm(conditional), jnp.finfo(conditional.dtype).tiny)
        along = jnp.sum(update * direction, axis=tuple(range(1, update.ndim)), keepdims=True) * direction
        return conditional + (scale - 1.0) * (update - along + self.parallel * along)


def guided_only_where_active(guidance: Guidance, alpha, sigma, both, conditional_only):
    """(conditional, unconditional) outputs: from `both()` where guidance is active and
    from `conditional_only()` (the conditional output twice) elsewhere. At one noise level
    for the whole batch (the fixed-grid solvers) only one branch runs; with per-sample
    levels (adaptive solvers) both run and each sample takes its own."""
    if guidance.interval is None:
        return both()
    active = guidance.active(alpha, sigma)
    if jnp.ndim(active) == 0:
        return jax.lax.cond(active, both, conditional_only)
    guided, plain = both(), conditional_only()
    return jax.tree.map(lambda a, b: jnp.where(active.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), guided, plain)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PosteriorGuidance:
    """Guidance by the gradient of a log-likelihood of the data prediction D(x): the score
    gains scale * grad_x log_likelihood(D(x)), so the data prediction gains
    scale sigma^2 / alpha times that gradient and the noise prediction loses scale sigma
    times it. The gradient runs through the network. With log N(y; A D, sigma_y^2 I) this
    is diffusion posterior sampling's approximation p(y | x_t) ~ p(y | D(x_t)) (Chung et
    al. 2023, "Diffusion Posterior Sampling for General Noisy Inverse Problems"); with a
    classifier's log p(label | D), classifier guidance from the data prediction.

    With `through_network=False` the network's Jacobian dD/dx is not computed but taken
    as alpha / (alpha^2 + sigma^2) I: FlowChef's gradient skipping (Patel et al. 2024,
    "Steering Rectified Flow Models in the Vector Field for Controlled Image Generation"),
    which needs no backpropagation through the network, so a stage costs one plain
    evaluation. FlowChef takes the identity, right at the data end of a flow (alpha = 1,
    sigma = 0); the factor is the Jacobian of a unit Gaussian's denoiser, equal to the
    identity there, exact for that prior at every noise level, and vanishing at pure
    noise, where the identity would multiply the data correction by sigma^2 / alpha and
    make diffusion schedules (alpha ~ 0.007 at t_max) diverge.

    Attributes:
        log_likelihood: a `jax.tree_util.Partial` (so that its parameters are leaves),
            (data prediction (batch first), alpha, sigma) -> log-likelihood per sample
            (batch,); alpha and sigma (scalars, or per sample) let it depend on the noise
            level, as `gaussian_observation`'s does.
        scale: the weight of the gradient (1: the approximate posterior score).
        through_network: differentiate through the network (DPS) or skip it (FlowChef).
    """

    log_likelihood: Callable
    scale: Any = 1.0
    through_network: bool = static_field(True)
