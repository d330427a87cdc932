"""EDM's stochastic sampler (Karras et al., NeurIPS 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", Algorithm 2) and Restart sampling (Xu et al., NeurIPS
2023, "Restart Sampling for Improving Generative Processes").

Both are Heun steps on the probability-flow ODE in EDM's variables, x / alpha against the
noise level sigma / alpha (d(x / alpha) / d(sigma / alpha) = eps), each step optionally
preceded by a jump of the forward process to a noisier time (`stochastic.forward_jump`):

- churn raises the noise level of every step inside [churn_min, churn_max] by the factor
  1 + gamma, gamma = min(churn / steps, sqrt(2) - 1), and adds the matching fresh noise
  (times noise_inflation, EDM's S_noise);
- Restart runs the deterministic Heun sampler, and at chosen noise levels jumps back up
  and descends again with a few Heun steps, several times.

Noise levels (churn_min, churn_max, the restart intervals) are sigma / alpha, EDM's sigma,
on every schedule. Every step is two evaluations (EDM's last step into sigma = 0 is an
Euler step; here the grid ends at t_end > 0, and denoise_to_zero adds the step to 0).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from samplax.checks import check_count, check_interval
from samplax.pytrees import static_field
from samplax.schedules import Schedule
from samplax.solvers.base import FixedGridSolver
from samplax.solvers.engine import Plan, PlanBuilder
from samplax.solvers.grids import time_grid
from samplax.solvers.stochastic import forward_jump
from samplax.solvers.toolkit import append_denoising_stage, stage_times, step_intervals

__all__ = ["EDMChurn", "Restart"]


def _noise_level(schedule: Schedule, times):
    return schedule.sigma(times) / schedule.alpha(times)


def _time_at_level(schedule: Schedule, level):
    """The time of noise level sigma / alpha = level, at most the schedule's t_max."""
    return jnp.minimum(schedule.inverse_lambda(-jnp.log(level)), schedule.t_max)


@dataclasses.dataclass(frozen=True)
class _HeunSteps:
    """Heun steps from t_jump to t_to, each after a forward jump from t_from (none where
    t_from == t_jump), the jump's draw over `intervals` on `streams`."""

    t_from: jax.Array
    t_jump: jax.Array
    t_to: jax.Array
    intervals: jax.Array
    streams: jax.Array

    def plan(self, schedule: Schedule, end, noise_inflation: float, denoise_to_zero: bool) -> Plan:
        steps = self.t_to.shape[0]
        times = jnp.stack([self.t_jump, self.t_to], axis=1).reshape(-1)
        builder = PlanBuilder(stage_times(times, end[None], denoise_to_zero), history_size=2)
        jump, second = 2 * np.arange(steps), 2 * np.arange(steps) + 1
        scale, noise = forward_jump(schedule, self.t_from, self.t_jump)
        zero = jnp.zeros((steps, 1), times.dtype)
        builder.set_input(jump, scale, zero)  # evaluate at the jumped state ...
        builder.set_update(jump, scale, zero)  # ... and keep it
        builder.set_noise(jump, self.intervals, input=noise_inflation * noise, update=noise_inflation * noise,
                          stream=self.streams)
        ratio = schedule.alpha(self.t_to) / schedule.alpha(self.t_jump)
        delta = schedule.alpha(self.t_to) * (_noise_level(schedule, self.t_to) - _noise_level(schedule, self.t_jump))
        builder.set_input(second, ratio, delta[:, None])
        builder.set_update(second, ratio, jnp.stack([delta, delta], axis=1) / 2.0)
        if denoise_to_zero:
            append_denoising_stage(builder, schedule, end, "noise")
        return builder.build()


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EDMChurn(FixedGridSolver):
    """EDM's stochastic Heun sampler; churn = 0 is EDM's deterministic Heun sampler.

    Attributes:
        churn: S_churn >= 0, the total churn over the grid (EDM: 40 to 80 for ImageNet-64).
        churn_min, churn_max: S_tmin, S_tmax, the noise levels between which steps churn
            (churn_max may be inf, EDM's default: no upper limit).
        noise_inflation: S_noise, the added noise's scale (EDM: 1.003 to 1.007).
    """

    churn: float = static_field(40.0)
    churn_min: float = static_field(0.05)
    churn_max: float = static_field(50.0)
    noise_inflation: float = static_field(1.003)

    prediction = "noise"
    stochastic = True
    evaluations_per_step = 2
    unbounded_fields = ("churn_max",)

    def __post_init__(self):
        super().__post_init__()
        if not self.churn >= 0:
            raise ValueError(f"churn must be >= 0, got {self.churn}")
        if not 0 <= self.churn_min <= self.churn_max:
            raise ValueError(f"need 0 <= churn_min <= churn_max, got {self.churn_min}, {self.churn_max}")
        if not self.noise_inflation > 0:
            raise ValueError(f"noise_inflation must be positive, got {self.noise_inflation}")

    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        return 2 * steps + int(denoise_to_zero)

    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        t = times[:-1]
        level = _noise_level(schedule, t)
        inside = (level >= self.churn_min) & (level <= self.churn_max)
        gamma = jnp.where(inside, min(self.churn / t.shape[0], math.sqrt(2.0) - 1.0), 0.0)
        t_jump = jnp.where(gamma > 0, _time_at_level(schedule, level * (1.0 + gamma)), t)
        steps = _HeunSteps(t, t_jump, times[1:], step_intervals(times), jnp.zeros(t.shape, jnp.int32))
        return steps.plan(schedule, times[-1], self.noise_inflation, denoise_to_zero)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Restart(FixedGridSolver):
    """Restart sampling: Heun on the grid; at each restart interval (low, high, steps,
    repeats), when the grid reaches the grid point nearest the noise level `low`, jump
    `repeats` times to level `high` with the forward process and come back down with
    `steps` Heun steps on a Karras grid (rho = 7), as in the paper's EDM code.

    Attributes:
        restarts: the intervals; the paper's CIFAR-10 example is ((0.06, 0.30, 2, 2),)
            (its N_restart counts grid points, steps = N_restart - 1).
        noise_inflation: the restart noise's scale (S_noise; 1.003 in the paper's
            ImageNet runs).
    """

    restarts: tuple[tuple[float, float, int, int], ...] = static_field(((0.06, 0.30, 2, 2),))
    noise_inflation: float = static_field(1.0)

    prediction = "noise"
    stochastic = True
    evaluations_per_step = None

    def __post_init__(self):
        super().__post_init__()
        example = "e.g. ((0.06, 0.30, 2, 2),)"
        if not (isinstance(self.restarts, tuple) and self.restarts
                and all(isinstance(interval, tuple) and len(interval) == 4 for interval in self.restarts)):
            raise TypeError(f"Restart.restarts must be a non-empty tuple of (low, high, steps, repeats) tuples, "
                            f"{example}; got {self.restarts!r}")
        for interval in self.restarts:
            low, high, steps, repeats = interval
            check_interval("a restart's (low, high) noise levels", (low, high))
            if low == 0:
                raise ValueError(f"a restart's low noise level must be positive, got {interval}")
            check_count("a restart's steps", steps)
            check_count("a restart's repeats", repeats)
        if not self.noise_inflation > 0:
            raise ValueError(f"noise_inflation must be positive, got {self.noise_inflation}")

    def check_end_points(self, schedule: Schedule, t_start: float, t_end: float) -> None:
        """Each restart's low level must be on the grid's range of noise levels (it restarts
        where the grid reaches it), and its high level within the schedule's."""
        levels = [_noise_level(schedule, jnp.asarray(t)) for t in (t_end, t_start, schedule.t_max)]
        if any(isinstance(level, jax.core.Tracer) for level in levels):  # a schedule traced under the caller's jit
            return
        lowest, highest, top = (float(level) for level in levels)
        for interval in self.restarts:
            low, high = interval[:2]
            if not lowest <= low <= highest:
                raise ValueError(f"restart interval {interval}: its low noise level {low:g} (sigma / alpha) is not "
                                 f"on the grid, whose levels run from {highest:.4g} to {lowest:.4g}")
            if high > top:
                raise ValueError(f"restart interval {interval}: its high noise level {high:g} (sigma / alpha) is "
                                 f"above the schedule's largest, {top:.4g}")

    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        restarted = sum(inner * repeats for _, _, inner, repeats in self.restarts)
        return 2 * (steps + restarted) + int(denoise_to_zero)

    def _restart_steps(self, schedule, times):
        """(t_from, t_jump, t_to, intervals, streams, sort keys) of every restart step."""
        levels = _noise_level(schedule, times[1:])
        rows, stream, position = [], 0, 0
        total = sum(inner * repeats for _, _, inner, repeats in self.restarts)
        for low, high, inner, repeats in self.restarts:
            index = jnp.argmin(jnp.abs(levels - low))  # restart after grid step `index`
            t_low, t_high = times[index + 1], _time_at_level(schedule, jnp.asarray(high, times.dtype))
            grid = time_grid(schedule, inner, "karras", t_high, t_low)
            for _ in range(repeats):
                stream += 1
                t_from = grid[:-1].at[0].set(t_low)
                intervals = jnp.broadcast_to(jnp.stack([t_low, t_high]), (inner, 2))
                keys = index + 0.5 + (position + jnp.arange(inner)) / (2.0 * total)
                rows.append((t_from, grid[:-1], grid[1:], intervals, jnp.full((inner,), stream, jnp.int32), keys))
                position += inner
        return [jnp.concatenate(column) for column in zip(*rows, strict=True)]

    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        t = times[:-1]
        main = (t, t, times[1:], step_intervals(times), jnp.zeros(t.shape, jnp.int32), jnp.arange(t.shape[0]) * 1.0)
        restart = self._restart_steps(schedule, times)
        columns = [jnp.concatenate([a, b.astype(a.dtype)]) for a, b in zip(main, restart, strict=True)]
        order = jnp.argsort(columns[-1], stable=True)
        steps = _HeunSteps(*(column[order] for column in columns[:-1]))
        return steps.plan(schedule, times[-1], self.noise_inflation, denoise_to_zero)


# The registry names of these solvers (samplax.solvers.get).
SOLVERS = {
    "edm-churn": EDMChurn(),
    "restart": Restart(),
}
