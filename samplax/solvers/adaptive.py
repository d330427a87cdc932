"""Adaptive DPM-Solver-12 and DPM-Solver-23 (Lu et al. 2022, section 3.3 and appendix).

Each attempt takes an embedded pair of singlestep steps in lambda — first with second
order (r1 = 1/2), or second with third order (r1 = 1/3, r2 = 2/3), the lower one reusing
the higher one's evaluations — and accepts it when the tolerance-scaled RMS difference is
at most one. Unlike the reference code, every sample has its own step size, so a sample
never depends on the rest of the batch, and the evaluation count is reported per sample.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from samplax.checks import check_choice, check_count, check_positive
from samplax.pytrees import static_field
from samplax.solvers.base import AdaptiveSolver
from samplax.solvers.dpm_solver import singlestep_coefficients
from samplax.solvers.exponential import EXPONENTIAL_PREDICTIONS

__all__ = ["AdaptiveDPMSolver"]


def _broadcast(coefficient, x):
    return coefficient.reshape(coefficient.shape + (1,) * (x.ndim - coefficient.ndim))


def _combine(state_coefficient, history_coefficients, x, history):
    """state * x + sum_k history[..., k] * predictions[k], per sample."""
    result = _broadcast(state_coefficient, x) * x
    for k, prediction in enumerate(history):
        result = result + _broadcast(history_coefficients[..., k], x) * prediction
    return result


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AdaptiveDPMSolver(AdaptiveSolver):
    """DPM-Solver-12 (order=2) or DPM-Solver-23 (order=3) with step size control.

    Attributes:
        order: 2 or 3, the order of the higher method of the embedded pair.
        prediction: "data" (DPM-Solver++) or "noise" (DPM-Solver).
        atol, rtol: tolerances of the error estimate; delta = max(atol, rtol max(|x_low|, |x|)).
        initial_step: first step size in lambda.
        safety: factor on the optimal next step size (theta in the paper).
        max_attempts: the most step attempts; `sample` raises an error when a sample has
            not reached t_end by then.
    """

    order: int = static_field(3)
    prediction: str = static_field("data")
    atol: float = static_field(0.0078)
    rtol: float = static_field(0.05)
    initial_step: float = static_field(0.05)
    safety: float = static_field(0.9)
    max_attempts: int = static_field(1000)

    def __post_init__(self):
        super().__post_init__()
        check_choice("adaptive DPM-Solver order", self.order, (2, 3))
        check_choice("prediction", self.prediction, EXPONENTIAL_PREDICTIONS)
        if not (self.atol > 0 and self.rtol > 0):
            raise ValueError(f"atol and rtol must be positive, got {self.atol}, {self.rtol}")
        check_positive("AdaptiveDPMSolver.initial_step", self.initial_step)
        if not 0 < self.safety <= 1:
            raise ValueError(f"AdaptiveDPMSolver.safety scales the optimal next step and must lie in (0, 1], "
                             f"got {self.safety}")
        check_count("AdaptiveDPMSolver.max_attempts", self.max_attempts)

    def check_end_points(self, schedule, t_start, t_end):
        """The steps are taken in lambda = log(alpha / sigma), which must be finite at both
        ends (it is infinite at t = 1 and t = 0 on rectified flow)."""
        lambdas = [float(schedule.lambda_(t)) for t in (t_start, t_end)]
        if not all(math.isfinite(value) for value in lambdas):
            raise ValueError(
                f"{self!r} steps in lambda = log(alpha / sigma), which is infinite at t_start={float(t_start)} "
                f"or t_end={float(t_end)} on {type(schedule).__name__}: use end points strictly inside "
                "(0, 1) (e.g. t_start=0.999, t_end=1e-3) or a flow solver such as 'flow-tsit5'"
            )

    def _pair(self, predict, schedule, x, lambda_s, lambda_t):
        """(lower-order result, higher-order result) of one step from lambda_s to lambda_t."""
        ratios = (0.5,) if self.order == 2 else (1.0 / 3.0, 2.0 / 3.0)
        h = lambda_t - lambda_s
        stage_times = [schedule.inverse_lambda(lambda_s)] + [
            schedule.inverse_lambda(lambda_s + r * h) for r in ratios
        ]
        t = schedule.inverse_lambda(lambda_t)
        inputs, update = singlestep_coefficients(schedule, self.prediction, "dpmsolver", stage_times, t)
        predictions = [predict(x, stage_times[0])]
        for (state, history), time in zip(inputs, stage_times[1:], strict=True):
            point = _combine(state, history, x, predictions[::-1])
            predictions.append(predict(point, time))
        higher = _combine(*update, x, predictions[::-1])
        lower_times = [stage_times[0]] if self.order == 2 else stage_times[:2]
        _, lower_update = singlestep_coefficients(schedule, self.prediction, "dpmsolver", lower_times, t)
        lower = _combine(*lower_update, x, predictions[: len(lower_times)][::-1])
        return lower, higher

    def solve(self, predict, schedule, x, t_start, t_end):
        batch = x.shape[0]
        dtype = jnp.result_type(float)
        lambda_end = jnp.asarray(schedule.lambda_(jnp.asarray(t_end, dtype)), dtype)
        lambda_start = jnp.asarray(schedule.lambda_(jnp.asarray(t_start, dtype)), dtype)

        def per_sample(value):
            return jnp.full((batch,), value, dtype)

        tolerance = 1e-6 * jnp.abs(lambda_end - lambda_start)

        def unfinished(state):
            _, lambda_s, _, _, attempts = state
            return jnp.any(lambda_s < lambda_end - tolerance) & (attempts < self.max_attempts)

        def attempt(state):
            x, lambda_s, step, nfe, attempts = state
            active = lambda_s < lambda_end - tolerance
            lambda_t = jnp.minimum(lambda_s + step, lambda_end)
            # Finished samples take a dummy step whose result is discarded, since a step of
            # length zero would divide by zero in the coefficients.
            lambda_t = jnp.where(active, lambda_t, lambda_s - 1.0)
            lower, higher = self._pair(predict, schedule, x, lambda_s, lambda_t)
            scale = jnp.maximum(self.atol, self.rtol * jnp.maximum(jnp.abs(lower), jnp.abs(x)))
            error = jnp.sqrt(jnp.mean(((higher - lower) / scale).reshape(batch, -1) ** 2, axis=1))
            accept = active & (error <= 1.0)
            x = jnp.where(_broadcast(accept, x), higher, x)
            lambda_s = jnp.where(accept, lambda_t, lambda_s)
            proposal = self.safety * step * jnp.power(jnp.maximum(error, 1e-10), -1.0 / self.order)
            step = jnp.where(active, jnp.minimum(proposal, lambda_end - lambda_s), step)
            nfe = nfe + jnp.where(active, self.order, 0)
            return x, lambda_s, step, nfe, attempts + 1

        initial = (x, per_sample(lambda_start), per_sample(self.initial_step), jnp.zeros((batch,), jnp.int32), 0)
        x, lambda_s, _, nfe, _ = jax.lax.while_loop(unfinished, attempt, initial)
        return x, nfe, lambda_s >= lambda_end - tolerance


# The registry names of these solvers (samplax.solvers.get).
SOLVERS = {
    "dpm++12": AdaptiveDPMSolver(order=2, prediction="data"),
    "dpm++23": AdaptiveDPMSolver(order=3, prediction="data"),
    "dpm-solver-12": AdaptiveDPMSolver(order=2, prediction="noise"),
    "dpm-solver-23": AdaptiveDPMSolver(order=3, prediction="noise"),
    "dpm-solver-adaptive": AdaptiveDPMSolver(order=3, prediction="data"),
}
