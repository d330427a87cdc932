"""Tests of the ERNODE/SRNODE wrapper solver (Pal et al. 2021) against analytic truth."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplax.neural_ode import (
    GlobalRegularization,
    RegularizedSolver,
    aggregate,
    integrate,
    solve,
    stability_size,
)

Y0 = np.array([2.5, 0.0])


def pendulum(t, y, args):
    return jnp.stack([y[1], -args * jnp.sin(y[0])])


def test_wrapper_leaves_solution_steps_unchanged_and_counts_evaluations():
    calls = []

    def counted(t, y, args):
        jax.debug.callback(lambda: calls.append(1))
        return pendulum(t, y, args)

    saveat = diffrax.SaveAt(ts=jnp.linspace(0.0, 20.0, 7))
    ref = diffrax.diffeqsolve(
        diffrax.ODETerm(pendulum), diffrax.Tsit5(), 0.0, 20.0, None, Y0, 3.0, saveat=saveat,
        stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-6),
    )
    sol, pen = solve(diffrax.ODETerm(counted), RegularizedSolver(rtol=1e-6, atol=1e-6),
                     0.0, 20.0, Y0, 3.0, saveat=saveat)
    jax.block_until_ready(sol.ys)
    np.testing.assert_array_equal(sol.ys, ref.ys)
    for k in ("num_steps", "num_accepted_steps", "num_rejected_steps"):
        assert int(sol.stats[k]) == int(ref.stats[k])
    # Accumulations happen on accepted steps only, also when steps are rejected.
    assert int(ref.stats["num_rejected_steps"]) > 5
    assert int(pen.num_accepted) == int(ref.stats["num_accepted_steps"])
    assert int(pen.num_evaluations) == len(calls)


def test_aggregations_are_consistent():
    sol, pen = solve(diffrax.ODETerm(pendulum), RegularizedSolver(rtol=1e-6, atol=1e-6),
                     0.0, 20.0, Y0, 3.0, aggregation="sum",
                     saveat=diffrax.SaveAt(ts=jnp.linspace(0.0, 20.0, 7)))
    state = sol.solver_state[1]
    err_mean, stiff_mean = aggregate(state, "mean")
    err_max, stiff_max = aggregate(state, "max")
    n = int(state.num_accepted)
    np.testing.assert_allclose(err_mean * n, pen.error, rtol=1e-12)
    np.testing.assert_allclose(stiff_mean * n, pen.stiffness, rtol=1e-12)
    assert err_mean <= err_max <= pen.error and stiff_mean <= stiff_max
    # Each accepted step has scaled error below 1, so E * dt < dt and sum E dt < t1 - t0.
    assert 0 < float(pen.error) < 20.0
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(state, "median")


def test_stability_sizes():
    # Real-axis stability boundaries of the fifth-order pairs (Tsit5 as in OrdinaryDiffEq).
    assert stability_size(diffrax.Tsit5.tableau) == pytest.approx(3.5068, abs=1e-4)
    assert stability_size(diffrax.Dopri5.tableau) == pytest.approx(3.3066, abs=1e-4)
    assert stability_size(diffrax.Heun.tableau) == pytest.approx(2.0, abs=1e-6)


def test_stiffness_estimate_recovers_lambda():
    solver = RegularizedSolver(rtol=1e-6, atol=1e-9)
    for lam in (1.0, 10.0, 100.0):
        sol, pen = solve(diffrax.ODETerm(lambda t, y, a: -a * y), solver, 0.0, 1.0,
                         jnp.array([1.0, -2.0, 0.5]), jnp.asarray(lam))
        _, stiff_max = aggregate(sol.solver_state[1], "max")
        np.testing.assert_allclose(pen.stiffness * solver.stability_size, lam, rtol=1e-6)
        np.testing.assert_allclose(stiff_max * solver.stability_size, lam, rtol=1e-6)


def penalties_fn(theta, controller):
    """(mean E dt, mean stiffness) of a solve, and the solution (its step times)."""
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, a: a[0] * jnp.tanh(a[1] * y) + jnp.sin(t)),
        RegularizedSolver(rtol=1e-5, atol=1e-5), 0.0, 3.0,
        None if isinstance(controller, diffrax.StepTo) else 0.1, jnp.array([1.0, -0.5]),
        theta, stepsize_controller=controller, max_steps=64,
        saveat=diffrax.SaveAt(steps=True, solver_state=True),
    )
    return jnp.stack(aggregate(sol.solver_state[1], "mean")), sol


def test_penalty_gradient_matches_frozen_step_finite_differences():
    theta = jnp.array([-1.3, 2.0])
    pid = diffrax.PIDController(rtol=1e-5, atol=1e-5)
    _, sol = penalties_fn(theta, pid)
    n = int(sol.stats["num_accepted_steps"])
    frozen = diffrax.StepTo(ts=jnp.concatenate([jnp.zeros(1), sol.ts[:n]]))
    jac = jax.jit(jax.jacrev(lambda th: penalties_fn(th, pid)[0]))(theta)
    value = jax.jit(lambda th: penalties_fn(th, frozen)[0])
    h = 1e-6
    for i in range(2):
        e = jnp.zeros(2).at[i].set(h)
        fd = (value(theta + e) - value(theta - e)) / (2 * h)
        np.testing.assert_allclose(jac[:, i], fd, rtol=1e-5)
    assert float(jnp.abs(jac).min()) > 1e-4


def global_loss(theta, adjoint):
    out = integrate(GlobalRegularization("error"), lambda t, y, a: a * jnp.tanh(y),
                    theta, jnp.array([1.0, -0.5]), 0.0, jnp.array([2.0]), adjoint=adjoint,
                    max_steps=64)
    return out.penalty + jnp.sum(out.ys**2)


def test_direct_adjoint_matches_recursive_checkpoint():
    theta = jnp.array(-0.7)
    g_rc = jax.jit(jax.grad(lambda th: global_loss(th, diffrax.RecursiveCheckpointAdjoint())))(
        theta
    )
    g_direct = jax.jit(jax.grad(lambda th: global_loss(th, diffrax.DirectAdjoint())))(theta)
    np.testing.assert_allclose(g_direct, g_rc, rtol=1e-10)


@pytest.mark.parametrize("adjoint", [diffrax.BacksolveAdjoint(), diffrax.ImplicitAdjoint()])
def test_zero_gradient_adjoints_raise(adjoint):
    with pytest.raises(ValueError, match="adjoint="):
        solve(diffrax.ODETerm(pendulum), RegularizedSolver(rtol=1e-6, atol=1e-6), 0.0, 1.0,
              Y0, 3.0, adjoint=adjoint)
    with pytest.raises(ValueError, match="adjoint="):
        global_loss(jnp.array(-0.7), adjoint)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="rtol"):
        RegularizedSolver(rtol=0.0, atol=1e-6)
    with pytest.raises(TypeError, match="solver"):
        RegularizedSolver(diffrax.Kvaerno5(), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="stiffness"):
        RegularizedSolver(diffrax.Bosh3(), rtol=1e-6, atol=1e-6)
    RegularizedSolver(diffrax.Bosh3(), rtol=1e-6, atol=1e-6, stiffness=False)
