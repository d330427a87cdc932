"""Guidance rules (samplax.samplers.guidance): what each reduces to at its limits, that
each acts in the prediction it names, and interval guidance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax as sx
from samplax.predictions import PREDICTIONS, data_and_noise, output_from_data_and_noise

MIXTURE = sx.GaussianMixture.random(0, 3, 3)
SCHEDULE = sx.schedules.VPLinear()
NOISE = jax.random.normal(jax.random.key(1), (4, 3))
SHIFT = jnp.array([[0.4, -0.2, 0.1]])


def _guided(prediction="noise", guidance=None, scale=3.0, schedule=SCHEDULE):
    """The mixture's exact `prediction`, with a condition that adds a data-space shift
    scaled by the noise level (so conditional and unconditional differ at every t)."""
    base = MIXTURE.denoiser(schedule, "data")

    def network(x, t, strength):
        alpha, sigma = schedule.alpha(t)[:, None], schedule.sigma(t)[:, None]
        data = base.network(x, t) + strength[:, None] * SHIFT * (1.0 + 0.5 * jnp.tanh(x))
        noise = (x - alpha * data) / sigma
        d_alpha, d_sigma = (value[:, None] for value in schedule.alpha_sigma_derivatives(t))
        return output_from_data_and_noise(prediction, x, data, noise, alpha[:, 0], sigma[:, 0], d_alpha[:, 0],
                                          d_sigma[:, 0])

    batch = NOISE.shape[0]
    model = sx.Denoiser(network, schedule, prediction, condition={"strength": jnp.ones(batch)})
    return sx.classifier_free_guidance(model, {"strength": jnp.ones(batch)}, {"strength": jnp.zeros(batch)}, scale,
                                       guidance)


def _sample(model, solver="dpm++2m", **options):
    return sx.sample(model, solver, NOISE, steps=8, **options)[0]


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_output_from_data_and_noise_inverts_data_and_noise(prediction):
    x, out = jax.random.normal(jax.random.key(2), (2, 4, 3))
    alpha, sigma = jnp.array([0.8, 0.6, 0.3, 0.95]), jnp.array([0.6, 0.8, 0.95, 0.3])
    d_alpha, d_sigma = -0.5 * sigma, 0.5 * alpha
    data, noise = data_and_noise(prediction, x, out, alpha, sigma, d_alpha, d_sigma)
    back = output_from_data_and_noise(prediction, x, data, noise, alpha, sigma, d_alpha, d_sigma)
    np.testing.assert_allclose(back, out, rtol=1e-5, atol=1e-6)


def test_cfg_rescale_limits():
    conditional, unconditional = jax.random.normal(jax.random.key(3), (2, 5, 6))
    plain = unconditional + 4.0 * (conditional - unconditional)
    np.testing.assert_allclose(sx.CFG(rescale=0.0).combine(conditional, unconditional, 4.0), plain, rtol=1e-6)
    full = sx.CFG(rescale=1.0).combine(conditional, unconditional, 4.0)
    np.testing.assert_allclose(jnp.std(full, axis=1), jnp.std(conditional, axis=1), rtol=1e-5)
    # Rescaling changes the size of the guided prediction, not its direction.
    np.testing.assert_allclose(full / jnp.linalg.norm(full, axis=1, keepdims=True),
                               plain / jnp.linalg.norm(plain, axis=1, keepdims=True), rtol=1e-5)


def test_apg_projects_caps_and_reduces_to_cfg():
    conditional, unconditional = jax.random.normal(jax.random.key(4), (2, 5, 6))
    plain = unconditional + 4.0 * (conditional - unconditional)
    np.testing.assert_allclose(sx.APG(parallel=1.0).combine(conditional, unconditional, 4.0), plain, rtol=1e-5)
    orthogonal = sx.APG(parallel=0.0).combine(conditional, unconditional, 4.0) - conditional
    np.testing.assert_allclose(jnp.sum(orthogonal * conditional, axis=1), 0.0, atol=1e-5)
    capped = sx.APG(parallel=1.0, norm_threshold=0.5).combine(conditional, unconditional, 4.0) - conditional
    np.testing.assert_allclose(jnp.linalg.norm(capped, axis=1), 3.0 * 0.5, rtol=1e-5)


def test_plain_guidance_is_the_same_in_every_prediction():
    reference = _sample(_guided("noise"))
    for prediction in ("data", "v", "velocity"):
        np.testing.assert_allclose(_sample(_guided(prediction)), reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("guidance", [sx.APG(space="data", norm_threshold=2.0), sx.CFG(rescale=0.7, space="noise")],
                         ids=["apg-data", "rescale-noise"])
def test_a_rule_acts_in_the_prediction_it_names_whatever_the_network_predicts(guidance):
    """The same rule on networks predicting noise, data, v and velocity gives one answer,
    and a different one from plain guidance."""
    reference = _sample(_guided("noise", guidance))
    assert float(jnp.max(jnp.abs(reference - _sample(_guided("noise"))))) > 1e-2
    for prediction in ("data", "v", "velocity"):
        np.testing.assert_allclose(_sample(_guided(prediction, guidance)), reference, rtol=1e-4, atol=1e-4)


def test_interval_guidance_limits():
    plain = _sample(_guided())
    everywhere = _sample(_guided(guidance=sx.CFG(interval=(0.0, float("inf")))))
    np.testing.assert_allclose(everywhere, plain, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="never act"):  # no noise level of the grid lies in it
        _sample(_guided(guidance=sx.CFG(interval=(1e3, 1e4))))
    conditional_only = _sample(_guided(scale=1.0))
    part = _sample(_guided(guidance=sx.CFG(interval=(0.2, 2.0))))
    assert float(jnp.min(jnp.abs(part - plain))) > 0 and float(jnp.min(jnp.abs(part - conditional_only))) > 0


def test_interval_guidance_matches_a_manual_switch_per_step():
    """DDIM with guidance inside [0.2, 2] in sigma / alpha equals DDIM where each step
    uses guidance scale 3 or 1 by that rule, stepped by hand."""
    times = sx.solvers.time_grid(SCHEDULE, 8, "logsnr")
    guided, plain = _guided(), _guided(scale=1.0)
    x = SCHEDULE.sigma(times[0]) * NOISE
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        ratio = float(SCHEDULE.sigma(t) / SCHEDULE.alpha(t))
        data = (guided if 0.2 <= ratio <= 2.0 else plain).data(x, t)
        noise = (x - SCHEDULE.alpha(t) * data) / SCHEDULE.sigma(t)
        x = SCHEDULE.alpha(t_next) * data + SCHEDULE.sigma(t_next) * noise
    result = _sample(_guided(guidance=sx.CFG(interval=(0.2, 2.0))), "ddim")
    np.testing.assert_allclose(result, x, rtol=1e-4, atol=1e-5)


def test_interval_guidance_with_per_sample_noise_levels():
    """The adaptive DPM-Solver steps each sample at its own noise level (rounding-level
    differences can change its accepted steps, hence the tolerance of the solve)."""
    plain = _sample_adaptive(_guided())
    everywhere = _sample_adaptive(_guided(guidance=sx.CFG(interval=(0.0, float("inf")))))
    np.testing.assert_allclose(everywhere, plain, atol=1e-3)
    nowhere = _sample_adaptive(_guided(guidance=sx.CFG(interval=(1e3, 1e4))))
    np.testing.assert_allclose(nowhere, _sample_adaptive(_guided(scale=1.0)), atol=1e-3)


def _sample_adaptive(model):
    return sx.sample(model, sx.solvers.AdaptiveDPMSolver(rtol=1e-5, atol=1e-5), NOISE)[0]


@pytest.mark.parametrize("make, text", [
    (lambda: sx.CFG(rescale=1.5), "rescale"),
    (lambda: sx.CFG(rescale="0.7"), "rescale"),
    (lambda: sx.CFG(space="latent"), "space"),
    (lambda: sx.CFG(interval=(2.0, 1.0)), "interval"),
    (lambda: sx.CFG(interval=[0.1, 1.0]), "interval"),
    (lambda: sx.APG(norm_threshold=0.0), "norm_threshold"),
    (lambda: sx.APG(parallel=float("nan")), "parallel"),
    (lambda: sx.Denoiser(lambda x, t: x, SCHEDULE, guidance="apg"), "guidance"),
])
def test_bad_guidance_settings_are_named(make, text):
    with pytest.raises((TypeError, ValueError), match=text):
        make()
