"""The samplers of Score-SDE (Song et al., ICLR 2021, "Score-Based Generative Modeling
through Stochastic Differential Equations"), on any schedule: Euler-Maruyama on the reverse
SDE, and predictor-corrector sampling with the reverse-diffusion or ancestral predictor
and the Langevin corrector.

With f = d log alpha / dt and g^2 = d sigma^2 / dt - 2 f sigma^2 (the forward SDE
dx = f x dt + g dW has the schedule's marginals), the reverse SDEs with the same
marginals are dx = [f x - (1 + xi^2) g^2 s / 2] dt + xi g dW, s = -eps / sigma the score.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from samplax.checks import check_choice, check_count
from samplax.pytrees import static_field
from samplax.schedules import Schedule
from samplax.solvers.base import FixedGridSolver
from samplax.solvers.engine import Plan, PlanBuilder
from samplax.solvers.stochastic import nonnegative_sqrt, posterior_step
from samplax.solvers.toolkit import append_denoising_stage, multistep_plan, stage_times, step_intervals

__all__ = ["EulerMaruyama", "PredictorCorrector"]

PREDICTORS = ("reverse-diffusion", "ancestral")
CORRECTORS = ("langevin", "none")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EulerMaruyama(FixedGridSolver):
    """Euler-Maruyama on the reverse SDE of strength `diffusion` (xi above): with
    dt = t_next - t < 0,

        x_next = x + [f x - (1 + xi^2) g^2 s / 2] dt + xi g sqrt(|dt|) noise,

    one evaluation per step, weak and strong order 1 (the noise is additive). xi = 1 is the
    reverse SDE of Anderson (1982), xi = 0 Euler on the probability-flow ODE. On a
    rectified flow (score from the velocity, eps = x + (1 - t) v) it samples the flow's
    marginals with diffusion xi g, g^2 = 2 t / (1 - t); f and g are infinite at t = 1,
    so start below it (or use the exponential samplers, which are finite there).

    Attributes:
        diffusion: xi >= 0, the noise's scale relative to the reverse SDE's.
    """

    diffusion: float = static_field(1.0)

    prediction = "noise"
    stochastic = True
    evaluations_per_step = 1
    order = 1

    def __post_init__(self):
        super().__post_init__()
        if not self.diffusion >= 0:
            raise ValueError(f"diffusion must be >= 0, got {self.diffusion}")

    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        return steps + int(denoise_to_zero)

    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        t, dt = times[:-1], times[1:] - times[:-1]
        f, g2 = schedule.drift_and_diffusion(t)
        # s = -eps / sigma, so -(1 + xi^2) g^2 s / 2 dt = (1 + xi^2) g^2 / (2 sigma) dt eps.
        noise_weight = (1.0 + self.diffusion**2) * g2 / (2.0 * schedule.sigma(t)) * dt
        noise = self.diffusion * jnp.sqrt(g2 * jnp.abs(dt))
        return multistep_plan(
            self, schedule, times, denoise_to_zero, lambda orders: (1.0 + f * dt, noise_weight[:, None]), noise=noise
        )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PredictorCorrector(FixedGridSolver):
    """Score-SDE's predictor-corrector sampler: at every grid time t_i, `corrector_steps`
    Langevin steps at t_i, then one predictor step to t_{i+1}; every step is one
    evaluation.

    - Reverse-diffusion predictor: the reverse of the forward process discretised on the
      grid, x_i = a x_next + b noise with a = alpha_i / alpha_next and b^2 = sigma_i^2 -
      a^2 sigma_next^2 (DDPM's betas on its own grid, the VE sigma differences):
      x_next = (2 - a) x + b^2 s + b noise.
    - Ancestral predictor: the posterior step with DDPM's posterior variance
      (`AncestralSampler` with eta = 1); Score-SDE's VE ancestral sampler exactly.
    - Langevin corrector: x <- x + e s + sqrt(2 e) noise with e = 2 r_a (snr |noise| /
      |s|)^2 and r_a = a^2 (1 - beta_i for DDPM, 1 for VE). The norms are per sample, so a
      sample's path never depends on its batch (Score-SDE averages them over the batch).

    Attributes:
        predictor: "reverse-diffusion" or "ancestral".
        corrector: "langevin" or "none".
        corrector_steps: Langevin steps per grid time (Score-SDE's n_steps_each).
        snr: the Langevin corrector's signal-to-noise ratio r, in (0, 1) (0.16 for
            Score-SDE's CIFAR-10 models, 0.075 for LSUN).

    The step-size rule assumes high-dimensional data, where |noise| and |s| concentrate:
    in a few dimensions a sample near a mode, where |s| is small, takes a very large
    Langevin step (on a 2-D mixture at snr 0.16, samples reach 10x the data's range).
    """

    predictor: str = static_field("reverse-diffusion")
    corrector: str = static_field("langevin")
    corrector_steps: int = static_field(1)
    snr: float = static_field(0.16)

    prediction = "noise"
    stochastic = True

    def __post_init__(self):
        super().__post_init__()
        check_choice("predictor", self.predictor, PREDICTORS)
        check_choice("corrector", self.corrector, CORRECTORS)
        check_count("PredictorCorrector.corrector_steps", self.corrector_steps)
        if not 0 < self.snr < 1:
            raise ValueError(
                f"snr must lie in (0, 1), got {self.snr}: the Langevin step e = 2 (snr |noise| / |s|)^2 is about "
                "2 snr^2 sigma^2, which oversteps the score's curvature 1 / sigma^2 from snr = 1 on (Score-SDE uses "
                "0.16 and 0.075)"
            )
        if self.corrector == "none":
            defaults = {field.name: field.default for field in dataclasses.fields(self)}
            for name, value in (("corrector_steps", self.corrector_steps), ("snr", self.snr)):
                if value != defaults[name]:
                    raise ValueError(f"{name}={value} has no effect with corrector='none', which takes no Langevin "
                                     "steps: drop it, or use corrector='langevin'")

    @property
    def corrections(self) -> int:
        """Langevin steps per grid time."""
        return self.corrector_steps if self.corrector == "langevin" else 0

    @property
    def evaluations_per_step(self) -> int:
        return self.corrections + 1

    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        return self.evaluations_per_step * steps + int(denoise_to_zero)

    def _predictor_step(self, schedule, t, t_next):
        """(state, weight on eps, noise) of the predictor from t to t_next."""
        if self.predictor == "ancestral":
            return posterior_step(schedule, t, t_next, 1.0, "noise")
        a = schedule.alpha(t) / schedule.alpha(t_next)
        b2 = schedule.sigma(t) ** 2 - (a * schedule.sigma(t_next)) ** 2
        return 2.0 - a, -b2 / schedule.sigma(t), nonnegative_sqrt(b2)

    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        steps, per_step = times.shape[0] - 1, self.evaluations_per_step
        t, t_next = times[:-1], times[1:]
        builder = PlanBuilder(stage_times(jnp.repeat(t, per_step), times, denoise_to_zero), history_size=1)
        first = np.arange(steps) * per_step
        intervals = step_intervals(times)
        for j in range(self.corrections):
            # e s = -2 r_a sigma rho eps and sqrt(2 e) = 2 sigma sqrt(r_a rho), per unit rho.
            ratio_a = (schedule.alpha(t) / schedule.alpha(t_next)) ** 2
            sigma = schedule.sigma(t)
            builder.set_update(first + j, 1.0, (-2.0 * ratio_a * sigma)[:, None])
            builder.set_noise(first + j, intervals, update=2.0 * sigma * jnp.sqrt(ratio_a), stream=j + 1)
            builder.set_langevin(first + j, self.snr)
        state, weight, noise = self._predictor_step(schedule, t, t_next)
        predictor = first + per_step - 1
        builder.set_update(predictor, state, weight[:, None])
        builder.set_noise(predictor, intervals, update=noise)
        if denoise_to_zero:
            append_denoising_stage(builder, schedule, times[-1], self.prediction)
        return builder.build()


# The registry names of these solvers (samplax.solvers.get).
SOLVERS = {
    "euler-maruyama": EulerMaruyama(),
    "pc": PredictorCorrector(),
    "pc-ancestral": PredictorCorrector(predictor="ancestral"),
    "reverse-diffusion": PredictorCorrector(corrector="none"),
}
