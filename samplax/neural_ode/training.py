"""Optax training loop with an exponentially decaying regularization weight.

The weight follows lambda(s) = lambda_0 (lambda_1 / lambda_0)^(s / S) over S steps, the
schedule of Pal et al. (ICML 2021, 2023); optionally it is zero for the first `delay`
steps and then decays over the remaining S - delay steps.
"""

import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import optax


def exponential_weight(step, total_steps: int, start: float, end: float, delay: int = 0):
    """The regularization weight at `step`: zero before `delay`, then exponential decay.

    The schedule of Pal et al. (ICML 2021, 2023):
    start * (end / start) ** ((step - delay) / (total_steps - delay)), constant after the
    delay when start == end.

    Args:
        step: the training step (an int or a traced scalar).
        total_steps: the number of training steps S, at least 1.
        start: the weight at `delay`, non-negative.
        end: the weight at S; zero if and only if `start` is.
        delay: the number of first steps without regularization, in [0, S).

    Returns:
        The weight, a scalar array.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}.")
    if not 0 <= delay < total_steps:
        raise ValueError(f"delay must lie in [0, total_steps), got {delay}.")
    if start < 0 or end < 0 or (start == 0) != (end == 0):
        raise ValueError(
            f"start and end must be both positive or both zero, got {start}, {end}."
        )
    if start == 0:
        return jnp.zeros(())
    step = jnp.asarray(step)
    decayed = start * (end / start) ** ((step - delay) / (total_steps - delay))
    return jnp.where(step < delay, 0.0, decayed)


@dataclass
class History:
    """Per-step losses, penalties, training NFE and wall times of a training run.

    Attributes:
        loss: the task loss of every step.
        penalty: the penalty of every step.
        nfe: the vector-field evaluations of every step's forward solve.
        step_times: the wall time (seconds) of every step but the first.
        compile_time: the wall time of the first step, compilation included.
    """

    loss: list = field(default_factory=list)
    penalty: list = field(default_factory=list)
    nfe: list = field(default_factory=list)
    step_times: list = field(default_factory=list)
    compile_time: float = 0.0

    @property
    def train_time(self) -> float:
        """The total wall time of all steps but the first (seconds)."""
        return float(sum(self.step_times))


def make_step(loss_fn, optimizer: optax.GradientTransformation):
    """A jitted optimizer step on the task loss plus the weighted penalty.

    Args:
        loss_fn: loss_fn(params, batch, key) -> (task_loss, (penalty, nfe)).
        optimizer: the optax optimizer.

    Returns:
        step(params, opt_state, batch, key, weight) -> (params, opt_state, aux), which
        minimises task_loss + weight * penalty; aux = (task_loss, penalty, nfe).
    """

    def objective(p, batch, k, weight):
        task, (penalty, nfe) = loss_fn(p, batch, k)
        return task + weight * penalty, (task, penalty, nfe)

    @jax.jit
    def step(p, opt_state, batch, k, weight):
        grads, aux = jax.grad(objective, has_aux=True)(p, batch, k, weight)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, aux

    return step


def timed_step(step, history: History, s: int, *args):
    """Runs one training step, recording its time, loss, penalty and NFE in `history`.

    Args:
        step: a step of `make_step`.
        history: the `History` to append to.
        s: the step's index; the time of step 0 is recorded as the compile time.
        *args: the step's arguments (params, opt_state, batch, key, weight).

    Returns:
        (params, opt_state) after the step.

    Raises:
        FloatingPointError: the task loss is not finite.
    """
    start = time.perf_counter()
    params, opt_state, (task, penalty, nfe) = step(*args)
    task = float(task)
    elapsed = time.perf_counter() - start
    if s == 0:
        history.compile_time = elapsed
    else:
        history.step_times.append(elapsed)
    if not jnp.isfinite(task):
        raise FloatingPointError(f"training loss became {task} at step {s}.")
    history.loss.append(task)
    history.penalty.append(float(penalty))
    history.nfe.append(int(nfe))
    return params, opt_state


def train(loss_fn, params, optimizer: optax.GradientTransformation, batches, *, key,
          total_steps: int, weight_start: float = 0.0, weight_end: float = 0.0,
          weight_delay: int = 0):
    """Optax loop over `total_steps` batches of one shape with the decaying weight.

    The first step's time (compilation) is kept apart from the training time of the
    remaining steps.

    Args:
        loss_fn: loss_fn(params, batch, key) -> (task_loss, (penalty, nfe)).
        params: the initial parameters (a pytree).
        optimizer: the optax optimizer.
        batches: an iterable of at least `total_steps` batches.
        key: a PRNG key; step s gets `fold_in(key, s)`.
        total_steps: the number of steps.
        weight_start: the regularization weight after the delay.
        weight_end: the regularization weight at the last step.
        weight_delay: the number of first steps with weight zero.

    Returns:
        (params, History).
    """
    step = make_step(loss_fn, optimizer)
    # Weakly typed leaves (e.g. jnp.array(1.0)) come back strongly typed from the update,
    # which would retrace the step once; make them strong up front.
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.result_type(a)), params)
    opt_state = optimizer.init(params)
    history = History()
    batches = iter(batches)
    for s in range(total_steps):
        weight = exponential_weight(s, total_steps, weight_start, weight_end, weight_delay)
        params, opt_state = timed_step(
            step, history, s, params, opt_state, next(batches), jax.random.fold_in(key, s),
            weight,
        )
    return params, history
