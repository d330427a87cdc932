"""DEIS (tAB, rhoAB, rhoRK) and iPNDM against the exact flow map of a Gaussian mixture."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from convergence import FAST_COMPILE, T_END, errors

import samplax as sx
from samplax.solvers.deis import DEIS, IPNDM, RhoRungeKutta

# (solver, steps, theoretical order). The slope is taken between `steps` and 2 * steps,
# where each method has reached its asymptotic rate on this problem (the third- and
# fourth-order methods get there later; the fourth-order ones keep every step at full
# order, since a first-order last step would show its own rate first). iPNDM's fixed
# equal-step weights make it second order on a grid that is not uniform in rho.
ORDER_CASES = [
    (DEIS(order=1, method="tab"), 32, 1),
    (DEIS(order=2, method="tab"), 32, 2),
    (DEIS(order=3, method="tab"), 64, 3),
    (DEIS(order=4, method="tab", lower_order_final=False), 128, 4),
    (DEIS(order=2, method="rhoab"), 32, 2),
    (DEIS(order=3, method="rhoab"), 64, 3),
    (DEIS(order=4, method="rhoab", lower_order_final=False), 128, 4),
    (RhoRungeKutta("heun"), 16, 2),
    (RhoRungeKutta("kutta3"), 32, 3),
    (RhoRungeKutta("rk4"), 16, 4),
    (IPNDM(order=4), 32, 2),
]


@pytest.fixture(scope="module")
def order_errors(problem):
    return errors(problem, [(solver, (steps, 2 * steps)) for solver, steps, _ in ORDER_CASES])


@pytest.mark.parametrize("solver, steps, order", ORDER_CASES, ids=lambda v: repr(v) if hasattr(v, "plan") else None)
def test_convergence_order(order_errors, solver, steps, order):
    coarse, fine = order_errors[solver, steps], order_errors[solver, 2 * steps]
    slope = np.log2(coarse / fine)
    assert abs(slope - order) < 0.3, (coarse, fine, slope)


@pytest.mark.parametrize("solver", [DEIS(order=1, method="tab"), DEIS(order=1, method="rhoab"), IPNDM(order=1)])
def test_first_order_is_ddim(solver):
    """Every order-one variant is DDIM, coefficient by coefficient."""
    with jax.enable_x64(True):
        schedule = sx.schedules.VPDiscrete.ddpm_linear()
        times = sx.solvers.time_grid(schedule, 7, "karras")
        ddim = sx.solvers.DPMSolver(order=1, prediction="noise")
        both = jax.jit(lambda t: (solver.plan(schedule, t), ddim.plan(schedule, t)), compiler_options=FAST_COMPILE)
        ours, theirs = both(times)
        np.testing.assert_allclose(ours.update_state, theirs.update_state, rtol=1e-13, atol=0)
        np.testing.assert_allclose(ours.update_history[:, :1], theirs.update_history, rtol=1e-13, atol=0)


def test_first_order_sample_matches_ddim_data_prediction(problem):
    model, noise = problem[:2]
    with jax.enable_x64(True):
        ours, _ = sx.sample(model, "deis-tab1", noise, steps=6, t_end=T_END, denoise_to_zero=True)
        ddim, _ = sx.sample(model, "ddim", noise, steps=6, t_end=T_END, denoise_to_zero=True)
        np.testing.assert_allclose(ours, ddim, rtol=1e-10, atol=1e-12)


def test_tab_quadrature_is_converged():
    """The Gauss-Legendre coefficients of tAB-DEIS agree with a 10x finer rule to 1e-12
    relative, from few (large) steps to many."""
    schedule = sx.schedules.VPLinear()

    def differences(coarse_times, fine_times):
        out = []
        for times in (coarse_times, fine_times):
            default = DEIS(order=3).plan(schedule, times).update_history
            fine = DEIS(order=3, quadrature_nodes=240).plan(schedule, times).update_history
            out.append(jnp.max(jnp.abs(default - fine)) / jnp.max(jnp.abs(fine)))
        return out

    differences = jax.jit(differences, compiler_options=FAST_COMPILE)
    with jax.enable_x64(True):
        grids = [sx.solvers.time_grid(schedule, steps, "logsnr") for steps in (4, 40)]
        assert max(float(d) for d in differences(*grids)) < 1e-12


@pytest.mark.parametrize("order", [3, 4])
def test_tab_coefficients_equal_the_papers_integrals_in_t(order):
    """The tAB-DEIS weights, taken in lambda, equal the DEIS paper's (and jax_deis's)
    definition in t, computed here independently by adaptive quadrature in t:
    C_ij = int_{t_i}^{t_{i+1}} sqrt(abar_{i+1} / abar(tau)) (-(log abar)'(tau) / 2)
    / sqrt(1 - abar(tau)) l_j(tau) dtau, with abar = alpha^2 and l_j the Lagrange basis in t
    through t_i, ..., t_{i-order+1}: to 1e-8 relative on a quadratic grid."""
    from scipy import integrate

    with jax.enable_x64(True):
        schedule = sx.schedules.VPLinear()
        times = sx.solvers.time_grid(schedule, 8, "quadratic")
        solver = DEIS(order=order, lower_order_final=False)
        weights = np.asarray(jax.jit(solver.plan, compiler_options=FAST_COMPILE)(schedule, times).update_history)

        def log_alpha_bar(t):
            return 2.0 * schedule.log_alpha(t)

        derivative = jax.jit(jax.grad(log_alpha_bar))
        times = np.asarray(times)
        for step in range(order - 1, len(times) - 1):
            nodes = times[step - np.arange(order)]  # t_i, t_{i-1}, ...
            alpha_bar_next = np.exp(float(log_alpha_bar(times[step + 1])))
            for j in range(order):
                others = np.delete(nodes, j)

                def integrand(tau, node=nodes[j], others=others, alpha_bar_next=alpha_bar_next):
                    alpha_bar = np.exp(float(log_alpha_bar(tau)))
                    basis = np.prod((tau - others) / (node - others))
                    return (np.sqrt(alpha_bar_next / alpha_bar) * -0.5 * float(derivative(tau))
                            / np.sqrt(1.0 - alpha_bar) * basis)

                expected, _ = integrate.quad(integrand, times[step], times[step + 1], epsabs=0, epsrel=1e-12)
                np.testing.assert_allclose(weights[step, j], expected, rtol=1e-8)


def test_rhoab_coefficients_are_exact_polynomial_integrals():
    """rhoAB-DEIS of order 2 integrates the line through (rho_{i-1}, eps_{i-1}) and
    (rho_i, eps_i) exactly: weight of eps_{i-1} = alpha_{i+1} d^2 / (2 (rho_{i-1} - rho_i))."""
    with jax.enable_x64(True):
        schedule = sx.schedules.VPLinear()
        times = sx.solvers.time_grid(schedule, 6, "logsnr")
        solver = DEIS(order=2, method="rhoab", lower_order_final=False)
        plan = jax.jit(solver.plan, compiler_options=FAST_COMPILE)(schedule, times)
        rho = np.exp(-np.asarray(schedule.lambda_(times)))
        alpha = np.asarray(schedule.alpha(times))
        step = rho[2:] - rho[1:-1]
        expected = alpha[2:] * step**2 / (2 * (rho[:-2] - rho[1:-1]))
        np.testing.assert_allclose(np.asarray(plan.update_history[1:, 1]), expected, rtol=1e-12)
        np.testing.assert_allclose(
            np.asarray(plan.update_history[1:, 0] + plan.update_history[1:, 1]), alpha[2:] * step, rtol=1e-12
        )


def test_rk_stage_times_and_evaluations():
    """RK4 in rho evaluates at rho_i, the rho-midpoint twice and rho_{i+1}."""
    with jax.enable_x64(True):
        schedule = sx.schedules.VPLinear()
        times = sx.solvers.time_grid(schedule, 3, "logsnr")
        rk4 = RhoRungeKutta("rk4")
        plan = jax.jit(lambda t: rk4.plan(schedule, t, denoise_to_zero=True), compiler_options=FAST_COMPILE)(times)
        assert plan.num_evaluations == RhoRungeKutta("rk4").evaluations(3, True) == 13
        stage_rho = np.exp(-np.asarray(schedule.lambda_(plan.times[:-1]))).reshape(3, 4)
        rho = np.exp(-np.asarray(schedule.lambda_(times)))
        np.testing.assert_allclose(stage_rho[:, 0], rho[:-1], rtol=1e-12)
        np.testing.assert_allclose(stage_rho[:, 1], stage_rho[:, 2], rtol=1e-12)
        np.testing.assert_allclose(stage_rho[:, 1], (rho[:-1] + rho[1:]) / 2, rtol=1e-10)
        np.testing.assert_allclose(stage_rho[:, 3], rho[1:], rtol=1e-12)


def test_registry_and_bad_input():
    for name in ["deis-tab1", "deis-tab2", "deis-tab3", "deis-tab4", "deis-rhoab1", "deis-rhoab2", "deis-rhoab3",
                 "deis-rhoab4", "deis-rhork2", "deis-rhork3", "deis-rhork4", "ipndm"]:
        assert sx.solvers.get(name).prediction == "noise"
    with pytest.raises(ValueError, match="order"):
        DEIS(order=5)
    with pytest.raises(ValueError, match="method"):
        DEIS(method="log")
    with pytest.raises(ValueError, match="tableau"):
        RhoRungeKutta("rk5")
    with pytest.raises(ValueError, match="order"):
        IPNDM(order=5)
