"""The one scan engine every fixed-grid solver runs through.

A solver is compiled, before the loop, into a `Plan`: one row of coefficients per model
evaluation (stage). Stage k evaluates the model at

    z_k = input_state[k] * x + sum_j input_history[k, j] * history[j]

at time `times[k]`, pushes the prediction onto the history (history[0] is the newest),
then updates the state

    x <- update_state[k] * x + sum_j update_history[k, j] * history[j].

After the last stage the result is `output_state * x + sum_j output_history[j] * history[j]`.
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

__all__ = ["Plan", "PlanBuilder", "Predictor", "final_state", "initial_carry", "run_plan", "run_stages"]


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


def final_state(plan: Plan, carry) -> jax.Array:
    """The result of a plan from the carry after its last stage."""
    state, history = carry
    return _combine(plan.output_state, plan.output_history, state, history)


def run_stages(
    plan: Plan,
    predict: Callable[[jax.Array, jax.Array], jax.Array] | Predictor,
    carry,
    stages: slice = slice(None),
    stage_inputs=None,
    return_trajectory: bool = False,
):
    """Run the stages `stages` of a plan from `carry` (see `initial_carry`) in one scan.

    Args:
        predict: a plain `predict(x, t)` or a `Predictor`; an auxiliary Predictor gets one
            entry of `stage_inputs` (a pytree with a leading axis over the stages run, or
            None) at every stage.

    Returns:
        (carry, (trajectory, stage_outputs)): the trajectory (the state after every stage
        run) is None unless asked for; the stacked stage outputs are None unless the
        Predictor is auxiliary.
    """
    predictor = _as_predictor(predict)
    # Slice first, so that the time-only work is done for the stages run and no others.
    coefficients = (plan.times, plan.input_state, plan.input_history, plan.update_state, plan.update_history)
    times, *coefficients = (row[stages] for row in coefficients)
    rows = (predictor.prepare(times), *coefficients)
    if times.shape[0] == 0:  # nothing to run: do not trace the network at all
        return carry, (None, None)

    def stage(carry, row):
        state, history = carry
        (prepared, input_state, input_history, update_state, update_history), stage_input = row
        point = state if plan.evaluates_at_state else _combine(input_state, input_history, state, history)
        if predictor.auxiliary:
            prediction, output = predictor.evaluate(point, prepared, stage_input)
        else:
            prediction, output = predictor.evaluate(point, prepared), None
        history = (prediction.astype(state.dtype),) + history[:-1]
        state = _combine(update_state, update_history, state, history)
        return (state, history), (state if return_trajectory else None, output)

    return jax.lax.scan(stage, carry, (rows, stage_inputs))


def run_plan(
    plan: Plan,
    predict: Callable[[jax.Array, jax.Array], jax.Array] | Predictor,
    x: jax.Array,
    return_trajectory: bool = False,
):
    """Run a whole plan from state x with `predict(x, t)` (a plain callable, or a
    `Predictor` whose time-only work is then done for all stages before the loop). Returns
    (result, trajectory), where the trajectory (the state after every stage, shape
    (S, *x.shape)) is None unless asked for."""
    carry, (trajectory, _) = run_stages(plan, predict, initial_carry(plan, x), return_trajectory=return_trajectory)
    return final_state(plan, carry), trajectory


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

    def build(self, output_state=1.0, output_history=None) -> Plan:
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
            evaluates_at_state=self.evaluates_at_state,
        )
