"""An isotropic Gaussian mixture: a data distribution whose denoiser is exact at every noise
level of every schedule, so the probability-flow ODE, and every solver's error, is known.

For x_t = alpha x_0 + sigma noise and component k with mean mu_k and std s_k,
x_t | k ~ N(alpha mu_k, (alpha^2 s_k^2 + sigma^2) I), and the posterior mean is
E[x_0 | x_t] = sum_k w_k(x_t) (mu_k + alpha s_k^2 / v_k (x_t - alpha mu_k)), with
v_k = alpha^2 s_k^2 + sigma^2 and w_k the posterior component weights.
"""

from __future__ import annotations

import dataclasses

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from samplax.checks import check_count, check_positive, check_real
from samplax.samplers.denoiser import Denoiser
from samplax.samplers.inputs import check_key
from samplax.schedules import Schedule

__all__ = ["GaussianMixture"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GaussianMixture:
    """Mixture of isotropic Gaussians: `means` (K, D), `stds` (K,), `weights` (K,)."""

    means: jax.Array
    stds: jax.Array
    weights: jax.Array

    def __post_init__(self):
        for name in ("means", "stds", "weights"):
            if isinstance(getattr(self, name), (list, tuple)):  # nested lists of numbers, as written by hand
                object.__setattr__(self, name, jnp.asarray(getattr(self, name), jnp.result_type(float)))
        means, stds, weights = (np.shape(self.means), np.shape(self.stds), np.shape(self.weights))
        if len(means) != 2 or stds != means[:1] or weights != means[:1]:
            raise ValueError(
                f"means must be (K, D) with stds and weights (K,), got {means}, {stds}, {weights}"
            )
        if means[0] < 1 or means[1] < 1:
            raise ValueError(f"a mixture needs at least one component and one dimension, got means of shape {means}")

    def check_parameters(self) -> None:
        """Raise a ValueError unless the (concrete) parameters define a mixture: finite
        means, positive stds, non-negative weights that sum to 1. Not in __post_init__,
        which also builds gradient pytrees; the mixture's entry points call it."""
        if any(isinstance(leaf, jax.core.Tracer) for leaf in (self.means, self.stds, self.weights)):
            return
        means, stds, weights = (np.asarray(leaf, np.float64) for leaf in (self.means, self.stds, self.weights))
        if not np.all(np.isfinite(means)):
            raise ValueError("GaussianMixture.means must be finite")
        if not np.all(np.isfinite(stds) & (stds > 0)):
            raise ValueError(f"GaussianMixture.stds must be positive and finite, got {stds[:5].tolist()}")
        if not (np.all(np.isfinite(weights) & (weights >= 0)) and abs(weights.sum() - 1.0) < 1e-5):
            raise ValueError(f"GaussianMixture.weights must be non-negative and sum to 1, got sum {weights.sum():.6g}; "
                             "normalise them (weights / weights.sum())")

    def _check_flow_inputs(self, x_start, schedule) -> None:
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a samplax schedule object such as samplax.schedules.VPLinear(), "
                            f"got {schedule!r}")
        if jnp.ndim(x_start) != 2 or jnp.shape(x_start)[1] != self.dimension:
            raise ValueError(f"x_start must be a batch of points, shape (batch, {self.dimension}), got shape "
                             f"{jnp.shape(x_start)}")

    @classmethod
    def random(
        cls,
        seed: int,
        dimension: int,
        components: int,
        std_range: tuple[float, float] = (0.05, 0.25),
        mean_scale: float = 1.0,
    ) -> GaussianMixture:
        """A reproducible random mixture: means with entries of size ~ mean_scale, stds
        uniform in std_range, weights from a Dirichlet(5) draw."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        check_count("dimension", dimension)
        check_count("components", components)
        check_positive("mean_scale", mean_scale, allow_zero=True)
        if not (isinstance(std_range, (tuple, list)) and len(std_range) == 2):
            raise TypeError(f"std_range must be a pair (low, high) with 0 < low <= high, got {std_range!r}")
        low, high = std_range
        check_real("std_range low", low)
        check_real("std_range high", high)
        if not 0 < low <= high:
            raise ValueError(f"std_range must be (low, high) with 0 < low <= high, got {std_range!r}")
        rng = np.random.default_rng(seed)
        means = rng.normal(size=(components, dimension)) * mean_scale / np.sqrt(dimension) * 2.0
        stds = rng.uniform(*std_range, size=components)
        weights = rng.dirichlet(np.full(components, 5.0))
        return cls(jnp.asarray(means), jnp.asarray(stds), jnp.asarray(weights))

    @property
    def dimension(self) -> int:
        return self.means.shape[1]

    def sample(self, key, count: int):
        """`count` draws of x_0."""
        self.check_parameters()
        check_key("key", key)
        check_count("count", count, minimum=0)
        key_component, key_noise = jax.random.split(key)
        component = jax.random.choice(key_component, self.weights.shape[0], (count,), p=self.weights)
        noise = jax.random.normal(key_noise, (count, self.dimension), self.means.dtype)
        return self.means[component] + self.stds[component, None] * noise

    def posterior(self, observed, known, noise_std: float = 0.0) -> GaussianMixture:
        """The distribution of the unknown coordinates of x_0 given y = x_0[known] +
        noise_std * noise, for one observation `observed` (the full vector; only its
        `known` entries are read) and a boolean `known` mask (D,). Within a component the
        coordinates are independent, so the posterior is a mixture of the same components
        restricted to the unknown coordinates, with weights
        w_k N(y; mu_k[known], (s_k^2 + noise_std^2) I) renormalised."""
        self.check_parameters()
        mask = np.asarray(known)
        if mask.dtype != bool and not (np.issubdtype(mask.dtype, np.number) and np.all((mask == 0) | (mask == 1))):
            raise ValueError(f"known must be a boolean (or 0/1) mask of shape ({self.dimension},), got {known!r}")
        known = mask.astype(bool)
        if known.shape != (self.dimension,) or known.all() or not known.any():
            raise ValueError(f"known must be a boolean mask of shape ({self.dimension},) with both known and unknown "
                             f"coordinates, got {known.tolist()}")
        check_positive("noise_std", noise_std, allow_zero=True)
        if not isinstance(observed, (jax.Array, np.ndarray)) or jnp.shape(observed) != (self.dimension,):
            raise ValueError(f"observed must be one full vector of shape ({self.dimension},) (only its known entries "
                             f"are read), got {type(observed).__name__} of shape {jnp.shape(observed)}")
        y = jnp.asarray(observed)[known]
        if not bool(jnp.all(jnp.isfinite(y))):
            raise ValueError("observed holds NaN or inf at known coordinates")
        variances = self.stds**2 + noise_std**2
        squared = jnp.sum((y[None, :] - self.means[:, known]) ** 2, axis=1)
        log_weights = jnp.log(self.weights) - 0.5 * squared / variances - 0.5 * known.sum() * jnp.log(variances)
        weights = jax.nn.softmax(log_weights)
        return GaussianMixture(self.means[:, ~known], self.stds, weights)

    def _components(self, x, alpha, sigma):
        """(log w_k + log N(x; alpha mu_k, v_k I) + D/2 log 2 pi (B, K), v_k (B or 1, K, 1),
        x - alpha mu_k (B, K, D), alpha and sigma shaped (B or 1, 1, 1)) at noise level
        (alpha, sigma), scalars or (B,)."""
        dtype = x.dtype
        alpha = jnp.reshape(jnp.asarray(alpha, dtype), (-1, 1, 1))
        sigma = jnp.reshape(jnp.asarray(sigma, dtype), (-1, 1, 1))
        variance = alpha**2 * self.stds.astype(dtype)[None, :, None] ** 2 + sigma**2
        difference = x[:, None, :] - alpha * self.means.astype(dtype)[None]
        log_density = (
            jnp.log(self.weights.astype(dtype))
            - 0.5 * jnp.sum(difference**2, axis=-1) / variance[..., 0]
            - 0.5 * self.dimension * jnp.log(variance[..., 0])
        )
        return log_density, variance, difference, alpha, sigma

    def log_density(self, x, alpha, sigma):
        """log p_t(x) (B,) of x_t = alpha x_0 + sigma noise, in closed form: the mixture
        of N(alpha mu_k, (alpha^2 s_k^2 + sigma^2) I), which the probability-flow ODE
        transports exactly from one noise level to another."""
        log_density = jax.scipy.special.logsumexp(self._components(x, alpha, sigma)[0], axis=-1)
        return log_density - 0.5 * self.dimension * jnp.log(2.0 * jnp.pi)

    def posterior_means(self, x, alpha, sigma):
        """(E[x_0 | x_t = x], E[noise | x_t = x]) at noise level (alpha, sigma), scalars or
        (B,). Both are computed directly, so they stay finite where alpha or sigma is 0."""
        log_density, variance, difference, alpha, sigma = self._components(x, alpha, sigma)
        posterior = jax.nn.softmax(log_density, axis=-1)[..., None]  # (B, K, 1)
        stds = self.stds.astype(x.dtype)[None, :, None]
        data = self.means.astype(x.dtype)[None] + alpha * stds**2 / variance * difference
        noise = sigma / variance * difference
        return jnp.sum(posterior * data, axis=1), jnp.sum(posterior * noise, axis=1)

    def data_prediction(self, x, alpha, sigma):
        """E[x_0 | x_t = x] at noise level (alpha, sigma); alpha and sigma are scalars or (B,)."""
        return self.posterior_means(x, alpha, sigma)[0]

    def denoiser(self, schedule: Schedule, prediction: str = "noise") -> Denoiser:
        """A `Denoiser` whose network is this mixture's exact `prediction` under `schedule`."""
        self.check_parameters()
        mixture = self

        def network(x, t):
            alpha, sigma = schedule.alpha(t), schedule.sigma(t)
            data, noise = mixture.posterior_means(x, alpha, sigma)
            alpha, sigma = alpha[:, None], sigma[:, None]
            if prediction == "data":
                return data
            if prediction == "noise":
                return noise
            if prediction == "v":
                return alpha * noise - sigma * data
            if prediction == "score":
                return -noise / sigma
            d_alpha, d_sigma = schedule.alpha_sigma_derivatives(t)
            return d_alpha[:, None] * data + d_sigma[:, None] * noise

        return Denoiser(
            jax.tree_util.Partial(network), schedule, prediction=prediction, time_input="continuous",
            sample_shape=(self.dimension,),
        )

    def flow_map(self, x_start, schedule: Schedule, t_start, t_end, tolerance: float = 1e-10):
        """The exact probability-flow ODE map from t_start to t_end (either direction),
        solved by diffrax (Dopri8, float64, rtol = atol = tolerance). The equation is
        integrated in lambda where lambda is finite at both ends, else in t (rectified flow
        from t = 1 or to t = 0)."""
        self.check_parameters()
        self._check_flow_inputs(x_start, schedule)
        check_real("t_start", t_start)
        check_real("t_end", t_end)
        schedule.check_times(t_start, t_end)
        with jax.enable_x64(True):
            lambda_start = schedule.lambda_(jnp.float64(t_start))
            lambda_end = schedule.lambda_(jnp.float64(t_end))
            if bool(jnp.isfinite(lambda_start) & jnp.isfinite(lambda_end)):
                return self._flow_in_lambda(x_start, schedule, lambda_start, lambda_end, tolerance)
            return self._flow_in_time(x_start, schedule, t_start, t_end, tolerance)

    def flow_to_data(self, x_start, schedule: Schedule, t_start, tolerance: float = 1e-10):
        """Where the probability-flow ODE from t_start ends at sigma = 0. For a schedule that
        reaches sigma = 0 (rectified flow) that is the flow map to t_min; otherwise the flow
        is solved to lambda = 16 (sigma ~ 1e-7, far below every component's std) and
        finished with the exact denoiser, whose remaining error is of order sigma^2."""
        self.check_parameters()
        self._check_flow_inputs(x_start, schedule)
        check_real("t_start", t_start)
        schedule.check_times(t_start, schedule.t_min)
        with jax.enable_x64(True):
            if float(schedule.sigma(jnp.float64(schedule.t_min))) == 0.0:
                return self.flow_map(x_start, schedule, t_start, schedule.t_min, tolerance)
            lambda_start = schedule.lambda_(jnp.float64(t_start))
            lambda_end = jnp.float64(16.0)
            x_end = self._flow_in_lambda(x_start, schedule, lambda_start, lambda_end, tolerance)
            alpha, sigma = schedule.alpha_sigma_from_lambda(lambda_end)
            mixture = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), self)
            return np.asarray(mixture.data_prediction(jnp.asarray(x_end), alpha, sigma))

    def _flow_in_time(self, x_start, schedule, t_start, t_end, tolerance):
        """Integrate dx/dt = alpha'(t) E[x_0 | x] + sigma'(t) E[noise | x] in t."""
        with jax.enable_x64(True):
            mixture = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), self)

            def vector_field(t, x, args):
                data, noise = mixture.posterior_means(x, schedule.alpha(t), schedule.sigma(t))
                d_alpha, d_sigma = schedule.alpha_sigma_derivatives(t)
                return d_alpha * data + d_sigma * noise

            solution = diffrax.diffeqsolve(
                diffrax.ODETerm(vector_field),
                diffrax.Dopri8(),
                t0=jnp.float64(t_start),
                t1=jnp.float64(t_end),
                dt0=None,
                y0=jnp.asarray(x_start, jnp.float64),
                stepsize_controller=diffrax.PIDController(rtol=tolerance, atol=tolerance),
                max_steps=100_000,
            )
            return np.asarray(solution.ys[-1])

    def _flow_in_lambda(self, x_start, schedule, lambda_start, lambda_end, tolerance):
        """Integrate y = x / sigma in lambda, where dy/dlambda = exp(lambda) E[x_0 | x]: a
        smooth equation for every schedule, even where alpha(t) has kinks in t."""
        with jax.enable_x64(True):
            mixture = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), self)
            _, sigma_start = schedule.alpha_sigma_from_lambda(lambda_start)
            _, sigma_end = schedule.alpha_sigma_from_lambda(lambda_end)

            def vector_field(lambda_value, y, args):
                alpha, sigma = schedule.alpha_sigma_from_lambda(lambda_value)
                return jnp.exp(lambda_value) * mixture.data_prediction(sigma * y, alpha, sigma)

            solution = diffrax.diffeqsolve(
                diffrax.ODETerm(vector_field),
                diffrax.Dopri8(),
                t0=lambda_start,
                t1=lambda_end,
                dt0=None,
                y0=jnp.asarray(x_start, jnp.float64) / sigma_start,
                stepsize_controller=diffrax.PIDController(rtol=tolerance, atol=tolerance),
                max_steps=100_000,
            )
            return np.asarray(solution.ys[-1] * sigma_end)
