"""SDE-DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
Diffusion Probabilistic Models", section 5; the 2M and 3M forms of k-diffusion's
`sample_dpmpp_2m_sde` and `sample_dpmpp_3m_sde`): multistep DPM-Solver++ on the
marginal-preserving reverse SDE of strength eta (`stochastic.py`).

Integrating the SDE exactly with the data prediction D expanded in lambda gives the
multistep DPM-Solver++ step at the scaled step (1 + eta) h, with the state scaled by
e^-(eta h) and noise sigma_next sqrt(1 - e^(-2 eta h)):

    x_next = (sigma_next / sigma) e^(-eta h) x + alpha_next sum_j w_j((1 + eta) h) D_j
             + sigma_next sqrt(1 - e^(-2 eta h)) xi,

where w are multistep DPM-Solver++'s weights (`dpm_solver.multistep_weights`; the ratios
of successive steps do not change with the scale). eta = 0 is multistep DPM-Solver++
exactly; eta = 1 is the reverse SDE (diffusers' "sde-dpmsolver++"). The "taylor" variant
of order 3 uses the full second-derivative term (k-diffusion's 3M uses half of it, which
makes its drift second order).
"""

from __future__ import annotations

import dataclasses

import jax

from samplax.checks import check_choice
from samplax.pytrees import static_field
from samplax.schedules import Schedule
from samplax.solvers.base import FixedGridSolver
from samplax.solvers.dpm_solver import VARIANTS, multistep_weights
from samplax.solvers.engine import Plan
from samplax.solvers.exponential import linear_part
from samplax.solvers.stochastic import sde_noise
from samplax.solvers.toolkit import multistep_plan

__all__ = ["SDEDPMSolver"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SDEDPMSolver(FixedGridSolver):
    """Multistep SDE-DPM-Solver++ of order 1, 2 or 3 (data prediction).

    Attributes:
        order: 1, 2 or 3 (one evaluation per step, reusing past predictions).
        eta: the SDE's strength, >= 0 (0: the probability-flow ODE, 1: the reverse SDE).
        variant: "dpmsolver" (k-diffusion's "midpoint") or "taylor" (its "heun" at order 2;
            the full second-order term at order 3).
        lower_order_final: lower the order over the last steps.
    """

    order: int = static_field(2)
    eta: float = static_field(1.0)
    variant: str = static_field("dpmsolver")
    lower_order_final: bool = static_field(True)

    prediction = "data"
    stochastic = True
    multistep = True
    evaluations_per_step = 1

    def __post_init__(self):
        super().__post_init__()
        check_choice("SDE-DPM-Solver++ order", self.order, (1, 2, 3))
        check_choice("variant", self.variant, VARIANTS)
        if not self.eta >= 0:
            raise ValueError(f"eta must be >= 0 (0: the ODE, 1: the reverse SDE), got {self.eta}")

    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        return steps + int(denoise_to_zero)

    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        scale, multiplier, hh = linear_part(schedule, times[:-1], times[1:], "data")
        factor, noise = sde_noise(schedule, times[:-1], times[1:], self.eta)

        def update(orders):
            weights = multistep_weights((1.0 + self.eta) * hh, orders, self.order, self.variant)
            return scale * factor, -multiplier[:, None] * weights

        return multistep_plan(self, schedule, times, denoise_to_zero, update, noise=noise)


# The registry names of these solvers (samplax.solvers.get).
SOLVERS = {
    "dpm++1-sde": SDEDPMSolver(order=1),
    "dpm++2m-sde": SDEDPMSolver(order=2),
    "dpm++2m-sde-taylor": SDEDPMSolver(order=2, variant="taylor"),
    "dpm++3m-sde": SDEDPMSolver(order=3),
    "dpm++3m-sde-taylor": SDEDPMSolver(order=3, variant="taylor"),
}
