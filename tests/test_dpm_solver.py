"""DPM-Solver and DPM-Solver++ against the exact flow map of a Gaussian mixture."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax as sx
from samplax.solvers import DPMSolver
from samplax.solvers.dpm_solver import singlestep_orders
from samplax.solvers.toolkit import multistep_orders

T_END = 1e-2


@pytest.fixture(scope="module")
def problem():
    """A smooth 4-D mixture under VPLinear, so that errors are in the asymptotic regime."""
    with jax.enable_x64(True):
        mixture = sx.GaussianMixture.random(0, 4, 3, std_range=(0.5, 1.0))
        schedule = sx.schedules.VPLinear()
        noise = jax.random.normal(jax.random.PRNGKey(0), (16, 4))
        reference = mixture.flow_map(schedule.sigma(1.0) * noise, schedule, 1.0, T_END)
        return mixture, schedule, noise, reference


def _errors(problem, solver, steps_list, prediction="noise"):
    mixture, schedule, noise, reference = problem
    model = mixture.denoiser(schedule, prediction)
    errors = []
    for steps in steps_list:
        x, info = sx.sample(model, solver, noise, steps=steps, grid="logsnr", t_end=T_END)
        assert int(info.nfe) == steps
        errors.append(float(jnp.sqrt(jnp.mean((x - reference) ** 2))))
    return np.array(errors)


def _slope(steps_list, errors):
    return -np.polyfit(np.log(steps_list), np.log(errors), 1)[0]


# (solver, steps, theoretical order). The reference 3M formula (DPM-Solver's official code,
# also diffusers) weights the second divided difference by half of what the Taylor
# expansion needs, so it converges at order 2; our 'taylor' 3M is third order. Singlestep-3
# uses step counts = 2 mod 3, whose order split ends with a second-order step (a final
# first-order step would limit the global order to 2).
CASES = [
    (DPMSolver(order=1), [8, 16, 32], 1),
    (DPMSolver(order=2, lower_order_final=False), [16, 32, 64], 2),
    (DPMSolver(order=2, prediction="noise", variant="taylor", lower_order_final=False), [16, 32, 64], 2),
    (DPMSolver(order=3, variant="taylor", lower_order_final=False), [16, 32, 64], 3),
    (DPMSolver(order=3, prediction="noise", lower_order_final=False), [16, 32, 64], 2),
    (DPMSolver(order=2, method="singlestep"), [16, 32, 64], 2),
    (DPMSolver(order=3, method="singlestep"), [17, 32, 65], 3),
    (DPMSolver(order=3, method="singlestep", prediction="noise", variant="taylor"), [32, 65, 128], 3),
]


@pytest.mark.parametrize("solver, steps_list, order", CASES, ids=lambda c: repr(c) if isinstance(c, int) else None)
def test_convergence_order(x64, problem, solver, steps_list, order):
    errors = _errors(problem, solver, steps_list)
    assert np.all(np.diff(errors) < 0), errors
    slope = _slope(steps_list, errors)
    assert abs(slope - order) < 0.3, f"slope {slope:.2f} for theoretical order {order}; errors {errors}"


def test_first_order_is_ddim(x64, problem):
    """DPM-Solver-1, DPM-Solver++-1 and DDIM (Song et al. 2021) are one update."""
    mixture, schedule, noise, _ = problem
    model = mixture.denoiser(schedule, "noise")
    times = sx.solvers.time_grid(schedule, 7, "uniform", t_end=T_END)
    x = schedule.sigma(1.0) * noise
    for t, t_next in zip(times[:-1], times[1:], strict=True):  # DDIM written out, one step at a time
        eps = model.noise(x, t)
        x0 = (x - schedule.sigma(t) * eps) / schedule.alpha(t)
        x = schedule.alpha(t_next) * x0 + schedule.sigma(t_next) * eps
    for name in ("ddim", "dpm++1", "dpm-solver-1"):
        result, _ = sx.sample(model, name, noise, grid=times)
        np.testing.assert_allclose(result, x, rtol=1e-10, atol=1e-12, err_msg=name)


def test_denoise_to_zero_returns_the_data_prediction(x64, problem):
    mixture, schedule, noise, _ = problem
    model = mixture.denoiser(schedule, "noise")
    # Without lower-order final steps, which count the denoising step as a final step.
    for solver in (
        DPMSolver(order=2, lower_order_final=False),
        DPMSolver(order=3, prediction="noise", lower_order_final=False),
    ):
        x, info = sx.sample(model, solver, noise, steps=6, t_end=T_END)
        denoised, denoised_info = sx.sample(model, solver, noise, steps=6, t_end=T_END, denoise_to_zero=True)
        assert int(denoised_info.nfe) == int(info.nfe) + 1
        np.testing.assert_allclose(denoised, model.data(x, T_END), rtol=1e-9, atol=1e-10)


def test_adaptive_solver_meets_its_tolerance(x64, problem):
    mixture, schedule, noise, reference = problem
    model = mixture.denoiser(schedule, "noise")
    previous_nfe = 0
    for tolerance in (1e-3, 1e-4):
        solver = sx.solvers.AdaptiveDPMSolver(order=3, atol=tolerance, rtol=tolerance)
        x, info = sx.sample(model, solver, noise, t_end=T_END)
        error = float(jnp.sqrt(jnp.mean((x - reference) ** 2)))
        assert error < tolerance, (tolerance, error)
        assert info.nfe.shape == (noise.shape[0],) and int(info.nfe.min()) > previous_nfe
        previous_nfe = int(info.nfe.max())
    # DPM-Solver-12 with the same tolerance needs more evaluations than -23.
    x, info_12 = sx.sample(model, sx.solvers.get("dpm-solver-12"), noise, t_end=T_END)
    x, info_23 = sx.sample(model, sx.solvers.get("dpm-solver-23"), noise, t_end=T_END)
    assert float(info_12.nfe.mean()) > float(info_23.nfe.mean())


def test_adaptive_sample_does_not_depend_on_the_batch(x64, problem):
    mixture, schedule, noise, _ = problem
    model = mixture.denoiser(schedule, "noise")
    solver = sx.solvers.get("dpm-solver-adaptive")
    full, info = sx.sample(model, solver, noise, t_end=T_END)
    alone, info_alone = sx.sample(model, solver, noise[3:4], t_end=T_END)
    np.testing.assert_allclose(alone[0], full[3], rtol=1e-12)
    assert int(info_alone.nfe[0]) == int(info.nfe[3])


def test_order_schedules():
    np.testing.assert_array_equal(multistep_orders(3, 5, False, False), [1, 2, 3, 3, 3])
    np.testing.assert_array_equal(multistep_orders(3, 5, True, False), [1, 2, 3, 2, 1])
    np.testing.assert_array_equal(multistep_orders(3, 5, True, True), [1, 2, 3, 3, 2])
    for order in (1, 2, 3):
        for steps in range(1, 12):
            orders = singlestep_orders(order, steps)
            assert orders.sum() == steps and orders.max() <= order
    np.testing.assert_array_equal(singlestep_orders(3, 6), [3, 2, 1])
    np.testing.assert_array_equal(singlestep_orders(3, 8), [3, 3, 2])


def test_registry():
    names = sx.solvers.names()
    for name in ("ddim", "dpm-solver-2s", "dpm-solver-3s", "dpm++2s", "dpm++2m", "dpm++3m", "dpm-solver-adaptive"):
        assert name in names
    assert sx.solvers.get("dpm++3m") == DPMSolver(order=3, method="multistep", prediction="data")
    with pytest.raises(ValueError, match="unknown solver 'dpm\\+\\+9m'"):
        sx.solvers.get("dpm++9m")
    with pytest.raises(ValueError, match="order"):
        DPMSolver(order=4)
    with pytest.raises(ValueError, match="method"):
        DPMSolver(method="adams")
