"""Log-likelihoods of diffusion and flow models through the probability-flow ODE.

Along an ODE dx/ds = f(x, s) the density of the transported distribution obeys
d log p(x_s) / ds = -div f (the instantaneous change of variables; Chen et al. 2018,
"Neural Ordinary Differential Equations"), so the density a model gives its data at t_end
is

    log p_end(x) = log p_start(x_start) + integral from t_end to t_start of div f ds,

where x_start is where the probability-flow ODE takes x at t_start (Song et al. 2021,
"Score-Based Generative Modeling through Stochastic Differential Equations", appendix
D.2). The ODE and the running integral are solved together, per sample, by a diffrax
adaptive Runge-Kutta solver. Diffusion schedules are integrated in u = -lambda, in which
the ODE is smooth even where alpha(t) has kinks (the DDPM table), flows in t.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp

from samplax.checks import check_callable_as, check_count, check_positive
from samplax.divergence import ExactDivergence, Hutchinson
from samplax.samplers.denoiser import Denoiser
from samplax.samplers.inputs import check_batch, check_key, check_model, end_points
from samplax.samplers.noise import sample_keys

__all__ = ["ExactDivergence", "Hutchinson", "LikelihoodInfo", "bits_per_dim", "log_likelihood"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LikelihoodInfo:
    """What a likelihood solve did, per sample: vector-field evaluations (`nfe`; each
    costs one network call and one forward-mode product per probe, or per dimension for
    the exact divergence), solver steps, the prior's log-density at the latent, the
    integral of the divergence (log p = prior + integral), the latent itself (where
    the ODE takes the data at t_start), and whether the solve reached t_start within
    max_steps (where it did not, log p is NaN)."""

    nfe: jax.Array
    steps: jax.Array
    prior_log_density: jax.Array
    divergence_integral: jax.Array
    latent: jax.Array
    reached: jax.Array


def gaussian_log_density(x, std):
    """log N(x; 0, std^2 I) of one sample."""
    return -0.5 * jnp.sum(jnp.square(x / std)) - x.size * (jnp.log(std) + 0.5 * math.log(2.0 * math.pi))


def _vector_field(model: Denoiser):
    """(dx/ds of one sample at (x, s), s at the end points): s = -lambda for a diffusion
    schedule, whose alpha and sigma are smooth functions of lambda, and s = t for a flow.
    In u = -lambda, dx/du = (d alpha/du) D + (d sigma/du) eps with eps = (x - alpha D)/sigma
    from the data prediction D, one network call."""
    schedule = model.schedule
    if schedule.is_flow:
        predict = model.predict("velocity")

        def field(s, x):
            return predict(x[None], s)[0]

        return field, (lambda t: t)

    predict = model.predict("data")

    def field(u, x):
        (alpha, sigma), (d_alpha, d_sigma) = jax.jvp(
            schedule.alpha_sigma_from_lambda, (-u,), (-jnp.ones_like(u),)
        )
        data = predict(x[None], schedule.inverse_lambda(-u))[0]
        return d_alpha * data + d_sigma * (x - alpha * data) / sigma

    return field, (lambda t: -schedule.lambda_(t))


def _evaluations(solver, steps):
    """Vector-field evaluations of a diffrax explicit Runge-Kutta solve of `steps` steps
    (accepted and rejected): every stage of a step, less the first for a first-same-as-last
    tableau, whose first evaluation is made once at the start."""
    tableau = solver.tableau
    stages = tableau.num_stages
    return (stages - 1) * steps + 1 if tableau.fsal else stages * steps


def _check_solver(solver) -> None:
    if not isinstance(solver, diffrax.AbstractAdaptiveSolver) or not hasattr(solver, "tableau"):
        raise TypeError(
            "solver must be a diffrax explicit Runge-Kutta solver with an error estimate "
            f"(Tsit5, Dopri5, Dopri8, Bosh3), got {type(solver).__name__}"
        )


def log_likelihood(
    model: Denoiser,
    data,
    *,
    divergence: ExactDivergence | Hutchinson | None = None,
    key=None,
    t_start=None,
    t_end=None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver: diffrax.AbstractSolver | None = None,
    max_steps: int = 4096,
    prior: Callable | None = None,
) -> tuple[jax.Array, LikelihoodInfo]:
    """log p(data) in nats per sample, by the probability-flow ODE from t_end to t_start.

    Args:
        model: the Denoiser; with classifier-free guidance (or thresholding) the result is
            the log-density of the distribution the guided ODE samples, the pushforward of
            the prior by its flow (not a Bayesian posterior).
        data: (batch, ...) points at t_end (clean data when t_end is the schedule's end).
        divergence: `ExactDivergence()` (the default) or `Hutchinson(probes_per_sample,
            distribution)`.
        key: for Hutchinson probes (sample i uses fold_in(key, i), or one key per sample).
        t_start, t_end: the noise and data ends (default: the schedule's t_max and t_min;
            t_end = 0 on rectified flow needs a network predicting velocity or noise).
        rtol, atol: the adaptive solver's tolerances (score_sde uses 1e-5).
        solver: a diffrax adaptive Runge-Kutta solver (default `diffrax.Tsit5()`).
        max_steps: the solver's step limit per sample; a sample that needs more gets NaN
            and `info.reached` False, and outside jit the call raises a RuntimeError.
        prior: `log_density(x) -> scalar` of one sample at t_start; default the schedule's
            noise, N(0, sigma(t_start)^2 I), which neglects alpha(t_start) x_0 (score_sde
            and k-diffusion do the same).

    Returns:
        (log_p (batch,), LikelihoodInfo). Works under jit and vmap.
    """
    check_batch(data, "data")
    check_model(model, "log_likelihood", data, "data")
    _check_shared_parts(model)
    divergence = _as_divergence(divergence)
    if divergence.needs_key and key is None:
        raise ValueError("the Hutchinson estimate draws probes: pass key=jax.random.key(seed)")
    if not divergence.needs_key and key is not None:
        raise ValueError("the exact divergence draws nothing: key= applies to Hutchinson(...) only")
    solver = diffrax.Tsit5() if solver is None else solver
    _check_solver(solver)
    _check_tolerances(rtol, atol, max_steps)
    t_start, t_end = end_points(model.schedule, t_start, t_end)
    _check_end_point(model, t_start, "t_start", "alpha", ("velocity", "data"))
    _check_end_point(model, t_end, "t_end", "sigma", ("velocity", "noise"))
    data = jnp.asarray(data)
    _check_prior(prior, data)
    keys = sample_keys(key, data.shape[0]) if divergence.needs_key else None
    log_p, info = _solve(model, data, keys, t_start, t_end, rtol, atol, divergence, solver, max_steps, prior)
    if not isinstance(info.reached, jax.core.Tracer) and not bool(jnp.all(info.reached)):
        short = int(jnp.sum(~info.reached))
        raise RuntimeError(
            f"log_likelihood: the ODE solve did not reach t_start within max_steps={max_steps} on {short} of "
            f"{data.shape[0]} samples; raise max_steps or loosen rtol and atol"
        )
    return log_p, info


def _check_tolerances(rtol, atol, max_steps) -> None:
    check_positive("rtol", rtol, allow_zero=True)
    check_positive("atol", atol, allow_zero=True)
    if rtol == 0 and atol == 0:
        raise ValueError("rtol and atol are both 0: the adaptive solver could never accept a step; give one > 0")
    check_count("max_steps", max_steps)


def _check_shared_parts(model: Denoiser) -> None:
    """Each sample is solved on its own (its own adaptive steps), with the model's
    condition as it is: per-sample conditions and posterior observations would meet a
    batch of one."""
    for part, condition in (("condition", model.condition), ("unconditional", model.unconditional or {})):
        for name, value in condition.items():
            if jnp.ndim(value) >= 1 and jnp.shape(value)[0] > 1:
                raise ValueError(f"log_likelihood solves each sample on its own, so {part}[{name!r}] must be one "
                                 f"condition for every sample (no batch axis, or one row), got shape "
                                 f"{jnp.shape(value)}; "
                                 "call it once per condition")
    if model.posterior is not None or model.known is not None:
        raise ValueError("log_likelihood is the density of the model's probability-flow ODE; posterior guidance and "
                         "known regions (inpainting) are not supported")


def _check_prior(prior, data) -> None:
    """A prior is a function of one sample returning its log-density, a scalar."""
    if prior is None:
        return
    if not callable(prior):
        raise TypeError(f"prior must be a function log_density(x) of one sample, got {type(prior).__name__}")
    check_callable_as("prior", prior, ("x",))
    shape = jax.eval_shape(prior, jax.ShapeDtypeStruct(data.shape[1:], data.dtype)).shape
    if shape != ():
        raise ValueError(f"prior must return one number per sample (shape ()), got shape {shape} for a sample "
                         f"of shape {data.shape[1:]}")


def _check_end_point(model: Denoiser, t, name: str, coefficient: str, defined: tuple[str, ...]) -> None:
    """Where alpha (sigma) vanishes, only a velocity or data (noise) prediction gives the
    velocity: the others divide by it."""
    if isinstance(t, jax.core.Tracer) or model.prediction in defined:
        return
    if float(getattr(model.schedule, coefficient)(t)) == 0.0:
        raise ValueError(
            f"{name}={float(t)} has {coefficient} = 0, where a {model.prediction!r} prediction gives no velocity; "
            f"move {name} inside the range or use a network predicting {' or '.join(defined)}"
        )


@functools.partial(jax.jit, static_argnames=("divergence", "solver", "max_steps", "prior"))
def _solve(model, data, keys, t_start, t_end, rtol, atol, divergence, solver, max_steps, prior):
    field, clock = _vector_field(model)
    start_std = model.schedule.sigma(t_start)

    def augmented(s, state, probes):
        return divergence(lambda x: field(s, x), state[0], probes)

    def solve(x, sample_key):
        probes = divergence.probes(sample_key, x) if divergence.needs_key else None
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(augmented),
            solver,
            t0=clock(t_end),
            t1=clock(t_start),
            dt0=None,
            y0=(x, jnp.zeros((), x.dtype)),
            args=probes,
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=max_steps,
            throw=False,
        )
        reached = solution.result == diffrax.RESULTS.successful
        latent = jnp.where(reached, solution.ys[0][-1], jnp.nan)
        integral = jnp.where(reached, solution.ys[1][-1], jnp.nan)
        prior_term = gaussian_log_density(latent, start_std) if prior is None else prior(latent)
        return prior_term, integral, latent, solution.stats["num_steps"], reached

    prior_term, integral, latent, steps, reached = jax.vmap(solve)(data, keys)
    info = LikelihoodInfo(
        nfe=_evaluations(solver, steps),
        steps=steps,
        prior_log_density=prior_term,
        divergence_integral=integral,
        latent=latent,
        reached=reached,
    )
    return prior_term + integral, info


def _as_divergence(divergence):
    """The divergence estimator, ExactDivergence() by default."""
    divergence = ExactDivergence() if divergence is None else divergence
    if not isinstance(divergence, (ExactDivergence, Hutchinson)):
        raise TypeError(f"divergence must be ExactDivergence() or Hutchinson(...), got {divergence!r} "
                        f"({type(divergence).__name__})")
    return divergence


def bits_per_dim(
    model: Denoiser, images, *, key, levels: int = 256, **options
) -> tuple[jax.Array, LikelihoodInfo]:
    """Bits per dimension of integer images, uniformly dequantised (score_sde's measure).

    An image u with integer entries in [0, levels) is dequantised to x = 2 (u + U) / levels
    - 1 with U uniform on [0, 1)^d, so x lies in [-1, 1) (score_sde's centred data for
    levels = 256). The cell of u has volume (2 / levels)^d in x, so by Jensen's inequality
    -log2 P(u) <= -E_U[log2 p(x)] - d log2(2 / levels), and

        bits/dim = -log p(x) / (d ln 2) + log2(levels) - 1,

    an offset of 7 for 8-bit images, an upper bound on the discrete model's bits/dim
    whose expectation over U is taken by averaging runs.

    Args:
        images: (batch, ...) integers in [0, levels).
        key: the dequantisation noise, and the Hutchinson probes if `divergence` asks.
        options: passed to `log_likelihood` (divergence, rtol, atol, t_end, ...).

    Returns:
        (bits/dim (batch,), the LikelihoodInfo of the solve).
    """
    check_count("levels", levels, minimum=2)
    images = jnp.asarray(images)
    if not jnp.issubdtype(images.dtype, jnp.integer):
        raise TypeError(f"images must hold integers in [0, {levels}), got dtype {images.dtype}")
    if not isinstance(images, jax.core.Tracer) and (
        int(jnp.min(images)) < 0 or int(jnp.max(images)) >= levels
    ):
        raise ValueError(f"images must lie in [0, {levels}), got values in [{int(jnp.min(images))}, "
                         f"{int(jnp.max(images))}]")
    if images.ndim < 2:
        raise ValueError(f"images must have a leading batch axis, got shape {images.shape}")
    check_key("bits_per_dim(): key (for the dequantisation noise)", key)
    dequantise_key, probe_key = jax.random.split(key)
    uniform = jax.random.uniform(dequantise_key, images.shape, jnp.result_type(float))
    x = 2.0 * (images + uniform) / levels - 1.0
    divergence = _as_divergence(options.get("divergence"))
    log_p, info = log_likelihood(model, x, key=probe_key if divergence.needs_key else None, **options)
    dimension = math.prod(images.shape[1:])
    return -log_p / (dimension * math.log(2.0)) + math.log2(levels) - 1.0, info
