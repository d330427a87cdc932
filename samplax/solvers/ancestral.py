"""Ancestral sampling: DDPM (Ho et al. 2020, "Denoising Diffusion Probabilistic Models")
and DDIM with eta (Song et al. 2021, "Denoising Diffusion Implicit Models").

Each step draws x_next from the posterior q(x_next | x, x0 = D) of the forward process
with its standard deviation scaled by eta (`stochastic.posterior_step`): eta = 0 is DDIM,
eta = 1 is DDPM's posterior variance ("fixed small"), on any grid and any schedule. On
the DDPM schedule's own 1000-step grid, eta = 1 is DDPM's ancestral sampler exactly; with
fewer steps it is DDIM's generalised "ddpm" sampler. k-diffusion's euler_ancestral with
eta is the same step.
"""

from __future__ import annotations

import dataclasses

import jax

from samplax.checks import check_choice
from samplax.pytrees import static_field
from samplax.schedules import Schedule
from samplax.solvers.base import FixedGridSolver
from samplax.solvers.engine import Plan
from samplax.solvers.exponential import EXPONENTIAL_PREDICTIONS
from samplax.solvers.stochastic import posterior_step
from samplax.solvers.toolkit import multistep_plan

__all__ = ["AncestralSampler"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AncestralSampler(FixedGridSolver):
    """DDIM with eta: one evaluation per step, first order.

    Attributes:
        eta: the posterior standard deviation's scale, in [0, 1] (0: DDIM, 1: DDPM);
            values above 1 are refused, since the step then has no real direction term.
        prediction: "data" or "noise" (the same step, written in either prediction).
    """

    eta: float = static_field(1.0)
    prediction: str = static_field("data")

    stochastic = True
    evaluations_per_step = 1
    order = 1

    def __post_init__(self):
        super().__post_init__()
        check_choice("prediction", self.prediction, EXPONENTIAL_PREDICTIONS)
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1] (0: DDIM, 1: DDPM), got {self.eta}")

    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        return steps + int(denoise_to_zero)

    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        state, weight, noise = posterior_step(schedule, times[:-1], times[1:], self.eta, self.prediction)
        return multistep_plan(
            self, schedule, times, denoise_to_zero, lambda orders: (state, weight[:, None]), noise=noise
        )


# The registry names of these solvers (samplax.solvers.get).
SOLVERS = {
    "ddpm": AncestralSampler(eta=1.0),
    "ddim-eta": AncestralSampler(eta=1.0),  # the same sampler; set eta for DDIM's family
}
