"""Noise schedules: the marginal `x_t = alpha(t) x_0 + sigma(t) noise` of a diffusion or flow.

Every schedule runs from noise at `t_max` to data as `t -> t_min`, and exposes `alpha`,
`sigma`, `lambda_ = log(alpha / sigma)` (half the log signal-to-noise ratio) and the inverse
of `lambda_`, in closed form wherever one exists. Solvers only ever see this interface, so
one solver works on variance-preserving, variance-exploding and rectified-flow schedules
alike. Schedules are frozen dataclasses registered as pytrees: arrays inside them (the
discrete schedule's table) are traced, so a schedule can be passed into `jax.jit`.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from samplax.checks import check_count, check_positive, check_static_real
from samplax.pytrees import static_field

__all__ = [
    "Schedule",
    "VPDiscrete",
    "VPLinear",
    "VPCosine",
    "EDM",
    "RectifiedFlow",
    "get",
    "names",
]


class Schedule(abc.ABC):
    """Interface shared by all schedules. Subclasses define `log_alpha`, `sigma` (or rely
    on the variance-preserving default), `lambda_`, `inverse_lambda`, `t_min` and `t_max`."""

    t_min: float
    t_max: float
    # What the schedule is, for callers that choose defaults by it: a flow's lambda is
    # infinite at both ends of its range, so it samples on a grid uniform in t.
    is_flow: ClassVar[bool] = False
    default_grid: ClassVar[str] = "logsnr"

    @abc.abstractmethod
    def log_alpha(self, t):
        """log alpha(t)."""

    def alpha(self, t):
        return jnp.exp(self.log_alpha(t))

    @abc.abstractmethod
    def sigma(self, t):
        """Standard deviation of the noise in x_t."""

    @abc.abstractmethod
    def lambda_(self, t):
        """Half log signal-to-noise ratio, log(alpha / sigma); increases as t -> data."""

    @abc.abstractmethod
    def inverse_lambda(self, lambda_value):
        """The time t at which `lambda_(t) == lambda_value`."""

    def alpha_sigma_from_lambda(self, lambda_value):
        """(alpha, sigma) at the time where lambda_ equals `lambda_value`."""
        t = self.inverse_lambda(lambda_value)
        return self.alpha(t), self.sigma(t)

    def alpha_sigma_derivatives(self, t):
        """(d alpha / dt, d sigma / dt), by forward-mode differentiation."""
        t = jnp.asarray(t)
        _, d_alpha = jax.jvp(self.alpha, (t,), (jnp.ones_like(t),))
        _, d_sigma = jax.jvp(self.sigma, (t,), (jnp.ones_like(t),))
        return d_alpha, d_sigma

    def drift_and_diffusion(self, t):
        """(f, g^2) of the forward SDE dx = f x dt + g dW whose marginals are this schedule's:
        f = d log alpha / dt and g^2 = d sigma^2 / dt - 2 f sigma^2 (Song et al. 2021)."""
        d_alpha, d_sigma = self.alpha_sigma_derivatives(t)
        f = d_alpha / self.alpha(t)
        sigma = self.sigma(t)
        return f, 2.0 * sigma * d_sigma - 2.0 * f * sigma**2

    def _check_range(self, lowest: float, highest: float = math.inf, ends_included: bool = False) -> None:
        """Raise a ValueError unless t_min and t_max are finite numbers with lowest < t_min
        < t_max < highest (<= at both ends with `ends_included`)."""
        name = type(self).__name__
        for field in ("t_min", "t_max"):
            check_static_real(f"{name}.{field}", getattr(self, field))
        below, above = (self.t_min >= lowest, self.t_max <= highest) if ends_included else (
            self.t_min > lowest, self.t_max < highest)
        if not (below and above and self.t_min < self.t_max):
            relation = "<=" if ends_included else "<"
            hint = ""
            if lowest == 0 and not ends_included and self.t_min <= 0:
                hint = ("; sigma = 0 at t = 0, where lambda is infinite: end at a small t_min and pass "
                        "denoise_to_zero=True to reach the data")
            raise ValueError(
                f"{name} needs {lowest} {relation} t_min < t_max {relation} {highest}, got t_min={self.t_min}, "
                f"t_max={self.t_max}{hint}"
            )

    def check_parameters(self) -> None:
        """Raise a ValueError naming the problem when an array parameter (a leaf of the
        pytree, so not checkable at construction, where gradients rebuild the schedule)
        cannot define a schedule; by default, every concrete leaf must be finite. The
        workflows call it on the user's schedule."""
        for leaf in jax.tree.leaves(self):
            if not isinstance(leaf, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(leaf))):
                raise ValueError(f"{type(self).__name__} has NaN or infinite parameters")

    def check_times(self, *times: float) -> None:
        """Raise a ValueError naming the range when a concrete time lies outside it."""
        for value in times:
            if value is None or isinstance(value, jax.core.Tracer):
                continue
            value = float(value)
            if not (self.t_min - 1e-12 <= value <= self.t_max + 1e-12):
                raise ValueError(
                    f"time {value} is outside the range of {type(self).__name__}: "
                    f"[{self.t_min}, {self.t_max}]"
                )


class _VariancePreserving(Schedule):
    """alpha^2 + sigma^2 = 1: sigma and lambda follow from log alpha."""

    def sigma(self, t):
        return jnp.sqrt(-jnp.expm1(2.0 * self.log_alpha(t)))

    def lambda_(self, t):
        log_alpha = self.log_alpha(t)
        return log_alpha - 0.5 * jnp.log(-jnp.expm1(2.0 * log_alpha))

    @staticmethod
    def _log_alpha_from_lambda(lambda_value):
        return -0.5 * jnp.logaddexp(0.0, -2.0 * jnp.asarray(lambda_value))

    def alpha_sigma_from_lambda(self, lambda_value):
        lambda_value = jnp.asarray(lambda_value)
        return jnp.sqrt(jax.nn.sigmoid(2.0 * lambda_value)), jnp.sqrt(jax.nn.sigmoid(-2.0 * lambda_value))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VPDiscrete(_VariancePreserving):
    """Discrete-time variance-preserving schedule (DDPM), made continuous as in DPM-Solver
    (Lu et al. 2022): log alpha is piecewise linear in t on the grid t_i = (i + 1) / N,
    so it is exact at every training step and t runs over [1/N, 1]."""

    log_alphas: jax.Array  # log sqrt(alphas_cumprod), shape (N,)

    @classmethod
    def from_betas(cls, betas) -> VPDiscrete:
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size < 2:
            raise ValueError(f"betas must be a 1-D array of at least 2 values, got shape {betas.shape}")
        if not np.all((betas > 0) & (betas < 1)):
            raise ValueError("betas must lie strictly between 0 and 1")
        return cls(jnp.asarray(0.5 * np.cumsum(np.log1p(-betas))))

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod) -> VPDiscrete:
        alphas_cumprod = np.asarray(alphas_cumprod, dtype=np.float64)
        if alphas_cumprod.ndim != 1 or alphas_cumprod.size < 2:
            raise ValueError("alphas_cumprod must be a 1-D array of at least 2 values")
        if not np.all((alphas_cumprod > 0) & (alphas_cumprod < 1)) or np.any(np.diff(alphas_cumprod) >= 0):
            raise ValueError("alphas_cumprod must be strictly decreasing and inside (0, 1)")
        return cls(jnp.asarray(0.5 * np.log(alphas_cumprod)))

    @classmethod
    def ddpm_linear(cls, beta_start: float = 1e-4, beta_end: float = 0.02, steps: int = 1000) -> VPDiscrete:
        """The schedule of Ho et al. (2020): betas linear from 1e-4 to 0.02 over 1000 steps."""
        check_count("steps", steps, minimum=2)
        return cls.from_betas(np.linspace(beta_start, beta_end, steps, dtype=np.float64))

    def check_parameters(self) -> None:
        """log_alphas must be a 1-D table of at least 2 finite, negative, strictly
        decreasing values (log sqrt(alphas_cumprod) of a noising process)."""
        super().check_parameters()
        if isinstance(self.log_alphas, jax.core.Tracer):
            return
        if not isinstance(self.log_alphas, (jax.Array, np.ndarray)):
            raise TypeError(f"VPDiscrete.log_alphas must be an array, got {type(self.log_alphas).__name__}; "
                            "VPDiscrete.from_betas and from_alphas_cumprod build it")
        table = np.asarray(self.log_alphas)
        if table.ndim != 1 or table.size < 2 or not np.issubdtype(table.dtype, np.floating):
            raise ValueError(f"VPDiscrete.log_alphas must be a 1-D float array of at least 2 values, got shape "
                             f"{table.shape} ({table.dtype}); VPDiscrete.from_betas builds it from betas")
        if not (np.all(table < 0) and np.all(np.diff(table) < 0)):
            raise ValueError("VPDiscrete.log_alphas (log sqrt(alphas_cumprod)) must be negative and strictly "
                             "decreasing; VPDiscrete.from_betas and from_alphas_cumprod build it")

    def rescaled_to_zero_terminal_snr(self, terminal_alpha_bar: float = 2.0**-24) -> VPDiscrete:
        """This schedule with its last step at (almost) zero signal-to-noise ratio (Lin et
        al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed"): sqrt of
        alphas_cumprod shifted and scaled so that the first value is kept and the last is
        sqrt(terminal_alpha_bar) instead of 0. The floor keeps lambda finite at t_max, so
        that exponential integrators can start there (exactly zero SNR makes lambda = -inf,
        and a noise-predicting network cannot give x0 there); 2^-24 is the value
        diffusers' Euler schedulers use. Networks are trained on it with v prediction."""
        check_positive("terminal_alpha_bar", terminal_alpha_bar)
        if isinstance(self.log_alphas, jax.core.Tracer):
            raise TypeError("rescaled_to_zero_terminal_snr() rescales a concrete table: call it outside jax.jit / grad")
        self.check_parameters()
        roots = np.exp(np.asarray(self.log_alphas, np.float64))
        floor = math.sqrt(terminal_alpha_bar)
        if not floor < roots[0]:
            raise ValueError(f"terminal_alpha_bar={terminal_alpha_bar} must be below the first alphas_cumprod, "
                             f"{roots[0] ** 2:.6g}")
        rescaled = (roots - roots[-1]) * (roots[0] - floor) / (roots[0] - roots[-1]) + floor
        return VPDiscrete(jnp.asarray(np.log(rescaled), self.log_alphas.dtype))

    @property
    def num_steps(self) -> int:
        return self.log_alphas.shape[0]

    @property
    def t_min(self) -> float:
        return 1.0 / self.num_steps

    @property
    def t_max(self) -> float:
        return 1.0

    def _grid(self):
        n = self.num_steps
        return jnp.arange(1, n + 1, dtype=self.log_alphas.dtype) / n

    def log_alpha(self, t):
        return jnp.interp(jnp.asarray(t, self.log_alphas.dtype), self._grid(), self.log_alphas)

    def inverse_lambda(self, lambda_value):
        log_alpha = self._log_alpha_from_lambda(lambda_value).astype(self.log_alphas.dtype)
        # log alpha decreases in t: interpolate on the reversed table.
        return jnp.interp(log_alpha, self.log_alphas[::-1], self._grid()[::-1])

    def to_index(self, t):
        """Continuous time to the network's discrete step index in [0, N - 1]."""
        return jnp.asarray(t) * self.num_steps - 1.0


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VPLinear(_VariancePreserving):
    """Continuous variance-preserving SDE with linear beta(t) (Song et al. 2021):
    log alpha(t) = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2."""

    beta_min: float = static_field(0.1)
    beta_max: float = static_field(20.0)
    t_min: float = static_field(1e-3)
    t_max: float = static_field(1.0)

    def __post_init__(self):
        for field in ("beta_min", "beta_max"):
            check_static_real(f"VPLinear.{field}", getattr(self, field))
        if not 0 <= self.beta_min < self.beta_max:
            raise ValueError(
                f"VPLinear needs 0 <= beta_min < beta_max (the noise rate beta(t) rises linearly from beta_min), "
                f"got beta_min={self.beta_min}, beta_max={self.beta_max}"
            )
        self._check_range(0.0)

    def log_alpha(self, t):
        t = jnp.asarray(t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def inverse_lambda(self, lambda_value):
        difference = self.beta_max - self.beta_min
        minus_two_log_alpha = jnp.logaddexp(0.0, -2.0 * jnp.asarray(lambda_value))
        # Solve difference/2 t^2 + beta_min t - minus_two_log_alpha = 0 stably.
        tmp = 2.0 * difference * minus_two_log_alpha
        return tmp / (jnp.sqrt(self.beta_min**2 + tmp) + self.beta_min) / difference


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VPCosine(_VariancePreserving):
    """Cosine schedule of Nichol & Dhariwal (2021): alpha(t) = cos((t + s)/(1 + s) pi/2) /
    cos(s/(1 + s) pi/2). t_max stops short of 1, where alpha vanishes and lambda diverges."""

    offset: float = static_field(0.008)
    t_min: float = static_field(1e-3)
    t_max: float = static_field(0.9946)

    def __post_init__(self):
        check_static_real("VPCosine.offset", self.offset)
        if self.offset < 0:
            raise ValueError(f"VPCosine: offset must be non-negative, got {self.offset}")
        self._check_range(0.0, 1.0)  # alpha(1) = 0

    def _log_alpha_zero(self):
        return math.log(math.cos(self.offset / (1.0 + self.offset) * math.pi / 2.0))

    def log_alpha(self, t):
        angle = (jnp.asarray(t) + self.offset) / (1.0 + self.offset) * jnp.pi / 2.0
        return jnp.log(jnp.cos(angle)) - self._log_alpha_zero()

    def inverse_lambda(self, lambda_value):
        log_alpha = self._log_alpha_from_lambda(lambda_value)
        angle = jnp.arccos(jnp.exp(log_alpha + self._log_alpha_zero()))
        return 2.0 * (1.0 + self.offset) / jnp.pi * angle - self.offset


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EDM(Schedule):
    """Variance-exploding schedule in the EDM parameterisation (Karras et al. 2022):
    alpha = 1 and sigma = t, so t is the noise level itself."""

    t_min: float = static_field(0.002)
    t_max: float = static_field(80.0)

    def __post_init__(self):
        self._check_range(0.0)

    def log_alpha(self, t):
        return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(float)))

    def sigma(self, t):
        return jnp.asarray(t, dtype=jnp.result_type(float))

    def lambda_(self, t):
        return -jnp.log(jnp.asarray(t, dtype=jnp.result_type(float)))

    def inverse_lambda(self, lambda_value):
        return jnp.exp(-jnp.asarray(lambda_value))

    def alpha_sigma_from_lambda(self, lambda_value):
        sigma = jnp.exp(-jnp.asarray(lambda_value))
        return jnp.ones_like(sigma), sigma


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RectifiedFlow(Schedule):
    """The straight path of rectified flow (Liu et al. 2023): x_t = (1 - t) x_0 + t noise,
    so alpha = 1 - t, sigma = t and the velocity is dx/dt = noise - x_0."""

    is_flow: ClassVar[bool] = True
    default_grid: ClassVar[str] = "uniform"

    t_min: float = static_field(0.0)
    t_max: float = static_field(1.0)

    def __post_init__(self):
        self._check_range(0.0, 1.0, ends_included=True)

    def log_alpha(self, t):
        return jnp.log1p(-jnp.asarray(t, dtype=jnp.result_type(float)))

    def alpha(self, t):
        return 1.0 - jnp.asarray(t, dtype=jnp.result_type(float))

    def sigma(self, t):
        return jnp.asarray(t, dtype=jnp.result_type(float))

    def lambda_(self, t):
        t = jnp.asarray(t, dtype=jnp.result_type(float))
        return jnp.log1p(-t) - jnp.log(t)

    def inverse_lambda(self, lambda_value):
        return jax.nn.sigmoid(-jnp.asarray(lambda_value))

    def alpha_sigma_from_lambda(self, lambda_value):
        lambda_value = jnp.asarray(lambda_value)
        return jax.nn.sigmoid(lambda_value), jax.nn.sigmoid(-lambda_value)

    def alpha_sigma_derivatives(self, t):
        ones = jnp.ones_like(jnp.asarray(t, dtype=jnp.result_type(float)))
        return -ones, ones


_NAMED = {
    "ddpm": VPDiscrete.ddpm_linear,
    "vp-linear": VPLinear,
    "vp-cosine": VPCosine,
    "edm": EDM,
    "rectified-flow": RectifiedFlow,
}


def names() -> list[str]:
    """Names accepted by `get`."""
    return sorted(_NAMED)


def get(name: str) -> Schedule:
    """A schedule with its default settings, by name (for command lines and configs)."""
    if not isinstance(name, str) or name not in _NAMED:
        raise ValueError(f"unknown schedule {name!r}; choose one of {names()}")
    return _NAMED[name]()
