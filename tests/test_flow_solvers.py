"""Flow solvers against the exact Gaussian-mixture velocity on the rectified-flow path:
convergence orders, identities, inversion, exact reversible round trips, adapters, grids."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate

import samplax as sx
from samplax.samplers.reversible import reversible_invert, reversible_sample
from samplax.solvers.reversible import ReversibleState

SCHEDULE = sx.schedules.RectifiedFlow()
T_END = 0.05  # the stock mixture velocity is 0/0 at t = 0 exactly
STEPS = (8, 16)
ORDERS = {
    "euler": 1, "heun": 2, "midpoint": 2, "rk4": 4, "rf-solver-2": 2, "rf-solver-3": 3, "fireflow": 2, "fireflow-3": 3
}


def _mixture(std_range=(0.3, 0.5)):
    return sx.GaussianMixture.random(0, 4, 3, std_range=std_range)


def _reference(model, x, t0, t1):
    """The exact flow map in t: DOP853 on the exact velocity, float64, tight tolerances."""
    with jax.enable_x64(True):
        velocity = jax.jit(lambda t, y: model.velocity(y.reshape(x.shape), t).reshape(-1))
        solution = scipy.integrate.solve_ivp(
            lambda t, y: np.asarray(velocity(jnp.float64(t), jnp.asarray(y))),
            (t0, t1),
            np.asarray(x, np.float64).reshape(-1),
            method="DOP853",
            rtol=1e-12,
            atol=1e-12,
        )
    return solution.y[:, -1].reshape(x.shape)


def _rms(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


@pytest.fixture(scope="module")
def problem():
    with jax.enable_x64(True):
        model = _mixture().denoiser(SCHEDULE, "velocity")
        noise = jax.random.normal(jax.random.PRNGKey(0), (32, 4), jnp.float64)
        data = _reference(model, noise, 1.0, T_END)
    return model, noise, data


def test_mixture_velocity_is_exact():
    """One component N(mu, s^2): x_t = (1 - t) mu + r(t) z with r(t)^2 = (1 - t)^2 s^2 + t^2,
    so dx/dt = -mu + r'(t) z, z = (x - (1 - t) mu) / r(t); and dx/dt = noise - x0."""
    mu, s = np.array([[0.5, -1.0, 0.2]]), 0.2
    with jax.enable_x64(True):
        mixture = sx.GaussianMixture(jnp.asarray(mu), jnp.asarray([s]), jnp.asarray([1.0]))
        x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (5, 3), jnp.float64))
        for t in (0.05, 0.5, 1.0):
            r = np.sqrt((1 - t) ** 2 * s**2 + t**2)
            dr = (t - (1 - t) * s**2) / r
            exact = -mu + dr * (x - (1 - t) * mu) / r
            velocity = mixture.denoiser(SCHEDULE, "velocity").velocity(jnp.asarray(x), t)
            np.testing.assert_allclose(velocity, exact, atol=1e-12)
        mixture = _mixture((0.05, 0.25))
        noise = mixture.denoiser(SCHEDULE, "noise").noise(jnp.asarray(x[:, :2].repeat(2, 1)), 0.3)
        data = mixture.denoiser(SCHEDULE, "data").data(jnp.asarray(x[:, :2].repeat(2, 1)), 0.3)
        velocity = mixture.denoiser(SCHEDULE, "velocity").velocity(jnp.asarray(x[:, :2].repeat(2, 1)), 0.3)
        np.testing.assert_allclose(velocity, noise - data, atol=1e-12)


@pytest.mark.parametrize("name", sorted(ORDERS))
def test_convergence_order(problem, name):
    model, noise, data = problem
    with jax.enable_x64(True):
        errors = [
            _rms(sx.sample(model, name, noise, steps=steps, grid="uniform", t_end=T_END)[0], data)
            for steps in STEPS
        ]
    slope = np.log(errors[0] / errors[1]) / np.log(STEPS[1] / STEPS[0])
    assert abs(slope - ORDERS[name]) < 0.3, (name, errors, slope)


@pytest.mark.parametrize("name", sorted(ORDERS))
def test_inversion_error_falls_with_steps(problem, name):
    model, noise, data = problem
    with jax.enable_x64(True):
        errors = [
            _rms(sx.invert(model, name, jnp.asarray(data), steps=steps, grid="uniform", t_end=T_END)[0], noise)
            for steps in STEPS
        ]
    slope = np.log(errors[0] / errors[1]) / np.log(STEPS[1] / STEPS[0])
    assert slope > ORDERS[name] - 0.3, (name, errors)


def test_evaluation_counts():
    counts = {name: sx.solvers.get(name).evaluations(10) for name in ORDERS}
    assert counts == {
        "euler": 10, "heun": 20, "midpoint": 20, "rk4": 40, "rf-solver-2": 20, "rf-solver-3": 30, "fireflow": 11,
        "fireflow-3": 11,
    }
    assert sx.solvers.get("fireflow").plan(SCHEDULE, jnp.linspace(1.0, 0.0, 11)).num_evaluations == 11


def test_rf_solver_2_is_the_midpoint_rule(problem):
    model, noise, _ = problem
    with jax.enable_x64(True):
        x_rf, _ = sx.sample(model, "rf-solver-2", noise, steps=STEPS[0], grid="uniform", t_end=T_END)
        x_mid, _ = sx.sample(model, "midpoint", noise, steps=STEPS[0], grid="uniform", t_end=T_END)
    np.testing.assert_allclose(x_rf, x_mid, atol=1e-13)


def test_first_order_dpm_solver_pp_is_euler(problem):
    model, noise, _ = problem
    with jax.enable_x64(True):
        x_dpm, _ = sx.sample(model, "dpm++1", noise, steps=STEPS[0], grid="uniform", t_end=T_END)
        x_euler, _ = sx.sample(model, "euler", noise, steps=STEPS[0], grid="uniform", t_end=T_END)
    np.testing.assert_allclose(x_dpm, x_euler, atol=1e-12)


def test_fireflow_reuses_the_previous_midpoint_velocity(problem):
    model, noise, _ = problem
    with jax.enable_x64(True):
        times = sx.solvers.time_grid(SCHEDULE, STEPS[0], "uniform", t_end=T_END)
        x, velocity = noise, model.velocity(noise, times[0])
        for t, t_next in zip(times[:-1], times[1:], strict=True):
            h = t_next - t
            velocity = model.velocity(x + 0.5 * h * velocity, t + 0.5 * h)
            x = x + h * velocity
        sampled, info = sx.sample(model, "fireflow", noise, steps=STEPS[0], grid="uniform", t_end=T_END)
    np.testing.assert_allclose(sampled, x, atol=1e-12)
    assert int(info.nfe) == STEPS[0] + 1


def test_exponential_integrators_run_on_rectified_flow_to_zero(problem):
    """Through the Denoiser (velocity -> data prediction), from t = 1 (lambda = -inf) to
    sigma = 0 exactly (lambda = +inf)."""
    model, noise, _ = problem
    with jax.enable_x64(True):
        near_zero = 1e-7
        reference = model.data(jnp.asarray(_reference(model, noise, 1.0, near_zero)), near_zero)
        errors = [
            _rms(sx.sample(model, "dpm++2m", noise, steps=steps, grid="uniform", t_end=0.0)[0], reference)
            for steps in (10, 20)
        ]
    assert errors[1] < 0.5 * errors[0] < 0.01, errors
    # The noise-prediction form divides by alpha(1) = 0: a clear error, not NaN samples.
    with pytest.raises(ValueError, match="non-finite coefficients"):
        sx.sample(model, "dpm-solver-2m", noise, steps=4, grid="uniform", t_end=0.0)


def test_reversed_time_adapter(problem):
    """A model trained with t = 0 at the noise end predicts dx/d(1 - t) from 1 - t."""
    model, noise, _ = problem
    reversed_network = jax.tree_util.Partial(lambda x, tau: -model.output(x, 1.0 - tau))
    adapted = sx.Denoiser(reversed_network, SCHEDULE, prediction="velocity", time_input="reversed")
    with jax.enable_x64(True):
        np.testing.assert_allclose(adapted.velocity(noise, 0.3), model.velocity(noise, 0.3), atol=1e-12)
        np.testing.assert_allclose(adapted.data(noise, 0.3), model.data(noise, 0.3), atol=1e-12)
        x_adapted, _ = sx.sample(adapted, "heun", noise, steps=STEPS[0], grid="uniform", t_end=T_END)
        x_model, _ = sx.sample(model, "heun", noise, steps=STEPS[0], grid="uniform", t_end=T_END)
    np.testing.assert_allclose(x_adapted, x_model, atol=1e-12)


def test_shifted_grid():
    times = sx.solvers.time_grid(SCHEDULE, 4, "shifted", shift=3.0)
    u = np.linspace(1.0, 0.0, 5)
    np.testing.assert_allclose(times, 3 * u / (1 + 2 * u), atol=1e-6)
    inner = sx.solvers.time_grid(SCHEDULE, 4, "shifted", t_start=0.9, t_end=0.1, shift=3.0)
    np.testing.assert_allclose(inner[jnp.array([0, -1])], [0.9, 0.1], atol=1e-6)
    with pytest.raises(ValueError, match="shift"):
        sx.solvers.time_grid(SCHEDULE, 4, "shifted", shift=-1.0)


def test_adaptive_flow_solver(problem):
    model, noise, data = problem
    with jax.enable_x64(True):
        solver = sx.solvers.FlowAdaptive(method="tsit5", rtol=1e-7, atol=1e-7)
        x, info = sx.sample(model, solver, noise, t_end=T_END)
    assert _rms(x, data) < 1e-5
    assert info.nfe.shape == (noise.shape[0],) and int(info.nfe.min()) > 6
    with pytest.raises(ValueError, match="method"):
        sx.solvers.FlowAdaptive(method="rk45")


@pytest.mark.parametrize("steps", [3, 20, 60])
def test_reversible_round_trip_is_exact_in_float32(steps):
    mixture = _mixture((0.05, 0.25))
    model = mixture.denoiser(SCHEDULE, "velocity")
    data = mixture.sample(jax.random.PRNGKey(1), 64).astype(jnp.float32)
    state, info = reversible_invert(model, data, steps=steps, t_end=T_END)
    back, _ = reversible_sample(model, state, steps=steps, t_end=T_END)
    assert int(info.nfe) == steps + 1
    assert float(jnp.max(jnp.abs(back - data))) < 1e-5
    if steps == 20:  # keeping only the noise, not its companion, loses exactness
        lossy, _ = reversible_sample(model, ReversibleState.start(state.x), steps=steps, t_end=T_END)
        assert float(jnp.max(jnp.abs(lossy - data))) > 1e-4


def test_reversible_inversion_approaches_the_exact_inverse(problem):
    model, noise, data = problem
    with jax.enable_x64(True):
        errors = [
            _rms(reversible_invert(model, jnp.asarray(data), steps=steps, t_end=T_END)[0].x, noise)
            for steps in STEPS
        ]
        sampled, _ = reversible_sample(model, noise, steps=16, t_end=T_END)
    assert np.log2(errors[0] / errors[1]) > 1.7, errors
    assert _rms(sampled, data) < 1e-2
