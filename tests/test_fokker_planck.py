"""The Fokker-Planck residual vanishes for the Gaussian mixture's exact scores (the
marginals of the schedule's forward SDE) and not for a perturbed score; its Hutchinson
forms are unbiased; the denoising loss adds the weighted penalty."""

import functools

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax as sx
from samplax.divergence import Hutchinson
from samplax.models import data, losses, networks
from samplax.models.fokker_planck import fokker_planck_penalty, fokker_planck_residual

SCHEDULES = {
    "vp-linear": sx.schedules.VPLinear(),
    "ddpm": sx.schedules.VPDiscrete.ddpm_linear(),
    "edm": sx.schedules.EDM(),
    "rectified-flow": sx.schedules.RectifiedFlow(),
}


def _setup(schedule, count=32, seed=0):
    """The mixture's exact score as `score(x, t, scale)` and noisy points (x_t, t)."""
    mixture = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), sx.GaussianMixture.random(seed, 3, 3))

    def score(x, t, scale=1.0):
        noise = mixture.posterior_means(x, schedule.alpha(t), schedule.sigma(t))[1]
        return -scale * noise / schedule.sigma(t)[:, None]

    key = jax.random.key(seed)
    span = schedule.t_max - schedule.t_min
    t = jax.random.uniform(key, (count,), jnp.float64, schedule.t_min + 0.01 * span, schedule.t_max - 0.01 * span)
    noise = jax.random.normal(jax.random.fold_in(key, 1), (count, 3), jnp.float64)
    x = schedule.alpha(t)[:, None] * mixture.sample(key, count) + schedule.sigma(t)[:, None] * noise
    return score, x, t


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_exact_scores_satisfy_the_equation_and_perturbed_ones_do_not(name):
    schedule = SCHEDULES[name]
    with jax.enable_x64(True):
        score, x, t = _setup(schedule)
        def penalties(x, t):
            return [
                fokker_planck_penalty(functools.partial(score, scale=scale), schedule, x, t) for scale in (1.0, 1.1)
            ]

        exact, perturbed = jax.jit(penalties)(x, t)
        assert float(exact) < 1e-12  # rounding, and the DDPM table's kinks in t
        # A 10% error in the score gives a scaled residual of about 10% on every noise level.
        assert 3e-3 < float(perturbed) < 5e-2


def test_hutchinson_residual_and_penalty_are_unbiased():
    schedule = SCHEDULES["vp-linear"]
    with jax.enable_x64(True):
        score, x, t = _setup(schedule, count=8)

        def wrong(y, times):
            return score(y, times) + 0.3 * jnp.sin(y)

        exact_residual = fokker_planck_residual(wrong, schedule, x, t)
        estimator = Hutchinson(1)
        draws = 400
        keys = jax.random.split(jax.random.key(0), draws)

        @jax.jit
        @jax.vmap
        def estimates(key):
            probes = estimator.probes(key, x)[0][:, None]
            residual = fokker_planck_residual(wrong, schedule, x, t, estimator, probes)
            penalty = fokker_planck_penalty(wrong, schedule, x, t, divergence="hutchinson", key=key)
            return residual, penalty

        residuals, penalties = estimates(keys)
        error = np.abs(np.asarray(residuals.mean(0) - exact_residual))
        standard_error = np.asarray(residuals.std(0)) / np.sqrt(draws)
        assert np.all(error < 4 * standard_error + 1e-9)
        assert float(jnp.max(residuals.std(0))) > 0  # the estimate does vary
        exact_penalty = float(fokker_planck_penalty(wrong, schedule, x, t))
        penalties = np.asarray(penalties)
        assert abs(penalties.mean() - exact_penalty) < 4 * penalties.std() / np.sqrt(draws)


def test_denoising_loss_adds_the_weighted_penalty_and_trains():
    schedule = SCHEDULES["vp-linear"]
    model = networks.build("MLP", {"dimension": 2, "width": 16, "depth": 1}, seed=0)
    # A non-zero output layer, so the network's score is not trivially the prior's.
    model.outputs.kernel.value = 0.1 * jnp.ones_like(model.outputs.kernel.value)
    batch = {"x": jnp.asarray(data.toy("eight-gaussians", 64))}
    key = jax.random.key(3)
    graphdef, state = nnx.split(model)

    def value(weight, parameters=state, **options):
        loss = losses.denoising_loss(schedule, "noise", fokker_planck_weight=weight, **options)
        return loss(nnx.merge(graphdef, parameters), batch, key)

    plain, half, penalised = (jax.jit(value, static_argnums=0)(weight) for weight in (0.0, 1.0, 2.0))
    assert float(penalised - plain) > 0
    np.testing.assert_allclose(float(penalised - plain), 2.0 * float(half - plain), rtol=1e-4)
    def objective(parameters):
        return value(1.0, parameters, fokker_planck_divergence="hutchinson", fokker_planck_samples=8)

    subset, gradient = jax.jit(jax.value_and_grad(objective))(state)
    assert np.isfinite(float(subset))
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(gradient))
    for bad, message in (
        ({"fokker_planck_weight": -1.0}, "fokker_planck_weight"),
        ({"fokker_planck_divergence": "hutch++"}, "fokker_planck_divergence"),
        ({"fokker_planck_samples": 0}, "fokker_planck_samples"),
    ):
        with pytest.raises(ValueError, match=message):
            losses.denoising_loss(schedule, "noise", **bad)
