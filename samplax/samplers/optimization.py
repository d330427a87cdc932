"""What gradients through the sampler are for: optimizing the initial noise of samples for a
reward (DOODL, Wallace et al. 2023; DNO, Karunratanakul et al. 2024), and fine-tuning part
of a network so that its samples minimise a loss defined only on them (AdjointDPM's
customization, Pan et al. 2024).

Both differentiate `sample` with the gradient method the caller chooses (`adjoint=`), so
their memory does not grow with the number of sampling steps under the constant-memory
methods, and both run Adam (optax) from a jitted update.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from samplax.checks import check_callable_as, check_count, check_positive
from samplax.samplers.denoiser import Denoiser
from samplax.samplers.inputs import as_solver, check_batch, check_key, check_model, check_sample_shape, check_shape
from samplax.samplers.sampling import sample

__all__ = ["FineTuneInfo", "NoiseOptimizationInfo", "fine_tune", "optimize_noise", "typicality_penalty"]


def typicality_penalty(noise: jax.Array) -> jax.Array:
    """Per sample, how atypical its norm r is for a standard normal in d dimensions: the
    negative log-density of the chi distribution, r^2 / 2 - (d - 1) log r, less its minimum
    (at r = sqrt(d - 1)), so 0 for typical noise. It leaves the direction free and stops
    the optimization from drifting to norms a sampler never sees."""
    if jnp.ndim(noise) < 2:
        raise ValueError(f"typicality_penalty(): noise must be batch first, (batch, ...), got shape "
                         f"{jnp.shape(noise)}; for one sample pass noise[None]")
    dimension = int(np.prod(noise.shape[1:]))
    squared = jnp.sum(noise.reshape(noise.shape[0], -1) ** 2, axis=1)
    mode = dimension - 1.0
    return 0.5 * (squared - mode) - 0.5 * mode * (jnp.log(squared) - jnp.log(mode))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NoiseOptimizationInfo:
    """Per iteration (before each update, then once after the last): the mean reward, the
    mean typicality penalty, and the samples of the returned noise."""

    rewards: jax.Array
    penalties: jax.Array
    samples: jax.Array


def _check_iterations(iterations, learning_rate) -> None:
    check_count("iterations", iterations)
    check_positive("learning_rate", learning_rate)


def _differentiable_solver(solver, workflow: str):
    """The solver object; an adaptive one is refused, since its step-size loop cannot be
    differentiated in reverse mode."""
    solver = as_solver(solver, workflow)
    if solver.adaptive:
        raise ValueError(f"{workflow}() differentiates through a fixed-grid solve; {solver!r} chooses its steps "
                         "in a loop that reverse-mode differentiation cannot run through: pick a fixed-grid solver")
    return solver


def _check_value(name: str, value, shape: tuple[int, ...], meaning: str) -> None:
    """A reward or loss returned by the user's function: floating point (integers have no
    gradient) and of the expected shape (checked while tracing)."""
    if not jnp.issubdtype(jnp.result_type(value), jnp.floating):
        raise TypeError(f"{name} must return floating-point values (it is differentiated), got dtype "
                        f"{jnp.result_type(value)}")
    if jnp.shape(value) != shape:
        raise ValueError(f"{name} must return {meaning}, shape {shape}, got shape {jnp.shape(value)}")


def _check_finite_record(name: str, values: jax.Array) -> None:
    """A reward or loss that became NaN or inf has spoiled every later update: say so
    rather than return its result."""
    finite = np.isfinite(np.asarray(values))
    if not finite.all():
        first = int(np.argmin(finite))
        raise FloatingPointError(
            f"the {name} was NaN or inf at iteration {first} (of {values.shape[0]}), so the optimization diverged; "
            f"check that the {name} is finite on these samples, or lower learning_rate"
        )


def _check_sample_options(sample_options: dict, workflow: str) -> None:
    """Options of `sample` that the optimization would drop: it keeps only the samples."""
    if sample_options.get("return_trajectory"):
        raise ValueError(f"{workflow}(): return_trajectory does not apply: only the final samples are optimised and "
                         "returned (sample() the result with return_trajectory=True to see its path)")


def optimize_noise(
    model: Denoiser,
    solver,
    noise: jax.Array,
    reward: Callable[[jax.Array], jax.Array],
    *,
    iterations: int = 50,
    learning_rate: float = 0.05,
    typicality: float = 1.0,
    **sample_options,
):
    """Optimize the initial noise of a batch so that its samples raise `reward`.

    Maximises mean(reward(samples)) - typicality * mean(typicality_penalty(noise)) with
    Adam, differentiating through `sample(model, solver, noise, **sample_options)` (give
    `steps`, and `adjoint=` for constant memory).

    Args:
        reward: samples (batch first) -> per-sample rewards (batch,), differentiable (the
            log-probability of a target label under a classifier, for instance).
        iterations, learning_rate: Adam's.
        typicality: weight of the penalty that keeps the noise's norm typical.

    Returns:
        (noise, NoiseOptimizationInfo).
    """
    solver = _differentiable_solver(solver, "optimize_noise")
    _check_sample_options(sample_options, "optimize_noise")
    check_batch(noise, "noise")
    check_model(model, "optimize_noise", noise, "noise")
    check_callable_as("reward", reward, ("samples",))
    _check_iterations(iterations, learning_rate)
    check_positive("typicality", typicality, allow_zero=True)
    optimizer = optax.adam(learning_rate)

    def objective(noise):
        samples, _ = sample(model, solver, noise, **sample_options)
        rewards, penalties = reward(samples), typicality_penalty(noise)
        _check_value("reward", rewards, (noise.shape[0],), "one value per sample")
        return -jnp.mean(rewards) + typicality * jnp.mean(penalties), (jnp.mean(rewards), jnp.mean(penalties), samples)

    @jax.jit
    def update(noise, state):
        (_, (mean_reward, mean_penalty, _)), gradient = jax.value_and_grad(objective, has_aux=True)(noise)
        changes, state = optimizer.update(gradient, state, noise)
        return optax.apply_updates(noise, changes), state, mean_reward, mean_penalty

    state, rewards, penalties = optimizer.init(noise), [], []
    for _ in range(iterations):
        noise, state, mean_reward, mean_penalty = update(noise, state)
        rewards.append(mean_reward)
        penalties.append(mean_penalty)
    _, (mean_reward, mean_penalty, samples) = jax.jit(objective)(noise)
    info = NoiseOptimizationInfo(
        rewards=jnp.stack([*rewards, mean_reward]), penalties=jnp.stack([*penalties, mean_penalty]), samples=samples
    )
    _check_finite_record("reward", info.rewards)
    return noise, info


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FineTuneInfo:
    """The loss of every iteration's batch (before its update)."""

    losses: jax.Array


def _trainable_filter(network, trainable: Callable[[str], bool]):
    """The filter (a pytree of bools like `network`) of its floating-point leaves whose key
    path (`jax.tree_util.keystr`) `trainable` accepts."""
    def keep(path, leaf):
        chosen = trainable(jax.tree_util.keystr(path))
        if not isinstance(chosen, (bool, np.bool_)):
            raise TypeError(f"trainable must return True or False for a key path, got {chosen!r} for "
                            f"{jax.tree_util.keystr(path)}")
        return eqx.is_inexact_array(leaf) and bool(chosen)

    return jax.tree_util.tree_map_with_path(keep, network)


def fine_tune(
    model: Denoiser,
    solver,
    loss: Callable[[jax.Array], jax.Array],
    *,
    trainable: Callable[[str], bool],
    shape: tuple[int, ...],
    key,
    batch: int = 32,
    iterations: int = 100,
    learning_rate: float = 1e-3,
    **sample_options,
):
    """Fine-tune the leaves of `model.network` chosen by `trainable` so that samples from
    fresh noise minimise `loss` (AdjointDPM's customization from a differentiable metric).

    Args:
        loss: samples (batch first) -> a scalar, differentiable.
        trainable: key path of a network leaf (as `jax.tree_util.keystr` writes it, for
            example "...['conditioning']['label']['embedding']...") -> whether to train it.
        shape: the shape of one sample; each iteration draws `batch` normal noises from
            `key`.
        sample_options: for `sample` (give `steps`, and `adjoint=` for constant memory).

    Returns:
        (the fine-tuned Denoiser, FineTuneInfo).
    """
    solver = _differentiable_solver(solver, "fine_tune")
    if solver.stochastic:
        raise ValueError(f"fine_tune() draws its noise from key= and passes the solver none: {solver!r} is "
                         "stochastic; use a deterministic solver")
    _check_sample_options(sample_options, "fine_tune")
    check_model(model, "fine_tune")
    check_callable_as("loss", loss, ("samples",))
    check_callable_as("trainable", trainable, ("path",))
    shape = check_shape("shape", shape)
    check_sample_shape(model, shape, "shape")
    check_count("batch", batch)
    _check_iterations(iterations, learning_rate)
    check_key("key", key)
    spec = _trainable_filter(model.network, trainable)
    if not any(jax.tree.leaves(spec)):
        raise ValueError("trainable selects no floating-point leaf of model.network; print "
                         "jax.tree_util.tree_flatten_with_path(model.network) to see the key paths")
    parameters, frozen = eqx.partition(model.network, spec)
    optimizer = optax.adam(learning_rate)

    def objective(parameters, noise):
        tuned = dataclasses.replace(model, network=eqx.combine(parameters, frozen))
        samples, _ = sample(tuned, solver, noise, **sample_options)
        value = loss(samples)
        _check_value("loss", value, (), "a scalar")
        return value

    @jax.jit
    def update(parameters, state, key):
        noise = jax.random.normal(key, (batch, *shape))
        value, gradient = jax.value_and_grad(objective)(parameters, noise)
        changes, state = optimizer.update(gradient, state, parameters)
        return optax.apply_updates(parameters, changes), state, value

    state, losses = optimizer.init(parameters), []
    for iteration_key in jax.random.split(key, iterations):
        parameters, state, value = update(parameters, state, iteration_key)
        losses.append(value)
    losses = jnp.stack(losses)
    _check_finite_record("loss", losses)
    tuned = dataclasses.replace(model, network=eqx.combine(parameters, frozen))
    return tuned, FineTuneInfo(losses=losses)
