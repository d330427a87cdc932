"""UniPC (Zhao et al., NeurIPS 2023, "UniPC: A Unified Predictor-Corrector Framework for
Fast Sampling of Diffusion Models"): the multistep predictor UniP and the corrector UniC.

Both are exponential integrators in lambda (see `exponential.py`). With m_0 the newest
prediction, r_k = (lambda of the k-th previous prediction - lambda_s) / h and
D_k = (m_k - m_0) / r_k, a step from s to t is

    x_t = scale x_s - multiplier (psi_1(hh) m_0 + B(hh) sum_k rho_k D_k),

where B(hh) = hh ("bh1") or e^hh - 1 ("bh2"), and the weights rho solve the Vandermonde
system sum_k rho_k r_k^i = psi_{i+2}(hh) (i + 1)! / B(hh), i = 0, 1, .... UniP of order p
uses the p - 1 previous predictions; UniC uses them and the prediction at the new point
(r = 1), which makes it one order higher. UniC re-uses that prediction, taken at the
uncorrected point, as the next step's m_0, so correcting costs no model evaluation.

In the engine's terms, stage k evaluates the model at the predicted point z_k (UniP from
the corrected state x_{k-1}), and its update turns x_{k-1} into the corrected x_k (UniC).
The last step is predicted only. `UniC` accepts any multistep predictor of the package
(UniP, multistep DPM-Solver, tAB/rhoAB-DEIS, iPNDM).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from samplax.checks import check_choice
from samplax.pytrees import static_field
from samplax.schedules import Schedule
from samplax.solvers.base import FixedGridSolver
from samplax.solvers.engine import Plan, PlanBuilder
from samplax.solvers.exponential import EXPONENTIAL_PREDICTIONS, exponential_multistep_plan, linear_part, psi
from samplax.solvers.toolkit import append_denoising_stage, multistep_orders, vandermonde_weights

__all__ = ["UniP", "UniC", "unipc"]

VARIANTS = ("bh1", "bh2")
MAX_ORDER = 4


def _check_common(order, variant, prediction):
    check_choice("order", order, range(1, MAX_ORDER + 1))
    check_choice("variant", variant, VARIANTS)
    check_choice("prediction", prediction, EXPONENTIAL_PREDICTIONS)


def _step_ratios(lambdas, count):
    """(steps, count) ratios r_k = (lambda_{i-k} - lambda_i) / (lambda_{i+1} - lambda_i),
    k = 1..count. Before the grid starts lambda continues with the first step's spacing,
    so unused ratios stay distinct and finite."""
    h = lambdas[1:] - lambdas[:-1]
    padded = jnp.concatenate([lambdas[0] - h[0] * jnp.arange(count, 0, -1), lambdas])
    steps = h.shape[0]
    current = padded[count : count + steps]
    return jnp.stack([(padded[count - k : count - k + steps] - current) / h for k in range(1, count + 1)], axis=1)


def _weights(lambdas, hh, orders, variant, corrector, width):
    """(steps, width) coefficients, inside multiplier * (...), on the history entries of each
    step: (m_0, m_1, ...) for the predictor, (m_t, m_0, m_1, ...) for the corrector."""
    steps = hh.shape[0]
    max_order = int(orders.max())
    psis = [psi(k, hh) for k in range(1, max_order + 2)]  # psi_1 .. psi_{max_order + 1}
    b_of_h = hh if variant == "bh1" else psis[0]
    # Right-hand sides psi_{i+2}(hh) (i + 1)! / B(hh) of the order conditions.
    rhs = jnp.stack([psis[i + 1] * math.factorial(i + 1) / b_of_h for i in range(max_order)], axis=1)
    ratios = _step_ratios(lambdas, max(max_order - 1, 1))
    result = jnp.zeros((steps, width), hh.dtype)
    offset = int(corrector)  # the corrector's history starts with m_t
    for order in range(1, max_order + 1):
        previous = order - 1
        if corrector:
            if order == 1:
                rho = jnp.full((steps, 1), 0.5, hh.dtype)  # the paper's choice for one point
            else:
                points = jnp.concatenate([ratios[:, :previous], jnp.ones((steps, 1), hh.dtype)], axis=1)
                rho = vandermonde_weights(points, rhs[:, :order])
            rho_previous, rho_new = rho[:, :previous], rho[:, previous]
        elif order == 2:
            rho_previous = jnp.full((steps, 1), 0.5, hh.dtype)  # the paper's choice for UniP-2
        elif previous:
            rho_previous = vandermonde_weights(ratios[:, :previous], rhs[:, :previous])
        coefficients = jnp.zeros((steps, width), hh.dtype)
        base = psis[0]
        if previous:
            scaled = b_of_h[:, None] * rho_previous / ratios[:, :previous]
            coefficients = coefficients.at[:, offset + 1 : offset + order].set(scaled)
            base = base - jnp.sum(scaled, axis=1)
        if corrector:
            new = b_of_h * rho_new
            coefficients = coefficients.at[:, 0].set(new)
            base = base - new
        coefficients = coefficients.at[:, offset].set(base)
        result = jnp.where(jnp.asarray(orders)[:, None] == order, coefficients, result)
    return result


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class UniP(FixedGridSolver):
    """UniP, the multistep predictor of UniPC. Order 1 is DDIM; order 2 with "bh2" is
    DPM-Solver++(2M) (data prediction) or DPM-Solver-2M (noise prediction).

    Attributes:
        order: 1 to 4.
        variant: "bh1" (B(h) = h; the paper advises it for fewer than 10 steps) or "bh2"
            (B(h) = e^h - 1).
        prediction: "data" or "noise".
        lower_order_final: lower the order over the last steps, as for DPM-Solver.
    """

    order: int = static_field(3)
    variant: str = static_field("bh1")
    prediction: str = static_field("data")
    lower_order_final: bool = static_field(True)

    multistep = True
    evaluations_per_step = 1

    def __post_init__(self):
        super().__post_init__()
        _check_common(self.order, self.variant, self.prediction)

    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        return steps + int(denoise_to_zero)

    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        lambdas = schedule.lambda_(times)

        def weights(hh, orders):
            return _weights(lambdas, hh, orders, self.variant, False, self.order)

        return exponential_multistep_plan(self, schedule, times, denoise_to_zero, weights)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class UniC(FixedGridSolver):
    """The UniC corrector behind a multistep predictor. After the predictor's step to t_i
    and the model evaluation there, the state is corrected with that evaluation; the
    evaluation itself is kept as the predictor's history, so NFE equals the predictor's.
    The corrector of order p (p previous predictions and the new one) is accurate to order
    p + 1; it follows the predictor's warm-up and lower-order-final orders.

    Attributes:
        predictor: any fixed-grid solver that declares itself multistep and integrates a
            data or noise prediction (`UniP`, multistep `DPMSolver`, `DEIS`, `IPNDM`, ...),
            other than a UniC.
        variant: "bh1" or "bh2", as for UniP.
        order: the corrector's order, 1 to 4; None takes the predictor's order.
    """

    predictor: FixedGridSolver = static_field(dataclasses.MISSING, default_factory=UniP)
    variant: str = static_field("bh1")
    order: int | None = static_field(None)

    multistep = True
    evaluations_per_step = 1

    def __post_init__(self):
        super().__post_init__()
        predictor = self.predictor
        if isinstance(predictor, str):
            raise TypeError(f"predictor must be a solver object, such as samplax.solvers.get({predictor!r}), not its "
                            "name")
        usable = isinstance(predictor, FixedGridSolver) and not isinstance(predictor, UniC) and predictor.multistep
        if not usable or predictor.stochastic or predictor.prediction not in EXPONENTIAL_PREDICTIONS:
            raise ValueError(
                "predictor must be a deterministic multistep fixed-grid solver on a data or noise prediction "
                f"(not a UniC), got {predictor!r}"
            )
        _check_common(self.corrector_order, self.variant, self.prediction)

    @property
    def prediction(self) -> str:
        """The corrector works in its predictor's prediction."""
        return self.predictor.prediction

    @property
    def lower_order_final(self) -> bool:
        return self.predictor.lower_order_final

    @property
    def corrector_order(self) -> int:
        return self.predictor.order if self.order is None else self.order

    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        return self.predictor.evaluations(steps, denoise_to_zero)

    def min_steps(self) -> int:
        return self.predictor.min_steps()

    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        steps = times.shape[0] - 1
        predictor = self.predictor.plan(schedule, times, denoise_to_zero)
        order = self.corrector_order
        width = max(predictor.update_history.shape[1], order + 1)
        builder = PlanBuilder(predictor.times, history_size=width)
        # Stage k evaluates at the predictor's step from the corrected x_{k-1}.
        predicted = np.arange(1, steps + int(denoise_to_zero))
        builder.set_input(predicted, predictor.update_state[predicted - 1], predictor.update_history[predicted - 1])
        # Stage k (1 <= k < steps) then corrects x_{k-1} into x_k with the new evaluation.
        if steps > 1:
            orders = multistep_orders(order, steps, self.lower_order_final, denoise_to_zero)[:-1]
            scale, multiplier, hh = linear_part(schedule, times[:-2], times[1:-1], self.prediction)
            lambdas = schedule.lambda_(times[:-1])
            weights = _weights(lambdas, hh, orders, self.variant, True, order + 1)
            builder.set_update(np.arange(1, steps), scale, -multiplier[:, None] * weights)
        if denoise_to_zero:
            append_denoising_stage(builder, schedule, times[-1], self.prediction)
            return builder.build()
        return builder.build(predictor.update_state[-1], predictor.update_history[-1])


def unipc(order: int = 3, variant: str = "bh1", prediction: str = "data", lower_order_final: bool = True) -> UniC:
    """UniPC: UniP of `order` followed by UniC of the same order and variant."""
    predictor = UniP(order=order, variant=variant, prediction=prediction, lower_order_final=lower_order_final)
    return UniC(predictor=predictor, variant=variant)


# The registry names of these solvers (samplax.solvers.get).
SOLVERS = {
    "unipc-bh1-1": unipc(1, "bh1", "data"),
    "unipc-bh1-2": unipc(2, "bh1", "data"),
    "unipc-bh1-3": unipc(3, "bh1", "data"),
    "unipc-bh2-1": unipc(1, "bh2", "data"),
    "unipc-bh2-2": unipc(2, "bh2", "data"),
    "unipc-bh2-3": unipc(3, "bh2", "data"),
    "unipc-bh1-1-noise": unipc(1, "bh1", "noise"),
    "unipc-bh1-2-noise": unipc(2, "bh1", "noise"),
    "unipc-bh1-3-noise": unipc(3, "bh1", "noise"),
    "unipc-bh2-1-noise": unipc(1, "bh2", "noise"),
    "unipc-bh2-2-noise": unipc(2, "bh2", "noise"),
    "unipc-bh2-3-noise": unipc(3, "bh2", "noise"),
}
