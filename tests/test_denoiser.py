import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax as sx
from samplax import schedules

SCHEDULES = [schedules.VPLinear, schedules.VPCosine, schedules.EDM, schedules.RectifiedFlow]


@pytest.mark.parametrize("make", SCHEDULES, ids=lambda make: make.__name__)
@pytest.mark.parametrize("prediction", ["noise", "data", "v", "velocity", "score"])
def test_every_prediction_converts_to_the_exact_posterior_mean(x64, make, prediction):
    schedule = make()
    if prediction == "v" and make is schedules.RectifiedFlow:
        pytest.skip("v-prediction is for diffusion schedules")
    mixture = sx.GaussianMixture.random(0, 3, 4, std_range=(0.3, 0.8))
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
    t = 0.4 if make is not schedules.EDM else 2.0
    model = mixture.denoiser(schedule, prediction)
    exact = mixture.data_prediction(x, schedule.alpha(t), schedule.sigma(t))
    np.testing.assert_allclose(model.data(x, t), exact, rtol=1e-9, atol=1e-10)
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    np.testing.assert_allclose(model.noise(x, t), (x - alpha * exact) / sigma, rtol=1e-9, atol=1e-10)
    d_alpha, d_sigma = schedule.alpha_sigma_derivatives(jnp.asarray(t))
    velocity = d_alpha * exact + d_sigma * (x - alpha * exact) / sigma
    np.testing.assert_allclose(model.velocity(x, t), velocity, rtol=1e-9, atol=1e-10)


def test_time_inputs():
    schedule = schedules.VPDiscrete.ddpm_linear()
    seen = {}

    def network(x, t):
        seen["t"] = t
        return jnp.zeros_like(x)

    x = jnp.ones((2, 3))
    sx.Denoiser(network, schedule, "noise", time_input="discrete").noise(x, 0.5)
    np.testing.assert_allclose(seen["t"], [499.0, 499.0], atol=1e-3)
    sx.Denoiser(network, schedule, "noise", time_input="sigma").noise(x, 0.5)
    np.testing.assert_allclose(seen["t"], schedule.sigma(0.5), rtol=1e-6)
    sx.Denoiser(network, schedules.RectifiedFlow(), "velocity", time_input="reversed").velocity(x, 0.25)
    np.testing.assert_allclose(seen["t"], [0.75, 0.75])


def test_classifier_free_guidance_is_one_batched_call():
    calls = []

    def network(x, t, label):
        calls.append(x.shape[0])
        return x * label[:, None].astype(x.dtype)

    x = jnp.ones((3, 2))
    model = sx.Denoiser(network, schedules.VPLinear(), "noise", condition={"label": jnp.array([2, 2, 2])})
    guided = sx.classifier_free_guidance(model, model.condition, {"label": jnp.array([1, 1, 1])}, scale=3.0)
    out = guided.output(x, 0.5)
    assert calls[-1] == 6, "guidance must evaluate conditional and unconditional in one call"
    np.testing.assert_allclose(out, 1.0 + 3.0 * (2.0 - 1.0))


def test_dynamic_thresholding_clips_per_sample():
    def network(x, t):
        return x  # data prediction equal to the input

    model = sx.Denoiser(network, schedules.VPLinear(), "data", threshold_ratio=0.5)
    x = jnp.array([[0.5, -0.2, 0.1, 0.3], [4.0, -3.0, 2.0, 1.0]])
    data = model.data(x, 0.5)
    np.testing.assert_allclose(data[0], x[0])  # the bound never drops below threshold_max = 1
    bound = jnp.quantile(jnp.abs(x[1]), 0.5)
    np.testing.assert_allclose(data[1], jnp.clip(x[1], -bound, bound) / bound, rtol=1e-6)
    assert float(jnp.max(jnp.abs(data))) <= 1.0 + 1e-6


def test_bad_arguments_are_named():
    def network(x, t):
        return x

    with pytest.raises(ValueError, match="prediction"):
        sx.Denoiser(network, schedules.VPLinear(), "epsilon")
    with pytest.raises(ValueError, match="time_input"):
        sx.Denoiser(network, schedules.VPLinear(), "noise", time_input="index")
    with pytest.raises(ValueError, match="VPDiscrete"):
        sx.Denoiser(network, schedules.VPLinear(), "noise", time_input="discrete")
    with pytest.raises(TypeError, match="callable"):
        sx.Denoiser(3, schedules.VPLinear(), "noise")
    with pytest.raises(ValueError, match="same keys"):
        sx.Denoiser(network, schedules.VPLinear(), condition={"label": 1}, unconditional={"text": 0})
