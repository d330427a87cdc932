"""The one scan engine every fixed-grid solver runs through.

A solver is compiled, before the loop, into a `Plan`: one row of coefficients per model
evaluation (stage). Stage k evaluates the model at

    z_k = input_state[k] * x + sum_j input_history[k, j] * history[j]

at time `times[k]`, pushes the prediction onto the history (history[0] is the newest),
then updates the state

    x <- update_state[k] * x + sum_j update_history[k, j] * history[j].

After the last stage the result is `output_state * x + sum_j output_history[j] * history[j]`.

A stochastic plan adds Gaussian noise as well (`NoisePlan`): stage k draws one xi_k, used
by both its evaluation point and its update (x <- ... + update_noise[k] * xi_k), and the
result gets one more draw. The draws come from a noise source the caller passes (per-sample
keys or Brownian paths, `samplax.samplers.noise`); a deterministic plan has no NoisePlan and
its loop body is unchanged.
Multistep methods (DPM-Solver++ 2M, DEIS, iPNDM), Runge-Kutta methods (singlestep
DPM-Solver, Heun, RK4) and predictor-corrector methods (UniPC, whose corrected state is
the `x` and whose predicted state is the `z`) are all such plans, so the loop body is the
same few fused array operations for every solver, and `jax.lax.scan` keeps compile time
independent of the number of steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from samplax.pytrees import static_field

__all__ = ["NoisePlan", "Plan", "PlanBuilder", "Predictor", "final_state", "initial_carry", "run_plan", "run_stages"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NoisePlan:
    """Where a plan of S stages adds noise: draw k (k < S) belongs to stage k and enters
    its evaluation point with scale `input[k]` and its update with `update[k]`; draw S
    enters the result with scale `output`. Each draw is the normalised increment of a
    Brownian path over `intervals[k]` (a pair of times, in the schedule's t) on path
    `streams[k]`: draws over disjoint intervals of one stream, or on different streams,
    are independent. With `langevin` (S,), a stage whose entry r is positive is a Langevin
    step (Song et al. 2021): its scales on history[0] and on the noise are multiplied by
    rho and sqrt(rho), rho = (r |xi| / |history[0]|)^2 per sample."""

    input: jax.Array  # (S,)
    update: jax.Array  # (S,)
    output: jax.Array  # ()
    intervals: jax.Array  # (S + 1, 2)
    streams: jax.Array  # (S + 1,) integers
    langevin: jax.Array | None = None  # (S,)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Plan:
    """Coefficients of a fixed-grid solve: S stages, a history of H predictions."""

    times: jax.Array  # (S,)
    input_state: jax.Array  # (S,)
    input_history: jax.Array  # (S, H)
    update_state: jax.Array  # (S,)
    update_history: jax.Array  # (S, H)
    output_state: jax.Array  # ()
    output_history: jax.Array  # (H,)
    noise: NoisePlan | None = None  # None for deterministic solvers
    # True when every stage evaluates at the state itself (input_state = 1, input_history = 0),
    # as in multistep methods: the engine then skips the input combination.
    evaluates_at_state: bool = static_field(False)

    @property
    def num_evaluations(self) -> int:
        return self.times.shape[0]


@dataclasses.dataclass(frozen=True)
class Predictor:
    """A prediction `predict(x, t)` split so that the work depending on time alone (the
    schedule's alpha and sigma, the network's time input) runs once for all stage times
    before the loop: `prepare(times)` maps times of any shape to a pytree of arrays of that
    shape, and `evaluate(x, prepared)` uses one row of it. Calling it does both.

    With `auxiliary`, evaluate takes a per-stage input as well and returns a per-stage
    output beside the prediction, `evaluate(x, prepared, stage_input) -> (prediction,
    stage_output)`: the engine feeds and stacks them along the stages it runs (editing
    records and injects a network's attention values this way)."""

    prepare: Callable[[jax.Array], object]
    evaluate: Callable[..., object]
    auxiliary: bool = False

    def __call__(self, x, t):
        if self.auxiliary:
            raise TypeError("a Predictor with auxiliary input and output runs only inside the engine")
        return self.evaluate(x, self.prepare(t))


def _as_predictor(predict) -> Predictor:
    if isinstance(predict, Predictor):
        return predict
    return Predictor(prepare=lambda times: times, evaluate=predict)


def _combine(scale, weights, state, history):
    """scale * state + sum_j weights[j] * history[j], written out over the (static, small)
    history so that XLA fuses it into one elementwise pass."""
    dtype = state.dtype
    result = scale.astype(dtype) * state
    for j, past in enumerate(history):
        result = result + weights[j].astype(dtype) * past
    return result


def initial_carry(plan: Plan, x: jax.Array):
    """The engine's carry at the start of a plan: the state x and an empty history (a tuple
    of arrays, newest first, so pushing a prediction renames buffers instead of copying)."""
    return x, tuple(jnp.zeros_like(x) for _ in range(plan.input_history.shape[1]))


def _draw(draw, used, index, interval, stream, like):
    """One draw of the solve, skipped (zeros) where its scales are zero."""
    return jax.lax.cond(used, lambda: draw(index, interval, stream).astype(like.dtype), lambda: jnp.zeros_like(like))


def _check_noise(plan: Plan, draw) -> None:
    if plan.noise is not None and draw is None:
        raise ValueError("this plan adds noise: pass a noise source (draw) to run it")


def final_state(plan: Plan, carry, draw=None) -> jax.Array:
    """The result of a plan from the carry after its last stage (`draw` as in run_stages)."""
    _check_noise(plan, draw)
    state, history = carry
    result = _combine(plan.output_state, plan.output_history, state, history)
    if plan.noise is not None:
        noise_plan, index = plan.noise, plan.num_evaluations
        xi = _draw(draw, noise_plan.output != 0, index, noise_plan.intervals[index], noise_plan.streams[index], state)
        result = result + noise_plan.output.astype(state.dtype) * xi
    return result


def _langevin_factor(snr, noise, prediction):
    """rho = (snr |noise| / |prediction|)^2 per sample where snr > 0, else 1."""
    axes = tuple(range(1, noise.ndim))
    ratio = jnp.sum(noise**2, axes, keepdims=True) / jnp.sum(prediction**2, axes, keepdims=True)
    return jnp.where(snr > 0, snr.astype(noise.dtype) ** 2 * ratio, 1.0)


def _noisy_stage(state, history, prediction, point_noise, update_state, update_history, update_noise, langevin):
    """The update of a stochastic stage: the deterministic combination plus the scaled
    draw, with the Langevin step-size control where the plan asks for it."""
    dtype = state.dtype
    if langevin is not None:
        factor = _langevin_factor(langevin, point_noise, prediction)
        history = (prediction * factor,) + history[1:]
        point_noise = point_noise * jnp.sqrt(factor)
    return _combine(update_state, update_history, state, history) + update_noise.astype(dtype) * point_noise


def run_stages(
    plan: Plan,
    predict: Callable[[jax.Array, jax.Array], jax.Array] | Predictor,
    carry,
    stages: slice = slice(None),
    stage_inputs=None,
    return_trajectory: bool = False,
    draw=None,
    checkpoint: bool = False,
):
    """Run the stages `stages` of a plan from `carry` (see `initial_carry`) in one scan.

    Args:
        predict: a plain `predict(x, t)` or a `Predictor`; an auxiliary Predictor gets one
            entry of `stage_inputs` (a pytree with a leading axis over the stages run, or
            None) at every stage.
        draw: for a plan with noise, `draw(index, interval, stream)`: the standard normal
            draw `index` of the solve, shaped like the state (`samplax.samplers.noise`).
        checkpoint: keep only each stage's carry for differentiation and recompute the
            stage (network activations included) in the backward pass, so that memory
            does not grow with the stages beyond one carry each (`jax.checkpoint`).

    Returns:
        (carry, (trajectory, stage_outputs)): the trajectory (the state after every stage
        run) is None unless asked for; the stacked stage outputs are None unless the
        Predictor is auxiliary.
    """
    _check_noise(plan, draw)
    predictor = _as_predictor(predict)
    noise_plan = plan.noise
    # Slice first, so that the time-only work is done for the stages run and no others.
    coefficients = (plan.times, plan.input_state, plan.input_history, plan.update_state, plan.update_history)
    times, *coefficients = (row[stages] for row in coefficients)
    noise_rows = None  # only a stochastic plan scans its noise rows and stage indices
    if noise_plan is not None:
        langevin = None if noise_plan.langevin is None else noise_plan.langevin[stages]
        last = plan.num_evaluations  # the output's draw is not a stage's
        noise_rows = (jnp.arange(last)[stages], noise_plan.input[stages], noise_plan.update[stages], langevin,
                      noise_plan.intervals[:last][stages], noise_plan.streams[:last][stages])
    rows = (predictor.prepare(times), *coefficients)
    if times.shape[0] == 0:  # nothing to run: do not trace the network at all
        return carry, (None, None)

    def stage(carry, row):
        state, history = carry
        (prepared, input_state, input_history, update_state, update_history), noise_row, stage_input = row
        point = state if plan.evaluates_at_state else _combine(input_state, input_history, state, history)
        if noise_row is not None:
            index, input_noise, update_noise, langevin, interval, stream = noise_row
            used = (input_noise != 0) | (update_noise != 0)
            point_noise = _draw(draw, used, index, interval, stream, state)
            point = point + input_noise.astype(state.dtype) * point_noise
        if predictor.auxiliary:
            prediction, output = predictor.evaluate(point, prepared, stage_input)
        else:
            prediction, output = predictor.evaluate(point, prepared), None
        prediction = prediction.astype(state.dtype)
        if noise_row is None:
            history = (prediction,) + history[:-1]
            state = _combine(update_state, update_history, state, history)
        else:
            pushed = (prediction,) + history[:-1]
            state = _noisy_stage(
                state, pushed, prediction, point_noise, update_state, update_history, update_noise, langevin
            )
            history = pushed
        return (state, history), (state if return_trajectory else None, output)

    if checkpoint:
        stage = jax.checkpoint(stage, prevent_cse=False)  # inside a scan, CSE cannot merge stages
    return jax.lax.scan(stage, carry, (rows, noise_rows, stage_inputs))


def run_plan(
    plan: Plan,
    predict: Callable[[jax.Array, jax.Array], jax.Array] | Predictor,
    x: jax.Array,
    return_trajectory: bool = False,
    draw=None,
    checkpoint: bool = False,
):
    """Run a whole plan from state x with `predict(x, t)` (a plain callable, or a
    `Predictor` whose time-only work is then done for all stages before the loop), and
    `draw` for a plan with noise and `checkpoint` (see run_stages). Returns (result, trajectory), where the
    trajectory (the state after every stage, shape (S, *x.shape)) is None unless asked for."""
    carry = initial_carry(plan, x)
    carry, (trajectory, _) = run_stages(
        plan, predict, carry, return_trajectory=return_trajectory, draw=draw, checkpoint=checkpoint
    )
    return final_state(plan, carry, draw), trajectory


class PlanBuilder:
    """Assembles a Plan from rows set in groups. Every stage starts as 'evaluate at the
    state, keep the state'; solvers overwrite the rows that differ, with static index
    arrays so that the number of operations does not depend on the number of steps."""

    def __init__(self, times: jax.Array, history_size: int):
        stages = times.shape[0]
        dtype = times.dtype
        self.times = times
        self.input_state = jnp.ones((stages,), dtype)
        self.input_history = jnp.zeros((stages, history_size), dtype)
        self.update_state = jnp.ones((stages,), dtype)
        self.update_history = jnp.zeros((stages, history_size), dtype)
        self.evaluates_at_state = True
        self.noise = None  # [input, update, intervals, streams, langevin] once noise is set

    def _noise_rows(self):
        if self.noise is None:
            stages, dtype = self.times.shape[0], self.times.dtype
            zeros = jnp.zeros((stages,), dtype)
            self.noise = [zeros, zeros, jnp.zeros((stages + 1, 2), dtype), jnp.zeros((stages + 1,), jnp.int32), None]
        return self.noise

    @staticmethod
    def _pad(weights, width):
        weights = jnp.atleast_2d(weights)
        return jnp.pad(weights, ((0, 0), (0, width - weights.shape[1])))

    def set_input(self, stages: np.ndarray, state, history):
        """Stages (static indices) evaluate at state * x + history . predictions."""
        width = self.input_history.shape[1]
        self.evaluates_at_state = False
        self.input_state = self.input_state.at[stages].set(state)
        self.input_history = self.input_history.at[stages].set(self._pad(history, width))

    def set_update(self, stages: np.ndarray, state, history):
        """After evaluating, stages (static indices) set x to state * x + history . predictions."""
        width = self.update_history.shape[1]
        self.update_state = self.update_state.at[stages].set(state)
        self.update_history = self.update_history.at[stages].set(self._pad(history, width))

    def set_noise(self, stages: np.ndarray, intervals, input=0.0, update=0.0, stream=0):
        """Stages (static indices) draw noise over `intervals` ((len(stages), 2) times) on
        `stream`, scaled by `input` in their evaluation point and by `update` in their
        update (one draw per stage, shared by both)."""
        noise = self._noise_rows()
        noise[0] = noise[0].at[stages].set(input)
        noise[1] = noise[1].at[stages].set(update)
        noise[2] = noise[2].at[stages].set(intervals)
        noise[3] = noise[3].at[stages].set(stream)

    def set_langevin(self, stages: np.ndarray, snr):
        """Stages (static indices) are Langevin steps with signal-to-noise ratio `snr` (see
        NoisePlan): their scales on the new prediction and the noise are step sizes per
        unit rho."""
        noise = self._noise_rows()
        if noise[4] is None:
            noise[4] = jnp.zeros_like(noise[0])
        noise[4] = noise[4].at[stages].set(snr)

    def _noise_plan(self, output_noise, output_interval, output_stream):
        if self.noise is None and output_noise is None:
            return None
        input_noise, update_noise, intervals, streams, langevin = self._noise_rows()
        if output_noise is not None:
            intervals = intervals.at[-1].set(output_interval)
            streams = streams.at[-1].set(output_stream)
        output = jnp.asarray(0.0 if output_noise is None else output_noise, self.times.dtype)
        return NoisePlan(input=input_noise, update=update_noise, output=output, intervals=intervals,
                         streams=streams, langevin=langevin)

    def build(self, output_state=1.0, output_history=None, output_noise=None, output_interval=None,
              output_stream=0) -> Plan:
        """The plan; with `output_noise`, the result gets a draw over `output_interval` on
        `output_stream` with that scale."""
        width = self.update_history.shape[1]
        dtype = self.times.dtype
        if output_history is None:
            output_history = jnp.zeros((width,), dtype)
        return Plan(
            times=self.times,
            input_state=self.input_state,
            input_history=self.input_history,
            update_state=self.update_state,
            update_history=self.update_history,
            output_state=jnp.asarray(output_state, dtype),
            output_history=jnp.pad(jnp.asarray(output_history, dtype), (0, width - len(output_history))),
            noise=self._noise_plan(output_noise, output_interval, output_stream),
            evaluates_at_state=self.evaluates_at_state,
        )
