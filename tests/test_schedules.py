import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplax import schedules

# Factories, so that the discrete table is built inside each test's float64 context.
ALL = [
    schedules.VPDiscrete.ddpm_linear,
    schedules.VPLinear,
    schedules.VPCosine,
    schedules.EDM,
    schedules.RectifiedFlow,
]


def _interior_times(schedule, count=9):
    low, high = max(schedule.t_min, 1e-3), schedule.t_max
    return jnp.linspace(low, high, count + 2)[1:-1]


@pytest.mark.parametrize("make", ALL, ids=lambda make: make.__qualname__)
def test_lambda_round_trip_and_definition(x64, make):
    schedule = make()
    t = _interior_times(schedule)
    lambdas = schedule.lambda_(t)
    np.testing.assert_allclose(schedule.inverse_lambda(lambdas), t, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lambdas, jnp.log(schedule.alpha(t) / schedule.sigma(t)), rtol=1e-10, atol=1e-10)
    alpha, sigma = schedule.alpha_sigma_from_lambda(lambdas)
    np.testing.assert_allclose(alpha, schedule.alpha(t), rtol=1e-10)
    np.testing.assert_allclose(sigma, schedule.sigma(t), rtol=1e-10)
    assert np.all(np.diff(np.asarray(lambdas)) < 0), "lambda must decrease from data to noise"


@pytest.mark.parametrize("make", ALL[:3], ids=lambda make: make.__qualname__)
def test_variance_preserving(x64, make):
    schedule = make()
    t = _interior_times(schedule)
    np.testing.assert_allclose(schedule.alpha(t) ** 2 + schedule.sigma(t) ** 2, 1.0, atol=1e-12)


def test_discrete_schedule_is_exact_on_its_grid(x64):
    betas = np.linspace(1e-4, 0.02, 1000)
    alphas_cumprod = np.cumprod(1 - betas)
    schedule = schedules.VPDiscrete.from_betas(betas)
    steps = np.array([0, 1, 10, 500, 998, 999])
    t = (steps + 1) / 1000
    np.testing.assert_allclose(schedule.alpha(t) ** 2, alphas_cumprod[steps], rtol=1e-12)
    np.testing.assert_allclose(schedule.to_index(t), steps, atol=1e-9)
    same = schedules.VPDiscrete.from_alphas_cumprod(alphas_cumprod)
    np.testing.assert_allclose(same.log_alphas, schedule.log_alphas, rtol=1e-12)
    assert schedule.t_min == pytest.approx(1e-3) and schedule.t_max == 1.0


def test_vp_linear_matches_its_sde(x64):
    schedule = schedules.VPLinear(beta_min=0.1, beta_max=20.0)
    t = jnp.linspace(0.01, 1.0, 7)
    # d log alpha / dt = -beta(t) / 2 with beta(t) = beta_min + t (beta_max - beta_min).
    slope = jax.vmap(jax.grad(schedule.log_alpha))(t)
    np.testing.assert_allclose(slope, -0.5 * (0.1 + t * 19.9), rtol=1e-12)


def test_derivatives(x64):
    flow = schedules.RectifiedFlow()
    d_alpha, d_sigma = flow.alpha_sigma_derivatives(jnp.array([0.2, 0.7]))
    np.testing.assert_allclose(d_alpha, -1.0)
    np.testing.assert_allclose(d_sigma, 1.0)
    edm = schedules.EDM()
    d_alpha, d_sigma = edm.alpha_sigma_derivatives(jnp.array([0.5, 3.0]))
    np.testing.assert_allclose(d_alpha, 0.0)
    np.testing.assert_allclose(d_sigma, 1.0)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="betas"):
        schedules.VPDiscrete.from_betas([0.1, 1.5])
    with pytest.raises(ValueError, match="decreasing"):
        schedules.VPDiscrete.from_alphas_cumprod([0.5, 0.9])
    with pytest.raises(ValueError, match="unknown schedule"):
        schedules.get("nope")
    with pytest.raises(ValueError, match="outside the range"):
        schedules.VPLinear().check_times(1.5)
    assert set(schedules.names()) >= {"ddpm", "edm", "rectified-flow"}


def _zero_snr_roots(betas):
    """sqrt(alphas_cumprod) rescaled to exactly zero terminal SNR, Lin et al. (2024), Alg. 1."""
    roots = np.sqrt(np.cumprod(1.0 - betas))
    return (roots - roots[-1]) * roots[0] / (roots[0] - roots[-1])


def test_zero_terminal_snr_rescale(x64):
    betas = np.linspace(1e-4, 0.02, 1000)
    schedule = schedules.VPDiscrete.from_betas(betas)
    rescaled = schedule.rescaled_to_zero_terminal_snr()
    rescaled.check_parameters()
    roots = np.exp(np.asarray(rescaled.log_alphas))
    exact = _zero_snr_roots(betas)
    # The floor sqrt(2^-24) shifts the table by at most 2^-12 from the exact rescale.
    np.testing.assert_allclose(roots, exact, rtol=0, atol=2.0**-12 * (1 + 1e-9))
    assert roots[0] == pytest.approx(exact[0], rel=1e-12)
    assert roots[-1] ** 2 == pytest.approx(2.0**-24, rel=1e-9)
    assert np.all(np.diff(roots) < 0) and np.isfinite(float(rescaled.lambda_(1.0)))
    with pytest.raises(ValueError, match="terminal_alpha_bar"):
        schedule.rescaled_to_zero_terminal_snr(terminal_alpha_bar=0.0)


def test_sampling_from_zero_terminal_snr_reaches_the_exact_flow(x64):
    """From t_max of the rescaled schedule (SNR 6e-8), dpm++2m on the mixture's exact v
    prediction converges to the exact probability-flow solution."""
    import samplax as sx

    schedule = schedules.VPDiscrete.ddpm_linear().rescaled_to_zero_terminal_snr()
    mixture = sx.GaussianMixture.random(0, 3, 3)
    noise = jax.random.normal(jax.random.key(0), (8, 3), jnp.float64)
    exact = mixture.flow_to_data(schedule.sigma(1.0) * noise, schedule, 1.0)
    errors = [float(jnp.sqrt(jnp.mean((sx.sample(mixture.denoiser(schedule, "v"), "dpm++2m", noise, steps=steps,
                                                  denoise_to_zero=True)[0] - exact) ** 2))) for steps in (10, 40)]
    assert errors[1] < 0.25 * errors[0] and errors[1] < 1e-2, errors


def test_uniform_grid_from_t_max_is_trailing_spacing():
    """diffusers' "trailing" timesteps for N steps of a T-step schedule,
    round(T - i T / N) - 1, are the uniform grid from t_max to 1 / N in samplax time
    t = (index + 1) / T; the last step to sigma = 0 is denoise_to_zero."""
    from samplax.solvers import time_grid

    schedule, steps = schedules.VPDiscrete.ddpm_linear(), 10
    indices = np.round(1000 - np.arange(steps) * 1000 / steps) - 1
    grid = time_grid(schedule, steps - 1, "uniform", t_start=1.0, t_end=1.0 / steps)
    np.testing.assert_allclose(grid, (indices + 1) / 1000, rtol=1e-6)
