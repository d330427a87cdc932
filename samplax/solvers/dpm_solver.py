"""DPM-Solver (Lu et al., NeurIPS 2022) and DPM-Solver++ (Lu et al., 2023): exponential
integrators of the diffusion ODE in lambda = log(alpha / sigma).

DPM-Solver integrates the noise prediction, DPM-Solver++ the data prediction. Singlestep
methods are Runge-Kutta-like (intermediate evaluations inside each step, orders mixed so
that NFE equals the number of grid intervals); multistep methods are Adams-like (previous
predictions, one evaluation per step, lower orders while warming up). The 'dpmsolver' and
'taylor' variants differ only in how the first derivative term is weighted.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from samplax.checks import check_choice
from samplax.pytrees import static_field
from samplax.schedules import Schedule
from samplax.solvers.base import FixedGridSolver
from samplax.solvers.engine import Plan, PlanBuilder
from samplax.solvers.exponential import EXPONENTIAL_PREDICTIONS, exponential_multistep_plan, linear_part, psi
from samplax.solvers.toolkit import append_denoising_stage, stage_times

__all__ = ["DPMSolver", "multistep_weights", "singlestep_coefficients", "singlestep_orders"]

METHODS = ("multistep", "singlestep")
VARIANTS = ("dpmsolver", "taylor")


def singlestep_orders(order: int, steps: int) -> np.ndarray:
    """Orders of the outer steps of singlestep DPM-Solver, so that they use exactly `steps`
    evaluations: as many steps of `order` as fit, then one or two lower-order steps."""
    if order == 1:
        return np.ones(steps, int)
    if order == 2:
        return np.array([2] * (steps // 2) + [1] * (steps % 2), int)
    remainder = steps % 3
    if remainder == 0:
        return np.array([3] * (steps // 3 - 1) + [2, 1], int)
    return np.array([3] * (steps // 3) + [remainder], int)


def multistep_weights(hh, orders, order: int, variant: str):
    """(steps, order) weights of multistep DPM-Solver on (m_i, m_{i-1}, m_{i-2}), newest
    first, from the signed steps hh and the per-step orders (see exponential.py). The
    stochastic DPM-Solver++ reuses them at its scaled step."""
    # Ratios of the previous step sizes to the current one (padded where unused).
    previous_1 = jnp.concatenate([hh[:1], hh[:-1]])
    previous_2 = jnp.concatenate([previous_1[:1], previous_1[:-1]])
    r0, r1 = previous_1 / hh, previous_2 / hh
    psi_1, psi_2, psi_3 = psi(1, hh), psi(2, hh), psi(3, hh)
    zero = jnp.zeros_like(hh)
    # Coefficient vectors on (m_i, m_{i-1}, m_{i-2}) of the divided differences.
    first_0 = jnp.stack([1 / r0, -1 / r0, zero], axis=1)
    first_1 = jnp.stack([zero, 1 / r1, -1 / r1], axis=1)
    base = jnp.stack([psi_1, zero, zero], axis=1)
    derivative_weight = 0.5 * psi_1 if variant == "dpmsolver" else psi_2
    weights_2 = base + derivative_weight[:, None] * first_0
    first = first_0 + (r0 / (r0 + r1))[:, None] * (first_0 - first_1)
    # (first_0 - first_1) / (r0 + r1) estimates h^2 m'' / 2. The reference DPM-Solver
    # (and diffusers) use it as it is, which makes 3M second order; the 'taylor'
    # variant uses the full h^2 m'' that the Taylor expansion calls for.
    second = (first_0 - first_1) / (r0 + r1)[:, None]
    if variant == "taylor":
        second = 2.0 * second
    weights_3 = base + psi_2[:, None] * first + psi_3[:, None] * second
    order_column = jnp.asarray(orders)[:, None]
    weights = jnp.where(order_column == 1, base, jnp.where(order_column == 2, weights_2, weights_3))
    return weights[:, :order]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DPMSolver(FixedGridSolver):
    """DPM-Solver (prediction="noise") and DPM-Solver++ (prediction="data").

    Attributes:
        order: 1, 2 or 3. Order 1 is DDIM for either prediction.
        method: "multistep" (one evaluation per step, reusing past predictions) or
            "singlestep" (intermediate evaluations; NFE still equals the number of steps).
        prediction: "data" (DPM-Solver++) or "noise" (DPM-Solver).
        variant: "dpmsolver" (midpoint-style weighting) or "taylor".
        lower_order_final: multistep only: lower the order over the last steps, which
            stabilises sampling with few steps.
    """

    order: int = static_field(2)
    method: str = static_field("multistep")
    prediction: str = static_field("data")
    variant: str = static_field("dpmsolver")
    lower_order_final: bool = static_field(True)

    def __post_init__(self):
        super().__post_init__()
        check_choice("DPM-Solver order", self.order, (1, 2, 3))
        check_choice("method", self.method, METHODS)
        check_choice("prediction", self.prediction, EXPONENTIAL_PREDICTIONS)
        check_choice("variant", self.variant, VARIANTS)

    @property
    def multistep(self) -> bool:
        return self.method == "multistep"

    @property
    def evaluations_per_step(self) -> int | None:
        """One for multistep methods; singlestep steps mix orders, so they differ."""
        return 1 if self.multistep else None

    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        return steps + int(denoise_to_zero)

    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        if self.multistep:
            return exponential_multistep_plan(
                self, schedule, times, denoise_to_zero,
                lambda hh, orders: multistep_weights(hh, orders, self.order, self.variant),
            )
        builder = PlanBuilder(stage_times(times[:-1], times, denoise_to_zero), history_size=self.order)
        self._singlestep(builder, schedule, times)
        if denoise_to_zero:
            append_denoising_stage(builder, schedule, times[-1], self.prediction)
        return builder.build()

    # -- singlestep -----------------------------------------------------------------------

    def _singlestep(self, builder, schedule, times):
        steps = times.shape[0] - 1
        orders = singlestep_orders(self.order, steps)
        starts = np.concatenate([[0], np.cumsum(orders)[:-1]])
        for order in (1, 2, 3):
            start = starts[orders == order]
            if start.size == 0:
                continue
            nodes = [times[start + k] for k in range(order)]
            end = times[start + order]
            inputs, update = singlestep_coefficients(schedule, self.prediction, self.variant, nodes, end)
            for offset, (state, history) in enumerate(inputs, start=1):
                builder.set_input(start + offset, state, history)
            builder.set_update(start + order - 1, *update)


def singlestep_coefficients(schedule, prediction, variant, stage_times, t):
    """Coefficients of one singlestep DPM-Solver step of order len(stage_times) from
    s = stage_times[0] to t, with intermediate times stage_times[1:] (any array shape).

    Returns (inputs, update): inputs[k] = (state, history) of the evaluation point of stage
    k + 1 and update = (state, history) of the step's result; history coefficients have a
    trailing axis over the predictions made so far, newest first."""
    order = len(stage_times)
    s = stage_times[0]
    scale, multiplier, hh = linear_part(schedule, s, t, prediction)
    psi_1 = psi(1, hh)
    if order == 1:
        return [], (scale, -(multiplier * psi_1)[..., None])
    lambda_s = schedule.lambda_(s)
    h = schedule.lambda_(t) - lambda_s
    ratio_1 = (schedule.lambda_(stage_times[1]) - lambda_s) / h
    scale_1, multiplier_1, hh_1 = linear_part(schedule, s, stage_times[1], prediction)
    inputs = [(scale_1, -(multiplier_1 * psi(1, hh_1))[..., None])]
    if order == 2:
        weight = 0.5 * psi_1 / ratio_1 if variant == "dpmsolver" else psi(2, hh) / ratio_1
        history = jnp.stack([weight, psi_1 - weight], axis=-1)  # on (m_s1, m_s)
        return inputs, (scale, -multiplier[..., None] * history)
    ratio_2 = (schedule.lambda_(stage_times[2]) - lambda_s) / h
    scale_2, multiplier_2, hh_2 = linear_part(schedule, s, stage_times[2], prediction)
    cross = ratio_2 / ratio_1 * psi(2, hh_2)
    input_history = jnp.stack([cross, psi(1, hh_2) - cross], axis=-1)  # on (m_s1, m_s)
    inputs.append((scale_2, -multiplier_2[..., None] * input_history))
    zero = jnp.zeros_like(hh)
    if variant == "dpmsolver":
        weight = psi(2, hh) / ratio_2
        history = jnp.stack([weight, zero, psi_1 - weight], axis=-1)  # on (m_s2, m_s1, m_s)
    else:
        first_0 = jnp.stack([zero, 1 / ratio_1, -1 / ratio_1], axis=-1)
        first_1 = jnp.stack([1 / ratio_2, zero, -1 / ratio_2], axis=-1)
        gap = (ratio_2 - ratio_1)[..., None]
        first = (ratio_2[..., None] * first_0 - ratio_1[..., None] * first_1) / gap
        second = 2.0 * (first_1 - first_0) / gap
        history = (
            jnp.stack([zero, zero, psi_1], axis=-1)
            + psi(2, hh)[..., None] * first
            + psi(3, hh)[..., None] * second
        )
    return inputs, (scale, -multiplier[..., None] * history)


# The registry names of these solvers (samplax.solvers.get).
SOLVERS = {
    "ddim": DPMSolver(order=1, method="multistep", prediction="data", variant="dpmsolver"),
    "dpm++1": DPMSolver(order=1, method="multistep", prediction="data", variant="dpmsolver"),
    "dpm++2s": DPMSolver(order=2, method="singlestep", prediction="data", variant="dpmsolver"),
    "dpm++2s-taylor": DPMSolver(order=2, method="singlestep", prediction="data", variant="taylor"),
    "dpm++2m": DPMSolver(order=2, method="multistep", prediction="data", variant="dpmsolver"),
    "dpm++2m-taylor": DPMSolver(order=2, method="multistep", prediction="data", variant="taylor"),
    "dpm++3s": DPMSolver(order=3, method="singlestep", prediction="data", variant="dpmsolver"),
    "dpm++3s-taylor": DPMSolver(order=3, method="singlestep", prediction="data", variant="taylor"),
    "dpm++3m": DPMSolver(order=3, method="multistep", prediction="data", variant="dpmsolver"),
    "dpm++3m-taylor": DPMSolver(order=3, method="multistep", prediction="data", variant="taylor"),
    "dpm-solver-1": DPMSolver(order=1, method="multistep", prediction="noise", variant="dpmsolver"),
    "dpm-solver-2s": DPMSolver(order=2, method="singlestep", prediction="noise", variant="dpmsolver"),
    "dpm-solver-2s-taylor": DPMSolver(order=2, method="singlestep", prediction="noise", variant="taylor"),
    "dpm-solver-2m": DPMSolver(order=2, method="multistep", prediction="noise", variant="dpmsolver"),
    "dpm-solver-2m-taylor": DPMSolver(order=2, method="multistep", prediction="noise", variant="taylor"),
    "dpm-solver-3s": DPMSolver(order=3, method="singlestep", prediction="noise", variant="dpmsolver"),
    "dpm-solver-3s-taylor": DPMSolver(order=3, method="singlestep", prediction="noise", variant="taylor"),
    "dpm-solver-3m": DPMSolver(order=3, method="multistep", prediction="noise", variant="dpmsolver"),
    "dpm-solver-3m-taylor": DPMSolver(order=3, method="multistep", prediction="noise", variant="taylor"),
}
