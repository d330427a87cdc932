"""Learned time grids: monotone with fixed end points, lower error on held-out noise (for
diffusion, spaced in lambda, and for rectified flow, spaced in t), restarts from several
grids, validation on a held-out part of the noise pool that generalises on a sharp
mixture, per-sample conditions carried with their noise, saved and loaded exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax as sx
from samplax.samplers.tuning import grid_from_logits

STEPS = 4  # NFE 5 with the denoising step
SAMPLES = 64


@pytest.fixture(scope="module")
def fitted():
    mixture = sx.GaussianMixture.random(3, 8, 4, std_range=(0.1, 0.3))
    schedule = sx.schedules.VPLinear()
    model = mixture.denoiser(schedule, "noise")
    times, info = sx.tune_grid(
        model,
        "dpm++2m",
        STEPS,
        jax.random.PRNGKey(0),
        shape=(8,),
        samples=4 * SAMPLES,  # a quarter of it for validation
        iterations=40,
        learning_rate=0.2,
        init="uniform",  # a poor start (uniform in t), to see the fit find a good grid
    )
    return model, times, info


def _held_out_errors(model, times):
    """RMS errors of the uniform grid (the fit's start), the logSNR grid and the fitted
    grid on noise not used for fitting, against a 200-step third-order solve."""
    noise = jax.random.normal(jax.random.PRNGKey(1), (SAMPLES, 8))
    reference, _ = sx.sample(model, "dpm++3m-taylor", noise, steps=200, denoise_to_zero=True)
    errors = []
    for grid in ("uniform", "logsnr", times):
        x, info = sx.sample(model, "dpm++2m", noise, steps=STEPS, grid=grid, denoise_to_zero=True)
        assert int(info.nfe) == STEPS + 1
        errors.append(float(jnp.sqrt(jnp.mean((x - reference) ** 2))))
    return errors


def test_learned_grid_is_monotone_with_fixed_end_points(fitted):
    model, times, info = fitted
    schedule = model.schedule
    assert times.shape == (STEPS + 1,)
    assert float(times[0]) == schedule.t_max and float(times[-1]) == pytest.approx(schedule.t_min, rel=1e-6)
    assert bool(jnp.all(jnp.diff(times) < 0))
    assert float(info.validation_loss) < 0.5 * float(info.validation_losses[0]), info.validation_losses


def test_learned_grid_lowers_error_on_held_out_noise(fitted):
    """The fit lowers the held-out error of the uniform grid it starts from by over 30%
    (0.47 -> 0.25 when written). From that poor start it ends in a local minimum above the
    logSNR grid's error (0.17), which is why fits restart from several grids (next test)."""
    model, times, _ = fitted
    uniform_error, logsnr_error, tuned_error = _held_out_errors(model, times)
    assert tuned_error < 0.7 * uniform_error, (uniform_error, tuned_error)


def test_any_logits_give_a_monotone_grid():
    schedule = sx.schedules.VPDiscrete.ddpm_linear()
    logits = 3.0 * jax.random.normal(jax.random.PRNGKey(2), (7,))
    times = grid_from_logits(schedule, logits, 1.0, schedule.t_min)
    assert float(times[0]) == 1.0 and float(times[-1]) == pytest.approx(schedule.t_min)
    assert bool(jnp.all(jnp.diff(times) < 0))
    # The logSNR grid corresponds to equal logits.
    np.testing.assert_allclose(
        grid_from_logits(schedule, jnp.zeros(7), 1.0, schedule.t_min),
        sx.solvers.time_grid(schedule, 7, "logsnr"),
        rtol=1e-5,
    )


def test_several_starting_grids_keep_the_lowest_training_loss(fitted):
    """A fit from a tuple of grids returns the best of the fits from each of them (fits are
    deterministic, so the numbers agree exactly)."""
    model = fitted[0]
    fit = lambda init: sx.tune_grid(  # noqa: E731
        model, "dpm++2m", STEPS, jax.random.PRNGKey(0), shape=(8,), samples=SAMPLES, iterations=10, init=init
    )
    single = {init: fit(init) for init in ("uniform", "karras")}
    times, info = fit(("uniform", "karras"))
    losses = {init: float(result[1].validation_loss) for init, result in single.items()}
    winner = min(losses, key=losses.get)
    assert losses["uniform"] != losses["karras"]
    assert float(info.validation_loss) == losses[winner]
    assert info.start == ("uniform", "karras").index(winner)
    np.testing.assert_array_equal(times, single[winner][0])
    np.testing.assert_array_equal(info.losses, single[winner][1].losses)


def test_learned_flow_grid_lowers_error_on_held_out_noise():
    """On rectified flow lambda is infinite at t = 1, so the grid is spaced in t: a learned
    Heun grid (default pool of 2048 noises) beats the uniform grid it starts from on
    held-out noise by over 25% (0.058 -> 0.040 when written), and the SD3-shifted grid too.
    With a pool of 64 it gained 7% only (0.054)."""
    schedule = sx.schedules.RectifiedFlow()
    model = sx.GaussianMixture.random(0, 4, 3, std_range=(0.1, 0.3)).denoiser(schedule, "velocity")
    t_end, steps = 0.05, 4  # the mixture velocity is 0/0 at t = 0 exactly
    times, info = sx.tune_grid(
        model, "heun", steps, jax.random.PRNGKey(0), shape=(4,), iterations=60,
        t_end=t_end, denoise_to_zero=False,
    )
    assert times.shape == (steps + 1,) and float(times[0]) == 1.0 and float(times[-1]) == pytest.approx(t_end)
    assert bool(jnp.all(jnp.diff(times) < 0))
    assert float(info.validation_loss) < 0.75 * float(info.validation_losses[0]), info.validation_losses
    noise = jax.random.normal(jax.random.PRNGKey(1), (256, 4))
    reference, _ = sx.sample(model, "rk4", noise, steps=200, t_end=t_end)
    grids = ("uniform", "shifted", times)
    samples = [sx.sample(model, "heun", noise, steps=steps, grid=grid, t_end=t_end)[0] for grid in grids]
    errors = [float(jnp.sqrt(jnp.mean((x - reference) ** 2))) for x in samples]
    assert errors[2] < 0.75 * min(errors[:2]), errors


def test_time_spacing_of_equal_logits_is_the_uniform_grid():
    schedule = sx.schedules.RectifiedFlow()
    np.testing.assert_allclose(
        grid_from_logits(schedule, jnp.zeros(5), 1.0, 0.0, spacing="time"), jnp.linspace(1.0, 0.0, 6), atol=1e-6
    )
    times = grid_from_logits(schedule, 3.0 * jax.random.normal(jax.random.PRNGKey(3), (5,)), 1.0, 0.0, spacing="time")
    assert float(times[0]) == 1.0 and float(times[-1]) == 0.0 and bool(jnp.all(jnp.diff(times) < 0))


def test_save_and_load_round_trip(fitted, tmp_path):
    _, times, _ = fitted
    path = tmp_path / "grid.json"
    sx.save_grid(str(path), times, solver="dpm++2m", steps=STEPS, denoise_to_zero=True)
    loaded, metadata = sx.load_grid(str(path))
    np.testing.assert_array_equal(loaded, np.asarray(times, np.float64))
    assert metadata == {"solver": "dpm++2m", "steps": STEPS, "denoise_to_zero": True}
    with pytest.raises(FileExistsError):
        sx.save_grid(str(path), times)
    sx.save_grid(str(path), times[::2], overwrite=True)
    assert sx.load_grid(str(path))[0].shape == (3,)


def test_bad_input(fitted):
    model = fitted[0]
    with pytest.raises(ValueError, match="fixed-grid"):
        sx.tune_grid(model, "dpm-solver-adaptive", 4, jax.random.PRNGKey(0), shape=(8,))
    with pytest.raises(ValueError, match="steps"):
        sx.tune_grid(model, "dpm++2m", 0, jax.random.PRNGKey(0), shape=(8,))
    with pytest.raises(ValueError, match="spacing"):
        sx.tune_grid(model, "dpm++2m", 4, jax.random.PRNGKey(0), shape=(8,), spacing="sigma")
    for options, match in (({"validation": 1.0}, "validation"), ({"validation": 0.001, "samples": 64}, "validation"),
                           ({"loss": "l1"}, "loss"), ({"batch_size": 0}, "batch_size"),
                           ({"patience": 0}, "patience"), ({"samples": 1}, "samples")):
        with pytest.raises(ValueError, match=match):
            sx.tune_grid(model, "dpm++2m", 4, jax.random.PRNGKey(0), shape=(8,), **options)


# -- generalisation: pool, validation, mini-batches -------------------------------------------

SHARP_STEPS = 5


@pytest.fixture(scope="module")
def sharp():
    """A small sharp mixture (8-D, 8 components, stds 0.03-0.1) under the DDPM schedule,
    where a few samples of a 5-step solve end in another mode than the exact solve, and
    held-out noise with its 200-step reference. The fits are of unipc-bh2-3 unless told; the
    tests of the fit's bookkeeping fit dpm++2m, whose gradient compiles in about half the time."""
    model = sx.GaussianMixture.random(0, 8, 8, std_range=(0.03, 0.1)).denoiser(
        sx.schedules.VPDiscrete.ddpm_linear(), "noise")
    noise = jax.random.normal(jax.random.PRNGKey(99), (1024, 8))
    reference, _ = sx.sample(model, "dpm++3m-taylor", noise, steps=200, denoise_to_zero=False)

    def fit_and_measure(samples, validation, iterations=60, solver="unipc-bh2-3", **options):
        times, info = sx.tune_grid(model, solver, SHARP_STEPS, jax.random.PRNGKey(0), shape=(8,),
                                   samples=samples, validation=validation, iterations=iterations,
                                   denoise_to_zero=False, **options)
        x, _ = sx.sample(model, solver, noise, grid=times, denoise_to_zero=False)
        return times, info, float(jnp.sqrt(jnp.mean((x - reference) ** 2)))

    return fit_and_measure


def test_validation_selected_grid_generalises_where_a_small_pool_overfits(sharp):
    """With 32 training noises the fit learns to avoid mode flips of its own samples only:
    its held-out error is over twice its training error (5.2x when written). With the
    default pool and validation split the held-out error is within 1.5x of the training
    error (1.2x), and lower than the small pool's."""
    _, small, small_held_out = sharp(32, 0.0)
    _, large, large_held_out = sharp(1024, 0.25)
    assert small_held_out > 2.0 * float(small.training_rms), (small_held_out, small.training_rms)
    assert large_held_out < 1.5 * float(large.training_rms), (large_held_out, large.training_rms)
    assert large_held_out < small_held_out
    assert float(small.gap) == 1.0  # validation=0 validates on the training noise itself
    assert float(large.validation_rms) < 1.5 * float(large.training_rms)


def test_returned_grid_has_the_lowest_validation_loss_seen(sharp):
    """The grid returned is the one of the lowest validation loss seen (dpm++2m here: its
    lowest is at iteration 42 of 60 when written, not the last), the last iterate is
    validated too, and patience stops a run."""
    times, info, _ = sharp(256, 0.25, solver="dpm++2m", validate_every=7)
    assert info.start == 0 and info.losses.shape == (60,)
    np.testing.assert_array_equal(info.validation_iterations, list(range(0, 60, 7)) + [60])
    assert float(info.validation_loss) == float(jnp.min(info.validation_losses))
    assert info.iteration == int(info.validation_iterations[jnp.argmin(info.validation_losses)])
    _, stopped, _ = sharp(256, 0.25, solver="dpm++2m", iterations=40, validate_every=5, patience=1)
    assert stopped.validation_iterations.shape[0] < 9  # stopped before the 40th iteration
    assert float(stopped.validation_losses[-1]) >= float(jnp.min(stopped.validation_losses[:-1]))


def test_fits_are_deterministic_under_a_fixed_key(sharp):
    """Mini-batches (192 training noises, batches of 128) drawn from the key: two fits agree
    exactly."""
    first, second = (sharp(256, 0.25, iterations=10, solver="dpm++2m", loss="rms") for _ in range(2))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1].losses, second[1].losses)
    assert first[2] == second[2]


def test_per_sample_conditions_travel_with_their_noise():
    """A network conditioned per sample (label 0 or 1 picks one of two distant mixtures):
    mini-batches, validation and references keep each noise with its own label, so the
    fitted grid's training error is that of the few-step solve (0.12 when written), not
    the distance between the two mixtures (about the shift, 3) that a mismatch would give."""
    schedule = sx.schedules.VPLinear()
    mixtures = [sx.GaussianMixture.random(seed, 4, 3, std_range=(0.1, 0.3)) for seed in (0, 1)]
    models = [mixture.denoiser(schedule, "noise") for mixture in mixtures]
    shift = 3.0

    def network(x, t, label):
        chosen = (label == 1)[:, None]
        first = models[0].network(x, t)
        second = models[1].network(x - shift * jnp.reshape(schedule.alpha(t), (-1, 1)), t)  # t: one per sample
        return jnp.where(chosen, second, first)

    labels = jnp.arange(512) % 2
    model = sx.Denoiser(jax.tree_util.Partial(network), schedule, "noise", condition={"label": labels})
    times, info = sx.tune_grid(model, "dpm++2m", 4, jax.random.PRNGKey(0), shape=(4,), samples=512, batch_size=64,
                               iterations=20)
    assert float(info.training_rms) < 0.3 and float(info.validation_rms) < 0.3, (info.training_rms, info.validation_rms)
    with pytest.raises(ValueError, match="rows"):
        sx.tune_grid(model, "dpm++2m", 4, jax.random.PRNGKey(0), shape=(4,), samples=256)
