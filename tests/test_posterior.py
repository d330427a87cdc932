"""Posterior guidance (samplax.posterior_guidance, gaussian_observation): exact where the
approximation is exact, and the identity when the likelihood is flat."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax as sx

SCHEDULE = sx.schedules.VPLinear()
MASK = jnp.array([1.0, 1.0, 0.0])
NOISE_STD = 0.3


def test_a_flat_likelihood_changes_nothing():
    mixture = sx.GaussianMixture.random(0, 3, 3)
    model = mixture.denoiser(SCHEDULE, "noise")
    noise = jax.random.normal(jax.random.key(0), (4, 3))
    flat = sx.posterior_guidance(model, lambda data, alpha, sigma: jnp.zeros(data.shape[0]))
    np.testing.assert_allclose(sx.sample(flat, "dpm++2m", noise, steps=6)[0],
                               sx.sample(model, "dpm++2m", noise, steps=6)[0], rtol=1e-6)


# DDPM's ancestral steps lose variance at few steps (they ignore the spread of x0 given
# x_t), so it is run with more.
@pytest.mark.parametrize("solver, steps, options, through_network", [
    ("dpm++2m", 40, {}, True), ("ddpm", 400, {"key": jax.random.key(4)}, True), ("dpm++2m", 40, {}, False),
])
def test_inflated_observation_samples_the_exact_posterior_of_a_unit_gaussian(solver, steps, options,
                                                                             through_network):
    """For a N(m, I) prior, x0 given x_t is N(D(x_t), r^2 I) with r^2 = sigma^2 / (alpha^2 +
    sigma^2) exactly, so gaussian_observation's likelihood (inflate=1) is p(y | x_t) itself
    and the guided solve samples the exact posterior: known coordinates
    N((y / s_y^2 + m) / (1 / s_y^2 + 1), 1 / (1 / s_y^2 + 1)), the unknown one N(m, 1).
    Gradient skipping is exact too: its Jacobian alpha / (alpha^2 + sigma^2) is this prior's."""
    mean = jnp.array([0.5, -0.3, 0.2])
    prior = sx.GaussianMixture(mean[None], jnp.ones(1), jnp.ones(1))
    samples = 4096
    observed = jnp.broadcast_to(jnp.array([1.2, 0.4, 0.0]), (samples, 3))
    guided = sx.posterior_guidance(prior.denoiser(SCHEDULE, "noise"),
                                   sx.gaussian_observation(lambda data: data * MASK, observed, NOISE_STD),
                                   through_network=through_network)
    noise = jax.random.normal(jax.random.key(1), (samples, 3))
    result, _ = sx.sample(guided, solver, noise, steps=steps, denoise_to_zero=True, **options)
    precision = 1.0 / NOISE_STD**2 + 1.0
    expected_mean = jnp.array([(1.2 / NOISE_STD**2 + 0.5) / precision, (0.4 / NOISE_STD**2 - 0.3) / precision, 0.2])
    expected_std = jnp.array([precision**-0.5, precision**-0.5, 1.0])
    standard_error = expected_std / np.sqrt(samples)
    np.testing.assert_array_less(jnp.abs(jnp.mean(result, 0) - expected_mean), 4 * standard_error + 0.01)
    np.testing.assert_allclose(jnp.std(result, 0), expected_std, rtol=0.05)


def test_dps_without_inflation_is_biased_on_the_same_problem():
    """inflate=0 is DPS's approximation p(y | x_t) ~ N(y; A D, s_y^2 I): on the unit
    Gaussian it overweights the observation (the known coordinates' spread collapses)."""
    prior = sx.GaussianMixture(jnp.zeros((1, 3)), jnp.ones(1), jnp.ones(1))
    observed = jnp.broadcast_to(jnp.array([1.2, 0.4, 0.0]), (2048, 3))
    guided = sx.posterior_guidance(prior.denoiser(SCHEDULE, "noise"),
                                   sx.gaussian_observation(lambda data: data * MASK, observed, NOISE_STD, inflate=0.0))
    result, _ = sx.sample(guided, "dpm++2m", jax.random.normal(jax.random.key(1), (2048, 3)), steps=40,
                          denoise_to_zero=True)
    exact_std = (1.0 / NOISE_STD**2 + 1.0) ** -0.5
    assert float(jnp.std(result[:, 0])) < 0.8 * exact_std


@pytest.mark.parametrize("call, text", [
    (lambda: sx.gaussian_observation(3, jnp.zeros((2, 3)), 0.1), "operator"),
    (lambda: sx.gaussian_observation(lambda d: d, jnp.zeros((2, 3)), 0.0), "noise_std"),
    (lambda: sx.gaussian_observation(lambda d: d, jnp.zeros((2, 3)), 0.1, inflate=-1.0), "inflate"),
    (lambda: sx.posterior_guidance(sx.GaussianMixture.random(0, 3, 2).denoiser(SCHEDULE), "loglik"), "log_likelihood"),
])
def test_bad_posterior_arguments_are_named(call, text):
    with pytest.raises((TypeError, ValueError), match=text):
        call()


TARGET = jnp.array([[0.3, -0.1, 0.2]])


def _pull_towards_target(data, alpha, sigma):
    return -jnp.sum((data - TARGET) ** 2, axis=1)


@pytest.mark.parametrize("through_network", [True, False])
def test_the_guided_predictions_add_the_gradient_to_the_score(through_network):
    """data' = D + s sigma^2 / alpha g and noise' = eps - s sigma g, where g is the
    log-likelihood's gradient through the network (J^T grad) or, skipping it (FlowChef),
    alpha / (alpha^2 + sigma^2) times the gradient with respect to D; on a rectified flow
    and a diffusion schedule."""
    for schedule, t in ((sx.schedules.RectifiedFlow(), 0.6), (SCHEDULE, 0.4)):
        model = sx.GaussianMixture.random(1, 3, 3).denoiser(schedule, "velocity" if schedule.is_flow else "noise")
        guided = sx.posterior_guidance(model, _pull_towards_target, 0.7, through_network=through_network)
        x = jax.random.normal(jax.random.key(2), (2, 3))
        data, pullback = jax.vjp(lambda x, model=model, t=t: model.data(x, t), x)
        gradient = -2.0 * (data - TARGET)
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        gradient = pullback(gradient)[0] if through_network else alpha / (alpha**2 + sigma**2) * gradient
        np.testing.assert_allclose(guided.data(x, t), data + 0.7 * sigma**2 / alpha * gradient, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(guided.noise(x, t), model.noise(x, t) - 0.7 * sigma * gradient, rtol=1e-5,
                                   atol=1e-6)


def _label_log_probability(classifier, label, data, alpha, sigma):
    return jax.nn.log_softmax(classifier(data))[:, label]


def test_classifier_guidance_with_the_shipped_digits_classifier():
    """Posterior guidance by the digits classifier's log p(label | D) makes unconditional
    digits-flow samples mostly of that label."""
    from samplax.metrics import label_accuracy
    from samplax.models import network_function, pretrained

    model = pretrained.denoiser("digits-flow", labels=None)
    classifier = network_function(pretrained.load("digits-classifier")[0])
    noise = jax.random.normal(jax.random.key(0), (64, 8, 8, 1))
    plain, _ = sx.sample(model, "euler", noise, steps=10)
    guided = sx.posterior_guidance(model, jax.tree_util.Partial(_label_log_probability, classifier, 7), 0.5)
    result, _ = sx.sample(guided, "euler", noise, steps=10)
    sevens = np.full(64, 7)
    assert label_accuracy(result, sevens) > 0.6 > 0.3 > label_accuracy(plain, sevens)
