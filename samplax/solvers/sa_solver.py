"""SA-Solver (Xue et al., NeurIPS 2023, "SA-Solver: Stochastic Adams Solver for Fast
Sampling of Diffusion Models"): a stochastic Adams predictor-corrector on the reverse SDE
of strength eta = tau^2 (`stochastic.py`), in the data prediction.

Both steps integrate the SDE exactly with D replaced by its Lagrange interpolant in
lambda: from x_i at t_i to t_{i+1}, with h = lambda_{i+1} - lambda_i,

    x_{i+1} = (sigma_{i+1} / sigma_i) e^(-eta h) x_i + alpha_{i+1} sum_j w_j D_j
              + sigma_{i+1} sqrt(1 - e^(-2 eta h)) xi_i,

    w_j = int_{lambda_i}^{lambda_{i+1}} (1 + eta) e^(-(1 + eta)(lambda_{i+1} - u)) l_j(u) du,

over the previous evaluations (predictor, stochastic Adams-Bashforth) or the previous ones
and the evaluation at the predicted point (corrector, stochastic Adams-Moulton). The
weights are exact for polynomials: with u = lambda_i + theta h, int of the kernel times
theta^k is -k! psi_{k+1}(-(1 + eta) h). The corrector re-uses the predictor's draw, and
the evaluation at the predicted point is the next step's newest history, so correcting
costs no evaluation (the layout of UniPC: stage k evaluates at the predicted x_k and
corrects x_{k-1} into x_k; the last step is predicted only).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from samplax.checks import check_choice, check_interval
from samplax.pytrees import static_field
from samplax.schedules import Schedule
from samplax.solvers.base import FixedGridSolver
from samplax.solvers.engine import Plan, PlanBuilder
from samplax.solvers.exponential import psi
from samplax.solvers.stochastic import sde_noise
from samplax.solvers.toolkit import (
    append_denoising_stage,
    multistep_orders,
    multistep_plan,
    past_nodes,
    stage_times,
    step_intervals,
    vandermonde_weights,
)

__all__ = ["SASolver"]

MAX_ORDER = 4
# diffusers' default tau function, tau = 1 on DDPM timesteps 200-800 and 0 elsewhere, as
# the noise levels sigma / alpha of those timesteps on the DDPM linear schedule.
DEFAULT_TAU_INTERVAL = (0.7236, 25.736)


def _adams_weights(nodes, start, h, eta, orders, width):
    """(steps, width) weights w_j of the exponential Adams step of each step, on the lambda
    nodes (steps, n) newest first, from lambda = start with step h, using as many nodes as
    the step's order."""
    scaled = -(1.0 + eta) * h
    ratios = (nodes - start[:, None]) / h[:, None]  # theta of each node
    moments = jnp.stack([-math.factorial(k) * psi(k + 1, scaled) for k in range(nodes.shape[1])], axis=1)
    result = jnp.zeros((h.shape[0], width), h.dtype)
    for order in range(1, int(np.max(orders)) + 1):
        weights = vandermonde_weights(ratios[:, :order], moments[:, :order])
        padded = jnp.pad(weights, ((0, 0), (0, width - order)))
        result = jnp.where(jnp.asarray(orders)[:, None] == order, padded, result)
    return result


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SASolver(FixedGridSolver):
    """SA-Solver: one evaluation per step.

    Attributes:
        predictor_order: evaluations the predictor interpolates, 1 to 4.
        corrector_order: evaluations the corrector interpolates (the new one included),
            1 to 4; 0 predicts only.
        tau: the noise strength, eta = tau^2 (0: the probability-flow ODE, 1: the reverse
            SDE).
        tau_interval: (low, high) noise levels sigma / alpha (as EDM's sigma) outside which
            tau is 0; None applies tau everywhere. The default is diffusers' default tau
            function (tau = 1 on DDPM timesteps 200-800) in noise levels.
        lower_order_final: lower both orders over the last steps.
    """

    predictor_order: int = static_field(3)
    corrector_order: int = static_field(4)
    tau: float = static_field(1.0)
    tau_interval: tuple[float, float] | None = static_field(DEFAULT_TAU_INTERVAL)
    lower_order_final: bool = static_field(True)

    prediction = "data"
    stochastic = True
    multistep = True
    evaluations_per_step = 1

    def __post_init__(self):
        super().__post_init__()
        check_choice("predictor_order", self.predictor_order, range(1, MAX_ORDER + 1))
        check_choice("corrector_order", self.corrector_order, range(0, MAX_ORDER + 1))
        if not self.tau >= 0:
            raise ValueError(f"tau must be >= 0, got {self.tau}")
        if self.tau_interval is not None:
            check_interval("SASolver.tau_interval (noise levels sigma / alpha)", self.tau_interval, infinite_high=True)

    @property
    def order(self) -> int:
        """The history the plan keeps."""
        return max(self.predictor_order, self.corrector_order)

    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        return steps + int(denoise_to_zero)

    def _eta(self, schedule, times):
        eta = jnp.full(times.shape, self.tau**2, times.dtype)
        if self.tau_interval is None:
            return eta
        level = jnp.exp(-schedule.lambda_(times))
        low, high = self.tau_interval
        return jnp.where((level >= low) & (level <= high), eta, 0.0)

    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        steps, width = times.shape[0] - 1, self.order
        t, t_next = times[:-1], times[1:]
        lambdas = schedule.lambda_(times)
        h = lambdas[1:] - lambdas[:-1]
        eta = self._eta(schedule, t)
        factor, noise = sde_noise(schedule, t, t_next, eta)
        scale = schedule.sigma(t_next) / schedule.sigma(t) * factor
        past = past_nodes(lambdas, MAX_ORDER)  # row i: lambda_i, lambda_{i-1}, ...
        orders = multistep_orders(self.predictor_order, steps, self.lower_order_final, denoise_to_zero)
        weights = _adams_weights(past[:, : self.predictor_order], lambdas[:-1], h, eta, orders, width)
        predictor = schedule.alpha(t_next)[:, None] * weights
        if self.corrector_order == 0:
            return multistep_plan(self, schedule, times, denoise_to_zero, lambda _: (scale, predictor), noise=noise)
        intervals = step_intervals(times)
        builder = PlanBuilder(stage_times(t, times, denoise_to_zero), history_size=width)
        # Stage k evaluates at the predictor's step k - 1 from the corrected x_{k-1} ...
        predicted = np.arange(1, steps + int(denoise_to_zero))
        builder.set_input(predicted, scale[predicted - 1], predictor[predicted - 1])
        corrected = np.arange(1, steps)
        if steps > 1:  # ... and corrects x_{k-1} into x_k with the same draw.
            nodes = jnp.concatenate([lambdas[1:, None], past[:, : self.corrector_order - 1]], axis=1)
            corrector_orders = np.minimum(self.corrector_order, orders + 1)
            weights = _adams_weights(nodes, lambdas[:-1], h, eta, corrector_orders, width)
            corrector = schedule.alpha(t_next)[:, None] * weights
            builder.set_update(corrected, scale[corrected - 1], corrector[corrected - 1])
        update_noise = jnp.where(predicted < steps, noise[predicted - 1], 0.0)
        builder.set_noise(predicted, intervals[predicted - 1], input=noise[predicted - 1], update=update_noise)
        if denoise_to_zero:
            append_denoising_stage(builder, schedule, times[-1], self.prediction)
            return builder.build()
        return builder.build(scale[-1], predictor[-1], output_noise=noise[-1], output_interval=intervals[-1])


# The registry names of these solvers (samplax.solvers.get).
SOLVERS = {
    "sa-solver": SASolver(predictor_order=2, corrector_order=2),  # diffusers' defaults
    "sa-solver-3": SASolver(predictor_order=3, corrector_order=4),
}
