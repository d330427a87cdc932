"""Losses: an oracle network that knows the single training point reaches zero loss for
every prediction type on several schedules, so each regression target is the right one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplax.models import losses
from samplax.schedules import EDM, RectifiedFlow, VPCosine, VPDiscrete

POINT = jnp.array([0.5, -1.0, 2.0])


def _oracle(schedule, prediction, time_input, shift=0.0):
    """The exact prediction when the data is the single point POINT (plus `shift`)."""

    def model(x, network_t):
        if time_input == "discrete":
            t = (network_t + 1.0) / schedule.num_steps
        else:
            t = network_t
        t = t[:, None]
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        x0 = jnp.broadcast_to(POINT, x.shape)
        noise = (x - alpha * x0) / sigma
        d_alpha, d_sigma = schedule.alpha_sigma_derivatives(t)
        out = {
            "noise": noise,
            "data": x0,
            "v": alpha * noise - sigma * x0,
            "velocity": d_alpha * x0 + d_sigma * noise,
            "score": -noise / sigma,
        }[prediction]
        return out + shift

    return model


CASES = [
    (VPDiscrete.ddpm_linear(), "noise", "discrete"),
    (VPDiscrete.ddpm_linear(), "v", "discrete"),
    (VPCosine(), "data", "continuous"),
    (VPCosine(), "score", "continuous"),
    (VPCosine(), "velocity", "continuous"),
    (EDM(), "data", "continuous"),
    (RectifiedFlow(), "velocity", "continuous"),
    (RectifiedFlow(), "data", "continuous"),
]


@pytest.mark.parametrize("schedule, prediction, time_input", CASES)
def test_oracle_reaches_zero_loss(schedule, prediction, time_input):
    loss = losses.denoising_loss(schedule, prediction, time_input)
    batch = {"x": jnp.broadcast_to(POINT, (256, 3))}
    key = jax.random.PRNGKey(1)
    exact = loss(_oracle(schedule, prediction, time_input), batch, key)
    wrong = loss(_oracle(schedule, prediction, time_input, shift=0.1), batch, key)
    assert float(exact) < 1e-6
    if prediction == "score":  # the score loss is weighted by sigma^2
        assert float(wrong) > 1e-4
    else:
        assert float(wrong) == pytest.approx(0.01, rel=1e-3)


def test_flow_matching_oracle_and_densities():
    batch = {"x": jnp.broadcast_to(POINT, (512, 3))}
    def oracle(x, t):  # noise - x0 along x_t = (1 - t) x0 + t noise
        return (x - POINT) / t[:, None]

    for density in ("uniform", "logit-normal"):
        loss = losses.flow_matching_loss(density)
        assert float(loss(oracle, batch, jax.random.PRNGKey(0))) < 1e-6
        shifted = loss(lambda x, t: oracle(x, t) + 0.2, batch, jax.random.PRNGKey(0))
        assert float(shifted) == pytest.approx(0.04, rel=1e-3)
    t = losses.logit_normal_time(jax.random.PRNGKey(0), 20_000)
    assert 0.0 < float(t.min()) and float(t.max()) < 1.0
    assert float(jnp.median(t)) == pytest.approx(0.5, abs=0.02)


def test_label_dropout_rate_and_null_label():
    # The network outputs its label; the target (data) is 0, so the loss is E[label^2].
    loss = losses.denoising_loss(VPCosine(), "data", label_dropout=0.25, null_label=10)
    def model(x, t, label):
        return jnp.broadcast_to(label[:, None].astype(x.dtype), x.shape)

    batch = {"x": jnp.zeros((20_000, 1)), "label": jnp.ones((20_000,), jnp.int32)}
    value = float(loss(model, batch, jax.random.PRNGKey(3)))
    fraction = (value - 1.0) / (100.0 - 1.0)
    assert fraction == pytest.approx(0.25, abs=0.01)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="prediction"):
        losses.denoising_loss(VPCosine(), "eps")
    with pytest.raises(ValueError, match="discrete"):
        losses.denoising_loss(VPCosine(), "noise", "discrete")
    with pytest.raises(ValueError, match="time_density"):
        losses.flow_matching_loss("u-shaped")
    with pytest.raises(ValueError, match="null_label"):
        loss = losses.denoising_loss(VPCosine(), "data", label_dropout=0.1)
        loss(lambda x, t, label: x, {"x": jnp.zeros((4, 1)), "label": jnp.zeros(4, jnp.int32)}, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="label_dropout"):
        losses.flow_matching_loss(label_dropout=1.5)
    assert np.isfinite(float(losses.squared_error(jnp.ones((2, 3)), jnp.zeros((2, 3))).sum()))
