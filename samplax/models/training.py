"""A generic training loop for any `loss(model, batch, key) -> scalar`.

AdamW (Loshchilov & Hutter 2019) with linear warm-up and cosine decay, gradient clipping
by global norm, and an exponential moving average of the weights (the EMA weights are the
ones to sample from). One jit-compiled step per iteration. Everything a step uses is a
function of the seed and the step number (the batch is a slice of a per-epoch permutation,
the loss key is folded from the step), so a run that resumes from a checkpoint ends with
the same weights as a run that was never interrupted.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time
from collections.abc import Callable

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from samplax.checks import check_count, check_positive, check_real
from samplax.models import checkpoints

__all__ = ["TrainConfig", "Trained", "cross_entropy_loss", "make_optimizer", "train"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of a run. `checkpoint_every` is in steps (0: only at the end)."""

    steps: int = 10_000
    batch_size: int = 128
    learning_rate: float = 2e-3
    warmup_steps: int = 200
    final_learning_rate: float = 1e-5
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 1000

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            check_count(f"TrainConfig.{name}", getattr(self, name))
        for name in ("warmup_steps", "checkpoint_every", "seed"):
            check_count(f"TrainConfig.{name}", getattr(self, name), minimum=0)
        for name in ("final_learning_rate", "weight_decay"):
            check_positive(f"TrainConfig.{name}", getattr(self, name), allow_zero=True)
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps must lie in [0, steps), got {self.warmup_steps}")
        check_real("ema_decay", self.ema_decay)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        check_positive("learning_rate", self.learning_rate)
        if self.final_learning_rate > self.learning_rate:
            raise ValueError(f"final_learning_rate={self.final_learning_rate} is above learning_rate="
                             f"{self.learning_rate}: the cosine schedule decays from learning_rate to it")
        check_positive("clip_norm", self.clip_norm)
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")


@dataclasses.dataclass
class Trained:
    """The result of `train`: the module holding the final weights, a copy holding the EMA
    weights, the mean loss of each logged interval, and the wall time of this call."""

    model: nnx.Module
    ema: nnx.Module
    losses: list[float]
    seconds: float


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW with warm-up and cosine decay."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=config.warmup_steps,
        decay_steps=config.steps,
        end_value=config.final_learning_rate,
    )
    return optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.adamw(schedule, weight_decay=config.weight_decay),
    )


def cross_entropy_loss(model, batch, key):
    """Softmax cross-entropy of a classifier `model(x) -> logits` on batch["label"]."""
    del key
    logits = model(jnp.asarray(batch["x"]))
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]))


def _batch(data: dict, step, batch_size: int, key):
    """Batch `step`: a slice of the permutation of the data drawn for its epoch."""
    n = next(iter(data.values())).shape[0]
    per_epoch = n // batch_size
    order = jax.random.permutation(jax.random.fold_in(key, step // per_epoch), n)
    index = jax.lax.dynamic_slice_in_dim(order, (step % per_epoch) * batch_size, batch_size)
    return {name: value[index] for name, value in data.items()}


def _initial_state(params, optimizer):
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "ema": jax.tree.map(jnp.copy, params),
        "opt_state": optimizer.init(params),
    }


@functools.partial(jax.jit, static_argnames=("loss", "graphdef", "config"))
def _step(state, rest, data, keys, *, loss, graphdef, config):
    """One optimiser step; compiled once per (loss, network structure, config, shapes)."""
    data_key, loss_key = keys
    optimizer = make_optimizer(config)
    step = state["step"]
    batch = _batch(data, step, config.batch_size, data_key)

    def objective(params):
        return loss(nnx.merge(graphdef, params, rest), batch, jax.random.fold_in(loss_key, step))

    value, grads = jax.value_and_grad(objective)(state["params"])
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    ema = optax.incremental_update(params, state["ema"], 1.0 - config.ema_decay)
    return {"step": step + 1, "params": params, "ema": ema, "opt_state": opt_state}, value


def _checked_data(data: dict, batch_size: int) -> dict:
    """The data as arrays, checked to share their first axis, to hold a batch, and to be
    finite (a NaN example would surface later as a NaN loss that blames the learning rate)."""
    if not isinstance(data, dict):
        raise TypeError(f"data must be a dict of arrays with one row per example (such as {{'x': images}}), got "
                        f"{type(data).__name__}")
    data = {name: jnp.asarray(value) for name, value in data.items()}
    for name, value in data.items():
        if jnp.issubdtype(value.dtype, jnp.inexact) and not bool(jnp.all(jnp.isfinite(value))):
            raise ValueError(f"data[{name!r}] contains NaN or inf values")
    sizes = {value.shape[0] for value in data.values()}
    if len(sizes) != 1:
        raise ValueError(f"all data arrays must share their first axis, got sizes {sorted(sizes)}")
    if sizes.pop() < batch_size:
        raise ValueError(f"batch_size ({batch_size}) exceeds the number of examples")
    return data


def _resumed(checkpoint: pathlib.Path, state: dict, training: dict) -> dict:
    """The training state stored at `checkpoint`, which must come from the same training config."""
    stored = checkpoints.read_config(checkpoint)
    if stored.get("training") != training:
        raise ValueError(
            f"checkpoint {str(checkpoint)!r} was made with a different training config "
            f"({stored.get('training')}); use another path or the same settings"
        )
    return checkpoints.load(checkpoint, state)[0]


def train(
    model: nnx.Module,
    loss: Callable,
    data: dict,
    config: TrainConfig,
    *,
    checkpoint: str | pathlib.Path | None = None,
    metadata: dict | None = None,
    progress: bool = True,
    callback: Callable[[int, float], None] | None = None,
) -> Trained:
    """Train `model` in place to minimise `loss(model, batch, key)` over `data`.

    Args:
        model: an NNX module; its `nnx.Param`s are trained, other state is left as is.
        loss: `loss(model, batch, key) -> scalar`, with batch a dict of arrays.
        data: dict of arrays sharing their first axis (e.g. {"x": images, "label": labels}).
        config: hyperparameters and seed.
        checkpoint: a `.msgpack` path. The training state is saved there every
            `config.checkpoint_every` steps and at the end; if the file exists the run
            resumes from it (its training config must equal `config`).
        metadata: extra JSON-serialisable entries for the checkpoint's config (e.g. the
            network's name and arguments, so the checkpoint can be loaded as a model).
        progress: show a tqdm bar with the loss and throughput.
        callback: called as `callback(step, loss)` after each logged interval.

    Returns:
        `Trained` with the module (final weights) and a copy with the EMA weights.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a samplax TrainConfig, got {type(config).__name__}")
    if not callable(loss):
        raise TypeError(f"loss must be a function loss(model, batch, key), got {type(loss).__name__}")
    data = _checked_data(data, config.batch_size)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    state = _initial_state(params, make_optimizer(config))
    run_config = {**(metadata or {}), "kind": "training", "training": dataclasses.asdict(config)}
    checkpoint = None if checkpoint is None else pathlib.Path(checkpoint)
    if checkpoint is not None and checkpoint.exists():
        state = _resumed(checkpoint, state, run_config["training"])
    keys = jax.random.split(jax.random.PRNGKey(config.seed))
    start_step = int(state["step"])
    log_every = max(1, min(100, config.steps // 20))
    losses, interval = [], []
    started = time.perf_counter()
    bar = tqdm(total=config.steps, initial=start_step, disable=not progress, unit="step", dynamic_ncols=True)
    tick, tick_step = time.perf_counter(), start_step
    for step in range(start_step, config.steps):
        try:
            state, value = _step(state, rest, data, keys, loss=loss, graphdef=graphdef, config=config)
        except KeyError as error:  # raised while tracing the first step, by a loss that reads a missing key
            if not error.args or error.args[0] in data:
                raise
            bar.close()
            raise ValueError(f"the loss reads data[{error.args[0]!r}], which the data does not have (its keys: "
                             f"{sorted(data)})") from None
        interval.append(value)
        done = step + 1
        if done % log_every == 0 or done == config.steps:
            mean = float(np.mean(jax.device_get(interval)))
            losses.append(mean)
            interval = []
            now = time.perf_counter()
            rate = (done - tick_step) * config.batch_size / max(now - tick, 1e-9)
            bar.set_postfix(loss=f"{mean:.4f}", samples_per_s=f"{rate:.0f}")
            bar.update(done - bar.n)
            tick, tick_step = now, done
            if not np.isfinite(mean):
                bar.close()
                raise FloatingPointError(f"loss became {mean} at step {done}; lower the learning rate")
            if callback is not None:
                callback(done, mean)
        if checkpoint is not None and (
            done == config.steps or (config.checkpoint_every and done % config.checkpoint_every == 0)
        ):
            checkpoints.save(checkpoint, state, run_config)
    bar.close()
    nnx.update(model, state["params"])
    ema = nnx.merge(graphdef, state["ema"], rest)
    return Trained(model=model, ema=ema, losses=losses, seconds=time.perf_counter() - started)
