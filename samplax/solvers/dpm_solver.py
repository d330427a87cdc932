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

from samplax.schedules import Schedule
from samplax.solvers.base import FixedGridSolver, register
from samplax.solvers.engine import Plan, PlanBuilder
from samplax.solvers.exponential import linear_part, psi

__all__ = [
    "DPMSolver",
    "append_denoising_stage",
    "multistep_orders",
    "singlestep_coefficients",
    "singlestep_orders",
]

METHODS = ("multistep", "singlestep")
VARIANTS = ("dpmsolver", "taylor")


def multistep_orders(order: int, steps: int, lower_order_final: bool, denoise_to_zero: bool) -> np.ndarray:
    """Per-step orders of a multistep method: warm up from order 1, and with
    lower_order_final never use more past points than steps remain (a final denoising
    step counts as one more first-order step)."""
    index = np.arange(steps)
    orders = np.minimum(order, index + 1)
    if lower_order_final:
        orders = np.minimum(orders, steps - index + int(denoise_to_zero))
    return orders


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


def append_denoising_stage(builder: PlanBuilder, schedule: Schedule, time, prediction: str) -> None:
    """Make the last stage return the data prediction at `time` (the denoising step to
    sigma = 0), written in terms of whichever prediction the solver integrates."""
    last = np.array([builder.times.shape[0] - 1])
    if prediction == "data":
        builder.set_update(last, 0.0, jnp.ones((1, 1)))
    elif prediction == "noise":
        alpha, sigma = schedule.alpha(time), schedule.sigma(time)
        builder.set_update(last, 1.0 / alpha, jnp.reshape(-sigma / alpha, (1, 1)))
    else:
        raise ValueError(f"a denoising step needs a 'data' or 'noise' prediction, got {prediction!r}")


def _stage_times(times, denoise_to_zero):
    return jnp.concatenate([times[:-1], times[-1:]]) if denoise_to_zero else times[:-1]


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

    order: int = dataclasses.field(default=2, metadata={"static": True})
    method: str = dataclasses.field(default="multistep", metadata={"static": True})
    prediction: str = dataclasses.field(default="data", metadata={"static": True})
    variant: str = dataclasses.field(default="dpmsolver", metadata={"static": True})
    lower_order_final: bool = dataclasses.field(default=True, metadata={"static": True})

    def __post_init__(self):
        if self.order not in (1, 2, 3):
            raise ValueError(f"DPM-Solver order must be 1, 2 or 3, got {self.order!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.prediction not in ("data", "noise"):
            raise ValueError(f"prediction must be 'data' (DPM-Solver++) or 'noise', got {self.prediction!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")

    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        return steps + int(denoise_to_zero)

    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        builder = PlanBuilder(_stage_times(times, denoise_to_zero), history_size=self.order)
        if self.method == "multistep":
            self._multistep(builder, schedule, times, denoise_to_zero)
        else:
            self._singlestep(builder, schedule, times)
        if denoise_to_zero:
            append_denoising_stage(builder, schedule, times[-1], self.prediction)
        return builder.build()

    # -- multistep ------------------------------------------------------------------------

    def _multistep(self, builder, schedule, times, denoise_to_zero):
        steps = times.shape[0] - 1
        orders = multistep_orders(self.order, steps, self.lower_order_final, denoise_to_zero)
        scale, multiplier, hh = linear_part(schedule, times[:-1], times[1:], self.prediction)
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
        derivative_weight = 0.5 * psi_1 if self.variant == "dpmsolver" else psi_2
        weights_2 = base + derivative_weight[:, None] * first_0
        first = first_0 + (r0 / (r0 + r1))[:, None] * (first_0 - first_1)
        # (first_0 - first_1) / (r0 + r1) estimates h^2 m'' / 2. The reference DPM-Solver
        # (and diffusers) use it as it is, which makes 3M second order; the 'taylor'
        # variant uses the full h^2 m'' that the Taylor expansion calls for.
        second = (first_0 - first_1) / (r0 + r1)[:, None]
        if self.variant == "taylor":
            second = 2.0 * second
        weights_3 = base + psi_2[:, None] * first + psi_3[:, None] * second
        order_column = jnp.asarray(orders)[:, None]
        weights = jnp.where(order_column == 1, base, jnp.where(order_column == 2, weights_2, weights_3))
        builder.set_update(np.arange(steps), scale, -multiplier[:, None] * weights[:, : self.order])

    # -- singlestep -----------------------------------------------------------------------

    def _singlestep(self, builder, schedule, times):
        steps = times.shape[0] - 1
        orders = singlestep_orders(self.order, steps)
        starts = np.concatenate([[0], np.cumsum(orders)[:-1]])
        for order in (1, 2, 3):
            start = starts[orders == order]
            if start.size == 0:
                continue
            stage_times = [times[start + k] for k in range(order)]
            inputs, update = singlestep_coefficients(
                schedule, self.prediction, self.variant, stage_times, times[start + order]
            )
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


def _register_all():
    register("ddim", lambda: DPMSolver(order=1, prediction="data"))
    for prefix, prediction in (("dpm-solver-", "noise"), ("dpm++", "data")):
        register(f"{prefix}1", lambda p=prediction: DPMSolver(order=1, prediction=p))
        for order in (2, 3):
            for letter, method in (("s", "singlestep"), ("m", "multistep")):
                for suffix, variant in (("", "dpmsolver"), ("-taylor", "taylor")):
                    register(
                        f"{prefix}{order}{letter}{suffix}",
                        lambda o=order, m=method, p=prediction, v=variant: DPMSolver(
                            order=o, method=m, prediction=p, variant=v
                        ),
                    )


_register_all()
