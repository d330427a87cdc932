"""sample() and invert(): transformations, retracing, grids, inversion, sharding, errors."""

import dataclasses
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax as sx
from samplax.solvers import grids


@pytest.fixture(scope="module")
def setup():
    mixture = sx.GaussianMixture.random(1, 3, 3, std_range=(0.4, 0.8))
    schedule = sx.schedules.VPLinear()
    return mixture, schedule, mixture.denoiser(schedule, "noise")


def test_grids_have_the_right_end_points_and_spacing(x64):
    schedule = sx.schedules.VPDiscrete.ddpm_linear()
    for kind in grids.GRIDS:
        times = grids.time_grid(schedule, 10, kind, t_start=0.9, t_end=0.01)
        assert times.shape == (11,)
        np.testing.assert_allclose([times[0], times[-1]], [0.9, 0.01], rtol=1e-12)
        assert np.all(np.diff(np.asarray(times)) < 0), kind
    lambdas = schedule.lambda_(grids.time_grid(schedule, 10, "logsnr"))
    np.testing.assert_allclose(np.diff(np.asarray(lambdas)), np.diff(np.asarray(lambdas))[0], rtol=1e-6)
    edm = sx.schedules.EDM()
    karras = grids.time_grid(edm, 4, "karras")  # sigma_i of Karras et al. (2022), eq. 5
    ramp = np.linspace(0, 1, 5)
    expected = (80.0 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    np.testing.assert_allclose(karras, expected, rtol=1e-10)
    with pytest.raises(ValueError, match="unknown grid"):
        grids.time_grid(schedule, 10, "cosine")


def test_second_call_does_not_retrace(setup):
    mixture, schedule, _ = setup
    traces = []

    def network(x, t):
        traces.append(1)  # runs only while tracing
        return mixture.denoiser(schedule, "noise").network(x, t)

    model = sx.Denoiser(network, schedule, "noise")
    noise = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
    sx.sample(model, "dpm++2m", noise, steps=5)
    count = len(traces)
    sx.sample(model, "dpm++2m", noise + 1.0, steps=5, t_end=2e-3)  # new values, same shapes
    assert len(traces) == count
    sx.sample(model, "dpm++2m", noise, grid=np.linspace(1.0, 1e-3, 6))  # an explicit grid
    count = len(traces)
    sx.sample(model, "dpm++2m", noise, grid=np.linspace(0.9, 1e-2, 6))
    assert len(traces) == count


def test_jit_vmap_and_gradients(x64, setup):
    mixture, schedule, model = setup
    noise = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
    times = grids.time_grid(schedule, 4, "logsnr")

    def loss_of_noise(noise):
        x, _ = sx.sample(model, "dpm++2m", noise, grid=times)
        return jnp.sum(x**2)

    gradient = jax.jit(jax.grad(loss_of_noise))(noise)
    step = 1e-4  # central differences: truncation ~ step^2, rounding ~ 1e-16 / step
    direction = jax.random.normal(jax.random.PRNGKey(2), noise.shape)
    finite = (loss_of_noise(noise + step * direction) - loss_of_noise(noise - step * direction)) / (2 * step)
    np.testing.assert_allclose(jnp.sum(gradient * direction), finite, rtol=1e-6)

    def loss_of_grid(interior):
        grid = jnp.concatenate([times[:1], interior, times[-1:]])
        x, _ = sx.sample(model, "dpm++3m", noise, grid=grid)
        return jnp.sum(x**2)

    interior = times[1:-1]
    gradient = jax.grad(loss_of_grid)(interior)
    direction = jnp.linspace(1.0, -1.0, interior.shape[0]) * 1e-3
    finite = (loss_of_grid(interior + 1e-4 * direction) - loss_of_grid(interior - 1e-4 * direction)) / 2e-4
    assert np.all(np.isfinite(gradient))
    np.testing.assert_allclose(jnp.sum(gradient * direction), finite, rtol=1e-5)

    # vmap over independent batches equals one big batch.
    stacked = jnp.stack([noise, -noise])
    mapped = jax.vmap(lambda n: sx.sample(model, "dpm++2m", n, grid=times)[0])(stacked)
    together, _ = sx.sample(model, "dpm++2m", jnp.concatenate([noise, -noise]), grid=times)
    np.testing.assert_allclose(mapped.reshape(8, 3), together, rtol=1e-12)


@pytest.mark.parametrize("name", ["dpm++2m", "dpm-solver-3s", "dpm++3m-taylor"])
def test_inversion_error_falls_with_steps(x64, setup, name):
    mixture, schedule, model = setup
    data = mixture.sample(jax.random.PRNGKey(3), 8) * 0.5
    t_end = 1e-2
    exact = mixture.flow_map(data, schedule, t_end, 1.0) / schedule.sigma(1.0)
    errors = []
    for steps in (10, 20, 40):
        noise, info = sx.invert(model, name, data, steps=steps, t_end=t_end)
        assert int(info.nfe) == steps and float(info.times[0]) == pytest.approx(t_end)
        errors.append(float(jnp.sqrt(jnp.mean((noise - exact) ** 2))))
    # Second- and third-order solvers: each doubling of the steps divides the error by > 3.
    assert errors[0] > 3 * errors[1] > 9 * errors[2], errors
    back, _ = sx.sample(model, name, noise, steps=40, t_end=t_end)
    assert float(jnp.sqrt(jnp.mean((back - data) ** 2))) < 2 * errors[2]


def test_bad_input_is_named(setup):
    _, schedule, model = setup
    noise = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="unknown solver"):
        sx.sample(model, "dpm++7m", noise, steps=5)
    with pytest.raises(ValueError, match="steps is required"):
        sx.sample(model, "dpm++2m", noise)
    with pytest.raises(ValueError, match="at least 1 steps, got 0"):
        sx.sample(model, "dpm++2m", noise, steps=0)
    with pytest.raises(ValueError, match="outside the range"):
        sx.sample(model, "dpm++2m", noise, steps=5, t_end=0.0)
    with pytest.raises(ValueError, match="decreasing"):
        sx.sample(model, "dpm++2m", noise, grid=np.linspace(0.01, 1.0, 5))
    with pytest.raises(ValueError, match="NaN"):
        sx.sample(model, "dpm++2m", noise.at[0, 0].set(jnp.nan), steps=5)
    with pytest.raises(ValueError, match="batch"):
        sx.sample(model, "dpm++2m", jnp.zeros(3), steps=5)
    with pytest.raises(TypeError, match="Denoiser"):
        sx.sample(lambda x, t: x, "dpm++2m", noise, steps=5)


def test_nan_output_is_reported(setup):
    _, schedule, _ = setup
    model = sx.Denoiser(lambda x, t: jnp.full_like(x, jnp.nan), schedule, "noise")
    with pytest.raises(FloatingPointError, match="NaN"):
        sx.sample(model, "dpm++2m", jnp.ones((2, 3)), steps=3)


def test_sharded_sampling_matches_unsharded():
    """The batch axis sharded over 8 (fake CPU) devices gives the unsharded result."""
    script = textwrap.dedent(
        """
        import jax, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec
        import samplax as sx
        assert jax.device_count() == 8, jax.devices()
        mixture = sx.GaussianMixture.random(0, 16, 4)
        model = mixture.denoiser(sx.schedules.VPDiscrete.ddpm_linear(), "noise")
        noise = jax.random.normal(jax.random.PRNGKey(0), (32, 16))
        mesh = Mesh(np.array(jax.devices()), ("batch",))
        sharded = jax.device_put(noise, NamedSharding(mesh, PartitionSpec("batch")))
        plain, _ = sx.sample(model, "dpm++2m", noise, steps=8)
        spread, _ = sx.sample(model, "dpm++2m", sharded, steps=8)
        assert len(spread.sharding.device_set) == 8, spread.sharding
        np.testing.assert_allclose(np.asarray(spread), np.asarray(plain), rtol=1e-5, atol=1e-6)
        print("sharded ok")
        """
    )
    environment = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    command = [sys.executable, "-c", script]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0 and "sharded ok" in result.stdout, result.stderr[-2000:]


def test_every_workflow_checks_its_inputs_the_same_way(setup):
    mixture, schedule, model = setup
    noise = jnp.ones((2, 3))
    flow = mixture.denoiser(sx.schedules.RectifiedFlow(), "velocity")
    for call in (
        lambda: sx.sample(model, "dpm++2m", noise, steps=4, t_start=0.1, t_end=0.5),
        lambda: sx.invert(model, "dpm++2m", noise, steps=4, t_start=0.1, t_end=0.5),
        lambda: sx.sample(model, "dpm-solver-adaptive", noise, t_start=0.1, t_end=0.5),
        lambda: sx.reversible_invert(flow, noise, steps=4, t_start=0.1, t_end=0.5),
        lambda: sx.tune_grid(model, "dpm++2m", 4, jax.random.PRNGKey(0), shape=(3,), t_start=0.1, t_end=0.5),
    ):
        with pytest.raises(ValueError, match="t_start=0.1 must be greater than t_end=0.5"):
            call()
    for call in (
        lambda: sx.sample(model, "dpm++2m", noise, steps=2.5),
        lambda: sx.tune_grid(model, "dpm++2m", 2.5, jax.random.PRNGKey(0), shape=(3,)),
    ):
        with pytest.raises(TypeError, match="steps must be an integer"):
            call()
    with pytest.raises(TypeError, match="floating-point"):
        sx.sample(model, "dpm++2m", jnp.ones((2, 3), jnp.int32), steps=4)
    with pytest.raises(ValueError, match="disagrees with the explicit grid, which ends at"):
        sx.sample(model, "dpm++2m", noise, grid=jnp.linspace(1.0, 0.1, 5), t_end=0.2)


def test_reversible_heun_by_name_samples_and_jits(x64):
    flow = sx.GaussianMixture.random(0, 3, 2, std_range=(0.4, 0.8)).denoiser(sx.schedules.RectifiedFlow(), "velocity")
    noise = jax.random.normal(jax.random.PRNGKey(0), (4, 3), jnp.float64)
    by_name, info = sx.sample(flow, "reversible-heun", noise, steps=6, t_end=0.05)
    direct, _ = sx.reversible_sample(flow, noise, steps=6, t_end=0.05)
    np.testing.assert_array_equal(by_name, direct)
    assert int(info.nfe) == 7
    jitted = jax.jit(lambda n: sx.sample(flow, "reversible-heun", n, steps=6, t_end=0.05)[0])(noise)
    np.testing.assert_allclose(jitted, by_name, atol=1e-12)
    with pytest.raises(ValueError, match="reversible_invert"):
        sx.invert(flow, "reversible-heun", noise, steps=6, t_end=0.05)


def test_shared_compilation_gives_the_same_samples(setup):
    _, _, model = setup
    noise = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
    for name in ("dpm++2m", "deis-rhork3", "unipc-bh2-3"):
        plain, info = sx.sample(model, name, noise, steps=6, denoise_to_zero=True)
        shared, shared_info = sx.sample(model, name, noise, steps=6, denoise_to_zero=True, share_compilation=True)
        np.testing.assert_allclose(shared, plain, atol=1e-5)
        assert shared.dtype == plain.dtype and int(shared_info.nfe) == int(info.nfe)
    with pytest.raises(ValueError, match="share_compilation"):
        sx.sample(model, "dpm-solver-adaptive", noise, share_compilation=True)


def test_solvers_declare_what_they_are():
    unipc = sx.solvers.get("unipc-bh1-2")
    noise_unipc = dataclasses.replace(unipc, predictor=sx.solvers.DPMSolver(prediction="noise"))
    assert noise_unipc.prediction == "noise" and unipc.prediction == "data"
    with pytest.raises(ValueError, match="not a UniC"):
        sx.solvers.UniC(predictor=unipc)
    with pytest.raises(TypeError, match="solver object"):
        sx.solvers.register("mine", lambda: sx.solvers.DPMSolver())
    assert sx.solvers.get("dpm++2m").multistep and not sx.solvers.get("dpm++2s").multistep
    assert sx.solvers.get("fireflow").evaluations_per_step is None and sx.solvers.get("heun").steps_for(10) == 5
    assert sx.solvers.get("heun").steps_for(9) is None and sx.solvers.get("dpm++2m").steps_for(10, True) == 9
