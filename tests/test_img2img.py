"""img2img / SDEdit (samplax.sdedit): where the solve begins, and what it converges to."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax as sx
from samplax.samplers.img2img import begin_index

MIXTURE = sx.GaussianMixture.random(0, 3, 3)
SCHEDULE = sx.schedules.VPLinear()
MODEL = MIXTURE.denoiser(SCHEDULE, "noise")
IMAGE = MIXTURE.sample(jax.random.key(0), 4)
KEY = jax.random.key(5)


@pytest.mark.parametrize("steps, strength, begin", [(10, 1.0, 0), (10, 0.5, 5), (10, 0.8, 2), (10, 0.1, 9),
                                                    (10, 0.75, 3), (50, 0.3, 35), (3, 0.7, 1)])
def test_begin_index_runs_floor_of_strength_times_steps(steps, strength, begin):
    assert begin_index(steps, strength) == begin


@pytest.mark.parametrize("strength, text", [(0.0, "strength"), (1.5, "strength"), (0.05, "runs no step"),
                                            ("0.5", "strength")])
def test_bad_strengths_are_named(strength, text):
    with pytest.raises((TypeError, ValueError), match=text):
        sx.sdedit(MODEL, "dpm++2m", IMAGE, strength=strength, key=KEY, steps=10)


def test_sdedit_begins_at_the_grid_point_and_runs_the_rest():
    times = sx.solvers.time_grid(SCHEDULE, 10)
    result, info = sx.sdedit(MODEL, "dpm++2m", IMAGE, strength=0.6, key=KEY, steps=10)
    np.testing.assert_allclose(info.times, times[4:], rtol=1e-6)
    assert int(info.nfe) == 6
    # The same solve by hand: the image noised at times[4] with sample i's noise.
    keys = jax.vmap(lambda index: jax.random.fold_in(KEY, index))(jnp.arange(4))
    noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 0), (3,)))(keys)
    start = SCHEDULE.alpha(times[4]) * IMAGE + SCHEDULE.sigma(times[4]) * noise
    by_hand, _ = sx.sample(MODEL, "dpm++2m", start / SCHEDULE.sigma(times[4]), grid=times[4:])
    np.testing.assert_allclose(result, by_hand, rtol=1e-5, atol=1e-6)


def test_sdedit_converges_to_the_exact_flow_from_the_noised_image(x64):
    """An ODE solver from the noised image converges to the exact probability-flow image
    of that noised point as the steps grow (strength 0.5: half of each grid)."""
    image, errors = IMAGE.astype(jnp.float64), []
    keys = jax.vmap(lambda index: jax.random.fold_in(KEY, index))(jnp.arange(4))
    noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 0), (3,), jnp.float64))(keys)
    for steps in (20, 40, 80):
        times = sx.solvers.time_grid(SCHEDULE, steps)
        result, _ = sx.sdedit(MODEL, "dpm++3m", image, strength=0.5, key=KEY, steps=steps)
        start = SCHEDULE.alpha(times[steps // 2]) * image + SCHEDULE.sigma(times[steps // 2]) * noise
        exact = MIXTURE.flow_map(start, SCHEDULE, times[steps // 2], SCHEDULE.t_min)
        errors.append(float(jnp.max(jnp.abs(result - exact))))
    assert errors[1] < errors[0] / 3 and errors[2] < errors[1] / 3 and errors[2] < 2e-3, errors


def test_small_strength_stays_near_the_image_and_stochastic_solvers_run():
    near, _ = sx.sdedit(MODEL, "dpm++2m", IMAGE, strength=0.2, key=KEY, steps=10, denoise_to_zero=True)
    far, _ = sx.sdedit(MODEL, "dpm++2m", IMAGE, strength=1.0, key=KEY, steps=10, denoise_to_zero=True)
    assert float(jnp.mean(jnp.abs(near - IMAGE))) < 0.5 * float(jnp.mean(jnp.abs(far - IMAGE)))
    noisy, info = sx.sdedit(MODEL, "ddpm", IMAGE, strength=0.5, key=KEY, steps=10, noise_source="brownian")
    assert np.all(np.isfinite(noisy)) and int(info.nfe) == 5
    again, _ = sx.sdedit(MODEL, "ddpm", IMAGE, strength=0.5, key=KEY, steps=10, noise_source="brownian")
    np.testing.assert_array_equal(noisy, again)


def test_sdedit_refuses_adaptive_solvers():
    with pytest.raises(ValueError, match="fixed grid"):
        sx.sdedit(MODEL, "dpm-solver-adaptive", IMAGE, strength=0.5, key=KEY, steps=10)
