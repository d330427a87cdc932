"""UniPC (UniP predictor, UniC corrector) against the exact flow map of a Gaussian mixture."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from convergence import FAST_COMPILE, T_END, errors

import samplax as sx
from samplax.solvers import DPMSolver, UniC, UniP, unipc
from samplax.solvers.deis import DEIS
from samplax.solvers.engine import run_plan

DDIM = DPMSolver(order=1)
DPM_2M = DPMSolver(order=2)
DEIS_3 = DEIS(order=3, lower_order_final=False)

# (solver, steps, theoretical order); slopes between `steps` and 2 * steps. UniPC of order
# p is accurate to p + 1. The last step is predicted only, so with lower_order_final its
# first-order prediction would cap the global order at 2: order 3 runs without it.
ORDER_CASES = [
    (unipc(1, "bh2"), 32, 2),
    (unipc(2, "bh1"), 32, 3),
    (unipc(2, "bh2", "noise"), 32, 3),
    (unipc(3, "bh1", lower_order_final=False), 32, 4),
    (unipc(3, "bh2", "noise", lower_order_final=False), 32, 4),
]
# UniC raises the order of any multistep predictor by one (UniC behind DDIM is UniPC-bh1-1).
RAISE_CASES = [(DDIM, 1), (DPM_2M, 2)]


@pytest.fixture(scope="module")
def order_errors(problem):
    cases = [(solver, (steps, 2 * steps)) for solver, steps, _ in ORDER_CASES]
    for predictor, _ in RAISE_CASES:
        cases += [(predictor, (32, 64)), (UniC(predictor=predictor), (32, 64))]
    return errors(problem, cases)


def _slope(order_errors, solver, steps):
    return np.log2(order_errors[solver, steps] / order_errors[solver, 2 * steps])


@pytest.mark.parametrize("solver, steps, order", ORDER_CASES, ids=lambda v: repr(v) if hasattr(v, "plan") else None)
def test_convergence_order(order_errors, solver, steps, order):
    slope = _slope(order_errors, solver, steps)
    assert abs(slope - order) < 0.3, slope


@pytest.mark.parametrize("predictor, order", RAISE_CASES, ids=["ddim", "dpm++2m"])
def test_corrector_raises_order_by_one(order_errors, predictor, order):
    corrected = UniC(predictor=predictor)
    predicted_slope = _slope(order_errors, predictor, 32)
    corrected_slope = _slope(order_errors, corrected, 32)
    assert abs(predicted_slope - order) < 0.3, predicted_slope
    assert abs(corrected_slope - (order + 1)) < 0.3, corrected_slope
    assert order_errors[corrected, 64] < 0.5 * order_errors[predictor, 64]


def test_predictor_identities():
    """UniP-1 is DDIM and UniP-2 with bh2 is DPM-Solver++(2M) / DPM-Solver-2M, coefficient
    by coefficient; bh1 differs from bh2 at order 2."""

    def plans(times):
        pairs = []
        for prediction in ("data", "noise"):
            for ours, theirs in (
                (UniP(order=1, prediction=prediction), DPMSolver(order=1, prediction=prediction)),
                (UniP(order=2, variant="bh2", prediction=prediction), DPMSolver(order=2, prediction=prediction)),
            ):
                pairs.append((ours.plan(schedule, times), theirs.plan(schedule, times)))
        pairs.append((UniP(order=2, variant="bh1").plan(schedule, times), DPM_2M.plan(schedule, times)))
        return pairs

    with jax.enable_x64(True):
        schedule = sx.schedules.VPDiscrete.ddpm_linear()
        times = sx.solvers.time_grid(schedule, 9, "karras")
        pairs = jax.jit(plans, compiler_options=FAST_COMPILE)(times)
        for ours, theirs in pairs[:-1]:
            np.testing.assert_allclose(ours.update_state, theirs.update_state, rtol=1e-12)
            np.testing.assert_allclose(ours.update_history, theirs.update_history, rtol=1e-11, atol=1e-14)
        bh1, dpm = pairs[-1]
        assert float(jnp.max(jnp.abs(bh1.update_history - dpm.update_history))) > 1e-3


def test_corrector_costs_no_evaluation_and_skips_last_step(problem):
    """UniPC evaluates once per step (plus the denoising step), and its result is the
    uncorrected prediction of the last step: with the denoising step, sample() returns the
    data prediction exactly there."""
    model, noise = problem[:2]
    schedule = model.schedule
    solver = unipc(3, "bh2", lower_order_final=False)
    with jax.enable_x64(True):
        times = sx.solvers.time_grid(schedule, 6, "logsnr", t_end=T_END)
        x_start = schedule.sigma(1.0) * noise
        predict = model.predict("data")
        run = jax.jit(lambda t, x: run_plan(solver.plan(schedule, t), predict, x)[0], compiler_options=FAST_COMPILE)
        predicted = run(times, x_start)
        denoised, info = sx.sample(model, solver, noise, grid=times, denoise_to_zero=True)
        assert int(info.nfe) == solver.evaluations(6, True) == 7
        np.testing.assert_allclose(denoised, model.data(predicted, jnp.float64(T_END)), rtol=1e-10, atol=1e-12)


def test_corrector_behind_deis_works_in_noise_prediction():
    """UniC behind tAB-DEIS corrects in the noise prediction and keeps DEIS's NFE."""
    corrected = UniC(predictor=DEIS_3)
    assert corrected.prediction == "noise" and corrected.corrector_order == 3
    assert corrected.evaluations(10, True) == DEIS_3.evaluations(10, True) == 11


def test_registry_and_bad_input():
    for variant in ("bh1", "bh2"):
        for order in (1, 2, 3):
            assert sx.solvers.get(f"unipc-{variant}-{order}").prediction == "data"
            assert sx.solvers.get(f"unipc-{variant}-{order}-noise").prediction == "noise"
    with pytest.raises(ValueError, match="multistep"):
        UniC(predictor=DPMSolver(order=2, method="singlestep"))
    with pytest.raises(ValueError, match="variant"):
        UniP(variant="bh3")
    with pytest.raises(ValueError, match="order"):
        UniP(order=5)
