"""Adams-Bashforth (and k-diffusion's LMS, its order 4): exact on polynomial velocities on
non-uniform grids, the classical weights on uniform ones, an independent implementation of
LMS on the EDM schedule, and the order of convergence on the rectified-flow mixture."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate

import samplax as sx
from samplax.solvers.adams import AdamsBashforth

FLOW = sx.schedules.RectifiedFlow()


def _non_uniform_grid(steps, seed=0):
    increments = np.random.default_rng(seed).uniform(0.5, 1.5, steps)
    return jnp.asarray(1.0 - np.concatenate([[0.0], np.cumsum(increments)]) / increments.sum() * 0.95)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_each_step_integrates_polynomials_of_its_order_exactly(x64, order):
    """Once warmed up, step i's weights on v(t_i), ..., v(t_{i - order + 1}) integrate every
    polynomial in t of degree < order exactly over [t_i, t_{i+1}], on any grid."""
    times = _non_uniform_grid(9)
    plan = AdamsBashforth(order=order, lower_order_final=False).plan(FLOW, times)
    polynomial = np.polynomial.Polynomial(np.random.default_rng(1).normal(size=order))
    antiderivative = polynomial.integ()
    t = np.asarray(times)
    for i in range(order - 1, len(t) - 1):
        weights = np.asarray(plan.update_history[i])
        quadrature = sum(weights[j] * polynomial(t[i - j]) for j in range(order))
        assert quadrature == pytest.approx(antiderivative(t[i + 1]) - antiderivative(t[i]), rel=1e-11, abs=1e-13)
    assert plan.num_evaluations == 9 and plan.evaluates_at_state


def test_uniform_grid_gives_the_classical_weights(x64):
    times = jnp.linspace(1.0, 0.0, 7)
    plan = AdamsBashforth(order=4, lower_order_final=False).plan(FLOW, times)
    h = -1.0 / 6
    np.testing.assert_allclose(plan.update_history[5], h * np.array([55, -59, 37, -9]) / 24, rtol=1e-12)
    np.testing.assert_allclose(plan.update_history[1], h * np.array([3, -1, 0, 0]) / 2, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(plan.update_history[0], [h, 0, 0, 0], rtol=1e-12, atol=1e-15)


def test_lms_equals_an_independent_implementation_on_the_edm_schedule(x64):
    """k-diffusion's LMS, written out: integrate the Lagrange basis in sigma by adaptive
    quadrature at every step, with orders 1, 2, 3, 4, 4, ..."""
    schedule = sx.schedules.EDM()
    mixture = sx.GaussianMixture.random(0, 4, 3, std_range=(0.3, 0.5))
    model = mixture.denoiser(schedule, "data")
    noise = jax.random.normal(jax.random.PRNGKey(0), (6, 4), jnp.float64)
    times = sx.solvers.time_grid(schedule, 12, "karras", t_end=0.05)
    sampled, info = sx.sample(model, "lms", noise, grid=times)
    sigmas, x, derivatives = np.asarray(times), np.asarray(schedule.sigma(times[0]) * noise), []
    for i in range(len(sigmas) - 1):
        derivatives.insert(0, np.asarray(model.velocity(jnp.asarray(x), sigmas[i])))
        order = min(i + 1, 4)
        for j in range(order):
            nodes = sigmas[i - np.arange(order)]

            def basis(s, j=j, nodes=nodes):
                return np.prod([(s - nodes[m]) / (nodes[j] - nodes[m]) for m in range(len(nodes)) if m != j])

            coefficient = scipy.integrate.quad(basis, sigmas[i], sigmas[i + 1], epsrel=1e-13, epsabs=1e-14)[0]
            x = x + coefficient * derivatives[j]
    np.testing.assert_allclose(sampled, x, rtol=1e-9, atol=1e-10)
    assert int(info.nfe) == 12


def test_convergence(x64):
    """Order 2 is second order on uniform and shifted grids. Orders 3 and 4 warm up with
    Euler and second-order steps, whose local errors leave them between order 2 and their
    own at these step counts: their slopes lie above 2 and their errors below order 2's."""
    model = sx.GaussianMixture.random(0, 4, 3, std_range=(0.3, 0.5)).denoiser(FLOW, "velocity")
    noise = jax.random.normal(jax.random.PRNGKey(0), (32, 4), jnp.float64)
    reference, _ = sx.sample(model, "rk4", noise, steps=400, t_end=0.05)

    def errors(name, grid):
        samples = [sx.sample(model, name, noise, steps=steps, grid=grid, t_end=0.05)[0] for steps in (16, 32)]
        return [float(jnp.sqrt(jnp.mean((x - reference) ** 2))) for x in samples]

    for grid in ("uniform", "shifted"):
        second = errors("adams-bashforth-2", grid)
        assert abs(np.log2(second[0] / second[1]) - 2.0) < 0.3, (grid, second)
        for name in ("adams-bashforth-3", "lms"):
            higher = errors(name, grid)
            assert np.log2(higher[0] / higher[1]) > 2.0 and higher[1] < second[1], (name, grid, higher, second)


def test_declares_itself_a_velocity_multistep_solver():
    solver = sx.solvers.get("adams-bashforth-3")
    assert solver.multistep and solver.prediction == "velocity" and solver.evaluations(10, True) == 11
    assert solver.steps_for(10) == 10
    with pytest.raises(ValueError, match="order"):
        AdamsBashforth(order=5)
    with pytest.raises(ValueError, match="data or noise prediction"):
        sx.solvers.UniC(predictor=solver)
