"""Rectified-flow training: time densities, distances, losses, diffusion-to-flow conversion,
straightness, and one round of reflow on a 2-D toy (measured)."""

import math

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax as sx
from samplax.models import data as toy_data
from samplax.models import networks, training
from samplax.models import rectified_flow as rf

SCHEDULE = sx.schedules.RectifiedFlow()


def test_u_shaped_time_follows_its_density():
    a = 4.0
    t = np.sort(np.asarray(rf.u_shaped_time(jax.random.PRNGKey(0), 20_000, a)))
    cdf = 0.5 + np.sinh(a * (t - 0.5)) / (2 * math.sinh(a / 2))  # CDF of cosh(a (t - 1/2))
    empirical = np.arange(1, t.size + 1) / t.size
    assert np.max(np.abs(cdf - empirical)) < 0.015  # Kolmogorov-Smirnov distance
    assert 0.0 <= t[0] and t[-1] <= 1.0
    # More mass near the ends than uniform: P(t < 0.1) = 0.5 - sinh(1.6) / (2 sinh 2) ~ 0.17.
    assert abs(np.mean(t < 0.1) - (0.5 - math.sinh(1.6) / (2 * math.sinh(2.0)))) < 0.01
    with pytest.raises(ValueError, match="a must be positive"):
        rf.u_shaped_time(jax.random.PRNGKey(0), 4, -1.0)


def test_pseudo_huber():
    prediction = jnp.zeros((2, 4, 4, 3))
    target = jnp.stack([jnp.full((4, 4, 3), 3e-5), jnp.full((4, 4, 3), 10.0)])
    c = 0.00054 * math.sqrt(48)
    distance = np.asarray(rf.pseudo_huber(prediction, target))
    np.testing.assert_allclose(distance[1], math.sqrt(48 * 100 + c**2) - c, rtol=1e-6)
    # Quadratic for small errors: ||d||^2 / (2 c).
    np.testing.assert_allclose(distance[0], 48 * 9e-10 / (2 * c), rtol=1e-2)


def test_losses_vanish_for_the_coupled_straight_velocity():
    """On couplings (x0, noise) the line through each pair has velocity noise - x0, which
    the velocity (noise - x_t) / (1 - t) recovers from x_t: every reflow and distillation
    loss is zero for it. Flow matching draws fresh noise, so its loss is not."""
    x0 = jax.random.normal(jax.random.PRNGKey(0), (64, 3))
    noise = jax.random.normal(jax.random.PRNGKey(1), (64, 3))
    batch = {"x": x0, "noise": noise}

    def straight(x, t):
        return (noise - x) / jnp.maximum(1.0 - t, 1e-6)[:, None]

    for density in ("uniform", "logit-normal", "u-shaped"):
        for distance in ("squared", "pseudo-huber"):
            assert float(rf.reflow_loss(density, distance)(straight, batch, jax.random.PRNGKey(2))) < 1e-3
    # Distillation trains at t = 1, where x_t = noise; there the line is (x_t - x0) / t.
    def from_data(x, t):
        return (x - x0) / t[:, None]

    assert float(rf.distillation_loss(2)(from_data, batch, jax.random.PRNGKey(2))) < 1e-10
    assert float(rf.rectified_flow_loss("u-shaped")(straight, batch, jax.random.PRNGKey(2))) > 0.5
    with pytest.raises(ValueError, match="time_density"):
        rf.rectified_flow_loss("beta")
    with pytest.raises(ValueError, match="distance"):
        rf.reflow_loss(distance="l1")
    with pytest.raises(ValueError, match="k must be"):
        rf.distillation_loss(0)


def test_distillation_trains_only_at_the_euler_times():
    seen = []

    def record(x, t):
        seen.append(t)
        return jnp.zeros_like(x)

    rf.distillation_loss(4)(record, {"x": jnp.zeros((256, 2)), "noise": jnp.zeros((256, 2))}, jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.unique(np.asarray(seen[0])), [0.25, 0.5, 0.75, 1.0], atol=1e-7)


def test_velocity_from_diffusion_is_the_flow_velocity():
    mixture = sx.GaussianMixture.random(0, 3, 2)
    diffusion = mixture.denoiser(sx.schedules.VPCosine(), "noise")
    flow = sx.Denoiser(rf.velocity_from_diffusion(diffusion), SCHEDULE, prediction="velocity")
    exact = mixture.denoiser(SCHEDULE, "velocity")
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 3))
    for t in (0.1, 0.5, 0.9):
        np.testing.assert_allclose(flow.velocity(x, t), exact.velocity(x, t), atol=2e-4)


def test_straightness_is_zero_for_straight_flows_and_positive_otherwise():
    noise = jax.random.normal(jax.random.PRNGKey(0), (128, 2))
    shift = jnp.array([1.0, -2.0])
    assert float(rf.straightness(lambda x, t: jnp.broadcast_to(-shift, x.shape), noise, 4)) < 1e-10
    curved = sx.GaussianMixture.random(0, 2, 4, (0.05, 0.1)).denoiser(SCHEDULE, "velocity")
    value = float(rf.straightness(lambda x, t: curved.velocity(x, jnp.maximum(t, 1e-3)), noise, 16))
    assert value > 0.05


def test_one_round_of_reflow_straightens_a_toy_flow():
    data = toy_data.toy("eight-gaussians", 1024, seed=0)
    network = networks.MLP(dimension=2, width=32, depth=2, time_features=16, rngs=nnx.Rngs(0))
    config = training.TrainConfig(
        steps=150, batch_size=128, learning_rate=3e-3, warmup_steps=10, ema_decay=0.9, checkpoint_every=0
    )
    first = training.train(network, rf.rectified_flow_loss(), {"x": data}, config, progress=False).ema
    first_velocity = networks.network_function(nnx.clone(first))
    noise = jax.random.normal(jax.random.PRNGKey(5), (256, 2))
    before = float(rf.straightness(first_velocity, noise, 6))
    couplings = rf.reflow_couplings(first_velocity, jax.random.normal(jax.random.PRNGKey(7), (1024, 2)), 6)
    config = training.TrainConfig(
        steps=100, batch_size=128, learning_rate=1e-3, warmup_steps=10, ema_decay=0.9, checkpoint_every=0
    )
    second = training.train(first, rf.reflow_loss(), couplings, config, progress=False).ema
    after = float(rf.straightness(networks.network_function(second), noise, 6))
    print(f"straightness before reflow {before:.4f}, after {after:.4f}")
    assert after < 0.25 * before, (before, after)
