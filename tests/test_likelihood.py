"""log_likelihood and bits_per_dim against the Gaussian mixture's closed-form density.

The probability-flow ODE of the exact denoiser transports the mixture's marginal at one
noise level onto its marginal at another, so with that marginal as the prior the computed
log p must equal the closed form at t_end (up to the solver's tolerance)."""

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax as sx
from samplax.samplers.likelihood import ExactDivergence, Hutchinson, bits_per_dim, log_likelihood

DIMENSION = 4
SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "likelihood.py"


@pytest.fixture(scope="module")
def mixture():
    return sx.GaussianMixture.random(0, DIMENSION, 3)


def _marginal(mixture, schedule, t, key, count):
    """Draws of x_t and the closed-form log p_t at them."""
    x0 = mixture.sample(key, count)
    x = schedule.alpha(t) * x0 + schedule.sigma(t) * jax.random.normal(jax.random.fold_in(key, 1), x0.shape)
    return x, mixture.log_density(x, schedule.alpha(t), schedule.sigma(t))


@pytest.mark.parametrize(
    "schedule, prediction",
    [(sx.schedules.VPLinear(), "noise"), (sx.schedules.EDM(), "data"), (sx.schedules.RectifiedFlow(), "velocity")],
    ids=["vp-noise", "edm-data", "rectified-flow-velocity"],
)
def test_exact_divergence_matches_the_closed_form_density(mixture, schedule, prediction):
    with jax.enable_x64(True):
        mix = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), mixture)
        t_start, t_end = schedule.t_max, schedule.t_min
        x, exact = _marginal(mix, schedule, t_end, jax.random.key(0), 6)
        alpha, sigma = schedule.alpha(t_start), schedule.sigma(t_start)

        def prior(z):
            return mix.log_density(z[None], alpha, sigma)[0]

        model = mix.denoiser(schedule, prediction)
        log_p, info = log_likelihood(model, x, prior=prior, rtol=1e-8, atol=1e-8)
        assert np.max(np.abs(np.asarray(log_p - exact))) / DIMENSION < 1e-4
        assert info.nfe.shape == (6,) and bool(jnp.all(info.nfe > 10))
        np.testing.assert_allclose(info.prior_log_density + info.divergence_integral, log_p)
        # The latent is where the ODE takes the data: the mixture's own flow map.
        reference = mix.flow_map(np.asarray(x[:2]), schedule, t_end, t_start)
        np.testing.assert_allclose(np.asarray(info.latent[:2]), reference, atol=1e-5)


def test_hutchinson_is_unbiased_and_its_variance_falls_as_one_over_probes(mixture):
    schedule = sx.schedules.VPLinear()
    model = mixture.denoiser(schedule, "noise")
    point, exact = _marginal(mixture, schedule, schedule.t_min, jax.random.key(2), 1)
    alpha, sigma = schedule.alpha(schedule.t_max), schedule.sigma(schedule.t_max)

    def prior(z):
        return mixture.log_density(z[None], alpha, sigma)[0]

    repeats = 256
    x = jnp.repeat(point, repeats, axis=0)  # one point, a fresh probe per row
    estimates = {}
    for distribution, probes in (("rademacher", 1), ("rademacher", 4), ("gaussian", 1)):
        divergence = Hutchinson(probes, distribution)
        log_p, _ = log_likelihood(model, x, divergence=divergence, key=jax.random.key(probes), prior=prior)
        estimates[distribution, probes] = values = np.asarray(log_p)
        standard_error = values.std(ddof=1) / np.sqrt(repeats)
        assert abs(values.mean() - float(exact[0])) < 3 * standard_error, (distribution, probes)
    ratio = estimates["rademacher", 1].var(ddof=1) / estimates["rademacher", 4].var(ddof=1)
    assert 2.8 < ratio < 5.7, ratio  # 4, within the spread of 256 draws
    # Rademacher probes have the smaller variance (Hutchinson 1989).
    assert estimates["rademacher", 1].var() < estimates["gaussian", 1].var()


def test_nfe_counts_every_evaluation_and_jit_and_vmap_work(mixture):
    schedule = sx.schedules.EDM()
    model = mixture.denoiser(schedule, "data")
    calls = []

    def counting(x, t):
        jax.debug.callback(lambda _: calls.append(1), t)
        return model.network(x, t)

    counted = sx.Denoiser(counting, schedule, "data")
    x, _ = _marginal(mixture, schedule, schedule.t_min, jax.random.key(3), 3)
    log_p, info = log_likelihood(counted, x, divergence=ExactDivergence(chunk_size=3))
    jax.block_until_ready(log_p)
    # One network call per vector-field evaluation; the batch runs until its last sample
    # ends, and a vmapped callback runs once per sample.
    assert len(calls) == x.shape[0] * int(jnp.max(info.nfe)) and len(set(np.asarray(info.nfe))) > 1
    mapped = jax.jit(jax.vmap(lambda points: log_likelihood(model, points)[0]))(x[:, None])
    np.testing.assert_allclose(mapped[:, 0], log_p, rtol=1e-4, atol=1e-4)


def test_bits_per_dim_uses_the_centred_dequantisation_and_its_offset():
    """For a wide Gaussian the density barely changes across a dequantisation cell, so
    bits/dim is -log2 p at the cell centre per dimension plus log2(levels) - 1."""
    levels, shape = 256, (5, 2, 2, 1)
    mixture = sx.GaussianMixture(jnp.zeros((1, 4)), jnp.array([0.6]), jnp.array([1.0]))
    schedule = sx.schedules.RectifiedFlow()
    network = mixture.denoiser(schedule, "velocity").network
    model = sx.Denoiser(lambda x, t: network(x.reshape(x.shape[0], -1), t).reshape(x.shape), schedule, "velocity")
    images = jax.random.randint(jax.random.key(4), shape, 0, levels)
    bits, info = bits_per_dim(model, images, key=jax.random.key(5), levels=levels)
    centres = (2.0 * (images + 0.5) / levels - 1.0).reshape(shape[0], -1)
    expected = -mixture.log_density(centres, 1.0, 0.0) / (4 * np.log(2.0)) + 7.0
    np.testing.assert_allclose(bits, expected, atol=0.01)
    assert info.latent.shape == shape


def test_bad_inputs_are_refused_by_name(mixture):
    model = mixture.denoiser(sx.schedules.RectifiedFlow(), "data")
    x = jnp.zeros((2, DIMENSION))
    with pytest.raises(ValueError, match="t_end=0.0 has sigma = 0"):
        log_likelihood(model, x)
    with pytest.raises(ValueError, match="pass key="):
        log_likelihood(model, x, t_end=1e-3, divergence=Hutchinson())
    with pytest.raises(ValueError, match="draws nothing"):
        log_likelihood(model, x, t_end=1e-3, key=jax.random.key(0))
    with pytest.raises(TypeError, match="solver must be a diffrax"):
        log_likelihood(model, x, t_end=1e-3, solver="tsit5")
    with pytest.raises(ValueError, match="NaN or inf"):
        log_likelihood(model, x.at[0, 0].set(jnp.nan), t_end=1e-3)
    with pytest.raises(ValueError, match="probes_per_sample"):
        Hutchinson(0)
    with pytest.raises(TypeError, match="images must hold integers"):
        bits_per_dim(model, x, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"must lie in \[0, 256\)"):
        bits_per_dim(model, jnp.full((2, 4), 256), key=jax.random.key(0))


def test_likelihood_script_reports_bits_per_dim_of_a_shipped_model(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("likelihood_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "bpd.json"
    argv = ["digits-flow", "--limit", "3", "--rtol", "1e-2", "--atol", "1e-2", "--json", str(out)]
    assert script.main(argv) == 0
    result = json.loads(out.read_text())
    # 17 grey levels: a model no better than uniform has log2(17) = 4.09 bits per pixel.
    assert 0.0 < result["bits_per_dim"] < 4.09 and result["images"] == 3 and result["mean_nfe"] > 2
    with pytest.raises(SystemExit):
        script.main(argv)  # never overwrites a result
    assert "exists" in capsys.readouterr().err
