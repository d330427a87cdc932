"""Inpainting (samplax.inpaint) against the Gaussian mixture's exact posterior."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax as sx
from samplax.metrics import sliced_wasserstein

MIXTURE = sx.GaussianMixture.random(3, 4, 4, std_range=(0.15, 0.3))
SCHEDULE = sx.schedules.VPLinear()
MODEL = MIXTURE.denoiser(SCHEDULE, "noise")
OBSERVED = MIXTURE.sample(jax.random.key(1), 1)[0]
KNOWN = np.array([True, True, False, False])
MASK = jnp.asarray(KNOWN, jnp.float32)
KEY = jax.random.key(2)


def test_posterior_is_bayes_rule():
    """posterior(u | y) p(y) = p(y, u) at points u of the unknown coordinates, with the
    evidence p(y) the mixture's marginal density of the known coordinates."""
    posterior = MIXTURE.posterior(OBSERVED, KNOWN)
    marginal = sx.GaussianMixture(MIXTURE.means[:, KNOWN], MIXTURE.stds, MIXTURE.weights)
    points = posterior.sample(jax.random.key(4), 64)
    full = jnp.concatenate([jnp.broadcast_to(OBSERVED[:2], points.shape), points], axis=1)
    left = posterior.log_density(points, 1.0, 0.0) + marginal.log_density(OBSERVED[None, :2], 1.0, 0.0)
    np.testing.assert_allclose(left, MIXTURE.log_density(full, 1.0, 0.0), rtol=1e-5, atol=1e-4)


def test_inpainting_keeps_the_known_region_and_counts_every_block():
    image = jnp.broadcast_to(OBSERVED, (8, 4))
    samples, info = sx.inpaint(MODEL, "ddpm", image, MASK, key=KEY, steps=10, resample=3, jump=2)
    np.testing.assert_array_equal(samples[:, :2], image[:, :2])
    assert int(info.nfe) == 30 and np.all(np.isfinite(samples))
    again, _ = sx.inpaint(MODEL, "ddpm", image, MASK, key=KEY, steps=10, resample=3, jump=2)
    np.testing.assert_array_equal(samples, again)


def test_the_known_region_of_the_state_stays_at_its_noised_value():
    """With an exponential integrator the known part of the state is alpha_t image +
    sigma_t z at every grid point for a fixed z, the one of the initial state (the step is
    exact for a constant data prediction): sample() starts from sigma_T noise, so
    z = noise - alpha_T image / sigma_T."""
    image = jnp.broadcast_to(OBSERVED, (4, 4))
    known = sx.Denoiser(MODEL.network, SCHEDULE, "noise", known=sx.KnownRegion(image, MASK))
    noise = jax.random.normal(jax.random.key(3), (4, 4))
    times = sx.solvers.time_grid(SCHEDULE, 12)
    _, info = sx.sample(known, "dpm++2m", noise, grid=times, return_trajectory=True)
    for t, state in zip(times[1:], info.trajectory, strict=True):
        z = noise[:, :2] - SCHEDULE.alpha(times[0]) / SCHEDULE.sigma(times[0]) * image[:, :2]
        expected = SCHEDULE.alpha(t) * image[:, :2] + SCHEDULE.sigma(t) * z
        np.testing.assert_allclose(state[:, :2], expected, rtol=1e-4, atol=1e-5)


def test_resampling_approaches_the_exact_posterior():
    """Replacement alone is biased; RePaint's resampling lowers the distance to exact
    posterior draws, and more steps lower it further (benchmarks/inpainting_posterior.py
    has the full table)."""
    samples = 1024
    image = jnp.broadcast_to(OBSERVED, (samples, 4))
    exact = MIXTURE.posterior(OBSERVED, KNOWN).sample(jax.random.key(9), samples)

    def distance(steps, resample):
        inpainted, _ = sx.inpaint(MODEL, "ddpm", image, MASK, key=KEY, steps=steps, resample=resample, jump=2,
                                  denoise_to_zero=True)
        return sliced_wasserstein(np.asarray(inpainted)[:, 2:], exact)

    plain, few, many = distance(25, 1), distance(10, 8), distance(25, 8)
    assert many < few < plain, (plain, few, many)
    assert many < 0.6 * plain


@pytest.mark.parametrize("mask, text", [(jnp.ones(3), "broadcast"), (jnp.full(4, 0.5), "mask must hold")])
def test_bad_masks_are_named(mask, text):
    with pytest.raises(ValueError, match=text):
        sx.inpaint(MODEL, "ddpm", jnp.broadcast_to(OBSERVED, (2, 4)), mask, key=KEY, steps=4)


def test_bad_resampling_and_posterior_masks_are_named():
    image = jnp.broadcast_to(OBSERVED, (2, 4))
    with pytest.raises(ValueError, match="resample"):
        sx.inpaint(MODEL, "ddpm", image, MASK, key=KEY, steps=4, resample=0)
    with pytest.raises(ValueError, match="fixed grid"):
        sx.inpaint(MODEL, "dpm-solver-adaptive", image, MASK, key=KEY)
    with pytest.raises(ValueError, match="known"):
        MIXTURE.posterior(OBSERVED, np.ones(4, bool))
