"""The stochastic samplers against the exact Gaussian mixture: in distribution with many
steps, strong convergence on a fixed Brownian path, the eta = 0 and churn = 0
identities, the noise sources (Brownian paths stable across step counts, batch
independence), jit / vmap / grad, and the errors of the key and noise-source options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax as sx
from samplax.solvers.ancestral import AncestralSampler
from samplax.solvers.edm import EDMChurn, Restart
from samplax.solvers.sa_solver import SASolver
from samplax.solvers.score_sde import PredictorCorrector
from samplax.solvers.sde_dpm_solver import SDEDPMSolver

DIMENSION, SAMPLES, STEPS = 32, 2048, 800
# Tolerances, in standard errors of the statistic on SAMPLES exact draws: component
# occupancy, the largest of the DIMENSION per-coordinate mean errors, and the pooled
# variance. With STEPS steps (twice as many for the first-order samplers, whose variance
# is off by O(1 / steps): DDPM's is 2% low at 800) the discretisation bias is below them.
Z_OCCUPANCY, Z_MEAN, Z_VARIANCE = 4.0, 4.5, 5.0


def _mixture():
    return sx.GaussianMixture.random(0, DIMENSION, 3, (0.1, 0.3))


def _z_scores(mixture, x):
    """Per component: z-scores of its occupancy, of its worst coordinate mean and of its
    pooled variance, each sample assigned to its most likely component."""
    x = np.asarray(x, np.float64)
    means, stds, weights = (np.asarray(a) for a in (mixture.means, mixture.stds, mixture.weights))
    log_density = np.log(weights) - 0.5 * ((x[:, None] - means) ** 2).sum(-1) / stds**2 - DIMENSION * np.log(stds)
    component = log_density.argmax(1)
    scores = []
    for k in range(len(weights)):
        members = x[component == k]
        share = len(members) / len(x)
        occupancy = (share - weights[k]) / np.sqrt(weights[k] * (1 - weights[k]) / len(x))
        mean = np.max(np.abs(members.mean(0) - means[k])) / (stds[k] / np.sqrt(len(members)))
        variance = (members.var(0).mean() / stds[k] ** 2 - 1) / np.sqrt(2 / (len(members) * DIMENSION))
        scores.append((occupancy, mean, variance))
    return np.array(scores)


def _within(scores, variance=Z_VARIANCE):
    return np.all(np.abs(scores[:, 0]) < Z_OCCUPANCY) and np.all(scores[:, 1] < Z_MEAN) and np.all(
        np.abs(scores[:, 2]) < variance
    )


FLOW_END = dict(t_end=1e-3, denoise_to_zero=True)
FIRST_ORDER = {"steps": 2 * STEPS}
CASES = [
    *[("vp-linear", name, FIRST_ORDER) for name in ("ddpm", "euler-maruyama", "reverse-diffusion")],
    *[("vp-linear", name, {}) for name in ("dpm++2m-sde", "dpm++3m-sde", "sa-solver-3", "edm-churn")],
    ("vp-linear", Restart(restarts=((0.06, 0.3, 8, 2),)), {}),  # enough steps inside the restarts too
    ("edm", "edm-churn", {"grid": "karras"}),
    ("edm", Restart(restarts=((0.06, 0.3, 8, 2),)), {"grid": "karras"}),
    ("rectified-flow", "ddim-eta", {**FLOW_END, **FIRST_ORDER}),  # the exponential samplers start at t = 1
    ("rectified-flow", "dpm++2m-sde", {**FLOW_END, "t_start": 1.0 - 1e-6}),
    # f and g are infinite at t = 1:
    ("rectified-flow", "euler-maruyama", {**FLOW_END, **FIRST_ORDER, "t_start": 0.999}),
]


@pytest.mark.parametrize("schedule, solver, options", CASES, ids=lambda case: str(case)[:40])
def test_samples_follow_the_mixture(x64, schedule, solver, options):
    """With many steps every stochastic sampler's samples of the exact mixture model have
    the mixture's component occupancy, means and variances (SAMPLES samples, tolerances
    above); the exact draws pass the same check."""
    mixture = _mixture()
    schedule = sx.schedules.get(schedule)
    model = mixture.denoiser(schedule, "velocity" if schedule.is_flow else "noise")
    options = {"denoise_to_zero": True, "steps": STEPS, **options}
    noise = jax.random.normal(jax.random.key(1), (SAMPLES, DIMENSION))
    x, _ = sx.sample(model, solver, noise, key=jax.random.key(0), **options)
    assert _within(_z_scores(mixture, x)), _z_scores(mixture, x)
    assert _within(_z_scores(mixture, mixture.sample(jax.random.key(5), SAMPLES)))


def test_predictor_corrector_follows_the_mixture_up_to_the_langevin_bias(x64):
    """The Langevin corrector is unadjusted and its step is set by the snr, not by the
    grid, so its bias does not vanish with more steps: at snr 0.05 and 400 steps the
    variance is measured 4-8% high. Occupancy and means are within sampling error, the
    variance within 12%."""
    mixture = _mixture()
    model = mixture.denoiser(sx.schedules.VPLinear(), "noise")
    noise = jax.random.normal(jax.random.key(1), (SAMPLES, DIMENSION))
    for predictor in ("reverse-diffusion", "ancestral"):
        solver = PredictorCorrector(predictor=predictor, snr=0.05)
        x, info = sx.sample(model, solver, noise, steps=400, key=jax.random.key(0), denoise_to_zero=True)
        assert int(info.nfe) == 801
        scores = _z_scores(mixture, x)
        relative_variance = scores[:, 2] * np.sqrt(2 / (SAMPLES * np.asarray(mixture.weights) * DIMENSION))
        assert _within(scores, variance=np.inf) and np.all(np.abs(relative_variance) < 0.12), scores


@pytest.mark.parametrize("name", ["euler-maruyama", "dpm++2m-sde"])
def test_strong_order_one_on_a_fixed_brownian_path(x64, name):
    """On one Brownian path per sample, the error to a 1024-step solve of the same path
    falls at strong order 1 (additive noise), log-log slope within 0.3 (measured 1.10
    and 1.07 between 32 and 128 steps; each step count is a compilation of its own)."""
    mixture = sx.GaussianMixture.random(0, 4, 3, (0.3, 0.6))
    model = mixture.denoiser(sx.schedules.VPLinear(), "noise")
    noise = jax.random.normal(jax.random.key(1), (64, 4))
    options = dict(key=jax.random.key(0), noise_source="brownian", grid="uniform", t_end=1e-2)
    reference, _ = sx.sample(model, name, noise, steps=1024, **options)
    steps = np.array([32, 128])
    errors = [float(jnp.sqrt(jnp.mean((sx.sample(model, name, noise, steps=int(n), **options)[0] - reference) ** 2)))
              for n in steps]
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - 1.0) < 0.3, (errors, slope)


def test_zero_noise_gives_the_deterministic_solvers(x64):
    """eta = 0 (and tau = 0) turns the SDE solvers into their ODE solvers, churn = 0 EDM's
    sampler into Heun, to 1e-10."""
    mixture = sx.GaussianMixture.random(0, 4, 3, (0.2, 0.4))
    noise = jax.random.normal(jax.random.key(1), (16, 4))
    key = jax.random.key(0)
    vp = mixture.denoiser(sx.schedules.VPLinear(), "noise")
    pairs = [
        (vp, AncestralSampler(eta=0.0), "ddim", {}),
        (vp, SDEDPMSolver(order=2, eta=0.0), "dpm++2m", {}),
        (vp, SDEDPMSolver(order=3, eta=0.0), "dpm++3m", {}),
        (vp, SDEDPMSolver(order=3, eta=0.0, variant="taylor"), "dpm++3m-taylor", {}),
        (vp, SASolver(predictor_order=1, corrector_order=0, tau=0.0), "ddim", {}),
        (mixture.denoiser(sx.schedules.EDM(), "noise"), EDMChurn(churn=0.0), "heun", {"grid": "karras"}),
    ]
    for model, stochastic, deterministic, options in pairs:
        a, _ = sx.sample(model, stochastic, noise, steps=12, key=key, **options)
        b, _ = sx.sample(model, deterministic, noise, steps=12, **options)
        assert float(jnp.max(jnp.abs(a - b))) < 1e-10, (stochastic, deterministic)


def test_brownian_noise_is_stable_across_step_counts_and_batches(x64):
    """One key at 10 and at 20 steps: with Brownian noise the samples stay much closer
    than with independent noise (measured ratio about 0.3; asserted below 0.6). A
    sample's noise depends on its own key only."""
    mixture = sx.GaussianMixture.random(0, 8, 3, (0.2, 0.4))
    model = mixture.denoiser(sx.schedules.VPLinear(), "noise")
    noise = jax.random.normal(jax.random.key(1), (256, 8))
    distance = {}
    for source in ("independent", "brownian"):
        x10, _ = sx.sample(model, "dpm++2m-sde", noise, steps=10, key=jax.random.key(0), noise_source=source)
        x20, _ = sx.sample(model, "dpm++2m-sde", noise, steps=20, key=jax.random.key(0), noise_source=source)
        distance[source] = float(jnp.sqrt(jnp.mean((x10 - x20) ** 2)))
    keys = sx.samplers.noise.sample_keys(jax.random.key(0), 256)
    part, _ = sx.sample(model, "dpm++2m-sde", noise[5:9], steps=10, key=keys[5:9], noise_source="brownian")
    np.testing.assert_allclose(part, x10[5:9], rtol=0, atol=1e-12)  # x10 is the brownian one
    assert distance["brownian"] < 0.6 * distance["independent"], distance


def test_jit_vmap_grad_and_no_retrace(x64):
    mixture = sx.GaussianMixture.random(0, 4, 3, (0.2, 0.4))
    traces = []

    def network(x, t):
        traces.append(1)
        return mixture.denoiser(sx.schedules.VPLinear(), "noise").network(x, t)

    model = sx.Denoiser(network=network, schedule=sx.schedules.VPLinear(), prediction="noise")
    noise = jax.random.normal(jax.random.key(1), (8, 4))
    key = jax.random.key(0)
    for name in ("pc", "restart"):  # no retrace on a second call
        first, _ = sx.sample(model, name, noise, steps=6, key=key)
        count = len(traces)
        second, _ = sx.sample(model, name, noise, steps=6, key=key)
        assert len(traces) == count and bool(jnp.all(first == second))

    def squared_norm(n, k):
        x, _ = sx.sample(model, "restart", n, steps=6, key=k)
        return jnp.sum(x**2), x

    # One compiled program: the samples under jit and their gradient with respect to the noise.
    (_, jitted), gradient = jax.jit(jax.value_and_grad(squared_norm, has_aux=True))(noise, key)
    np.testing.assert_allclose(jitted, first, atol=1e-12)
    assert bool(jnp.all(jnp.isfinite(gradient))) and float(jnp.abs(gradient).max()) > 0
    stacked = jax.vmap(lambda k: sx.sample(model, "restart", noise, steps=6, key=k)[0])(jax.random.split(key, 2))
    assert stacked.shape == (2, 8, 4) and not bool(jnp.allclose(stacked[0], stacked[1]))


def test_key_and_noise_source_errors():
    mixture = sx.GaussianMixture.random(0, 4, 3, (0.2, 0.4))
    model = mixture.denoiser(sx.schedules.VPLinear(), "noise")
    noise = jnp.ones((4, 4))
    with pytest.raises(ValueError, match="is stochastic: pass key="):
        sx.sample(model, "ddpm", noise, steps=4)
    with pytest.raises(ValueError, match="is deterministic: key="):
        sx.sample(model, "dpm++2m", noise, steps=4, key=jax.random.key(0))
    with pytest.raises(ValueError, match="is deterministic: noise_source="):
        sx.sample(model, "dpm++2m", noise, steps=4, noise_source="brownian")
    with pytest.raises(ValueError, match="one key per sample"):
        sx.sample(model, "ddpm", noise, steps=4, key=jax.random.split(jax.random.key(0), 3))
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        sx.sample(model, "ddpm", noise, steps=4, key=jnp.zeros(3))
    with pytest.raises(ValueError, match="unknown noise source"):
        sx.sample(model, "ddpm", noise, steps=4, key=jax.random.key(0), noise_source="pink")
    with pytest.raises(ValueError, match="stochastic"):
        sx.invert(model, "ddpm", noise, steps=4)
    with pytest.raises(ValueError, match="deterministic solvers"):
        sx.sample(model, "ddpm", noise, steps=4, key=jax.random.key(0), share_compilation=True)
    with pytest.raises(ValueError, match="deterministic multistep"):
        sx.solvers.UniC(predictor=SDEDPMSolver())
    keys = (jax.random.PRNGKey(3), jax.random.key(3))
    raw, typed = (sx.sample(model, "ddpm", noise, steps=4, key=k)[0] for k in keys)
    np.testing.assert_array_equal(raw, typed)  # a raw uint32 key is the same key
    for bad in (dict(eta=2.0), dict(eta=-1.0)):
        with pytest.raises(ValueError, match="eta"):
            AncestralSampler(**bad)
    with pytest.raises(ValueError, match="restart"):
        Restart(restarts=((0.3, 0.06, 2, 2),))
    with pytest.raises(ValueError, match="snr"):
        PredictorCorrector(snr=0.0)
