"""Tests of local regularization (Pal et al. 2023) and the biased step sampler."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplax.neural_ode import (
    LocalRegularization,
    RegularizedSolver,
    ReservoirSolver,
    integrate,
    local_penalty,
    solve,
)


def field(t, y, a):
    return a[0] * jnp.tanh(a[1] * y) + jnp.sin(t)


THETA = np.array([-1.3, 2.0])
Y0 = np.array([1.0, -0.5])


def test_local_step_matches_the_wrapper_on_the_same_step():
    # One step of the wrapper solve from (t, y) with step dt accumulates E * dt and the
    # stiffness term; local_penalty with the same dt must return the same numbers.
    t, dt, y = 0.3, 0.2, jnp.array([0.4, -1.1])
    solver = RegularizedSolver(rtol=1e-5, atol=1e-5)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field), solver, t, t + dt, None, y, THETA,
        stepsize_controller=diffrax.StepTo(ts=jnp.array([t, t + dt])),
        saveat=diffrax.SaveAt(t1=True, solver_state=True),
    )
    state = sol.solver_state[1]
    local = local_penalty(diffrax.ODETerm(field), THETA, t, y, 1.0, rtol=1e-5, atol=1e-5,
                          dt=dt)
    np.testing.assert_allclose(local.error, state.error_sum, rtol=1e-12)
    np.testing.assert_allclose(local.stiffness, state.stiffness_sum, rtol=1e-12)


def test_local_stiffness_recovers_lambda_and_step_is_controller_like():
    for lam in (3.0, 30.0):
        local = local_penalty(diffrax.ODETerm(lambda t, y, a: -a * y), jnp.asarray(lam), 0.0,
                              jnp.array([1.0, 2.0]), 10.0, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(local.stiffness * 3.5068469938048787, lam, rtol=1e-6)
        # After the controller's trial steps the scaled error E = error / dt sits near
        # the PID target 0.9^5 ~ 0.6 (between accept-with-margin and reject).
        assert 0.2 < float(local.error / local.dt) < 1.0


def local_loss(theta, adjoint, sampling):
    out = integrate(LocalRegularization("error", sampling), lambda t, y, a: a * jnp.tanh(y),
                    theta, Y0, 0.0, jnp.array([2.0]), key=jax.random.key(3), rtol=1e-5,
                    atol=1e-5, adjoint=adjoint, max_steps=64)
    return out.penalty, out.ys


def test_local_penalties_work_with_backsolve():
    # Both samplers in one jitted loss, so each adjoint compiles once.
    theta = jnp.array(-1.3)

    def loss(th, adjoint):
        return local_loss(th, adjoint, "unbiased")[0] + 2 * local_loss(th, adjoint, "biased")[0]

    grads = [
        jax.jit(jax.grad(lambda th, adjoint=adjoint: loss(th, adjoint)))(theta)
        for adjoint in (diffrax.RecursiveCheckpointAdjoint(), diffrax.BacksolveAdjoint())
    ]
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-10)
    assert abs(float(grads[0])) > 1e-6


def test_unbiased_save_time_does_not_leak_into_ys():
    _, ys = jax.jit(lambda th: local_loss(th, None, "unbiased"))(THETA)
    ref = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, a: a * jnp.tanh(y)), diffrax.Tsit5(), 0.0, 2.0, None,
        Y0, THETA, stepsize_controller=diffrax.PIDController(rtol=1e-5, atol=1e-5),
    )
    np.testing.assert_allclose(ys, ref.ys, rtol=1e-4)


def test_reservoir_picks_accepted_step_starts_uniformly():
    ts = jnp.array([0.0, 0.1, 0.3, 0.6, 1.0])

    def pick(key):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, a: -y), ReservoirSolver(diffrax.Tsit5(), key),
            0.0, 1.0, None, jnp.ones(1), stepsize_controller=diffrax.StepTo(ts=ts),
            saveat=diffrax.SaveAt(t1=True, solver_state=True),
        )
        sample = sol.solver_state[1]
        return sample.t, sample.dt, sample.y[0]

    t, dt, y = jax.vmap(pick)(jax.random.split(jax.random.key(0), 4000))
    idx = jnp.searchsorted(ts, t)
    np.testing.assert_allclose(ts[idx], t, atol=1e-12)
    np.testing.assert_allclose(dt, ts[idx + 1] - t, atol=1e-12)
    np.testing.assert_allclose(y, jnp.exp(-t), rtol=1e-5)
    freq = np.bincount(np.asarray(idx), minlength=4) / 4000
    np.testing.assert_allclose(freq, 0.25, atol=0.03)  # 4 sigma of a binomial(4000, 1/4)


def test_reservoir_counts_only_accepted_steps():
    sol, pen = solve(
        diffrax.ODETerm(lambda t, y, a: jnp.stack([y[1], -3.0 * jnp.sin(y[0])])),
        RegularizedSolver(rtol=1e-6, atol=1e-6), 0.0, 20.0, jnp.array([2.5, 0.0]), dt0=2.0,
    )
    wrapped = ReservoirSolver(diffrax.Tsit5(), jax.random.key(1))
    sol2 = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, a: jnp.stack([y[1], -3.0 * jnp.sin(y[0])])), wrapped,
        0.0, 20.0, 2.0, jnp.array([2.5, 0.0]), saveat=diffrax.SaveAt(t1=True, solver_state=True),
        stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-6),
    )
    assert int(sol2.stats["num_rejected_steps"]) > 0
    assert int(sol2.solver_state[1].count) == int(pen.num_accepted)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="sampling"):
        LocalRegularization("error", "uniform")
    with pytest.raises(ValueError, match="kind"):
        LocalRegularization("jacobian")
    with pytest.raises(ValueError, match="key"):
        integrate(LocalRegularization(), field, THETA, Y0, 0.0, jnp.array([1.0]))
    with pytest.raises(TypeError, match="solver"):
        local_penalty(diffrax.ODETerm(field), THETA, 0.0, Y0, 1.0, rtol=1e-5, atol=1e-5,
                      solver=diffrax.Kvaerno5())
