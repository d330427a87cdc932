"""Shared pieces of the neural-ODE experiments: the methods compared, timing, JSON."""

import json
import time

import jax
import numpy as np

from samplax.models.checkpoints import write_atomic
from samplax.neural_ode import (
    GlobalRegularization,
    KineticJacobian,
    LocalRegularization,
    NoRegularization,
    Steer,
    Taylor,
)

METHODS = {
    "none": NoRegularization(),
    "steer": Steer(0.5),
    "rnode": KineticJacobian(),
    "taynode": Taylor(),
    "ernode": GlobalRegularization("error", "mean"),
    "srnode": GlobalRegularization("stiffness", "max"),
    "local_unbiased": LocalRegularization("error", "unbiased"),
    "local_biased": LocalRegularization("error", "biased"),
}


def timed(fn, *args, repeats: int = 20):
    """Median wall time of fn(*args) after one warm-up call, and its last output."""
    out = jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


def write_json(path, payload):
    """Write the results atomically, through the library's one atomic writer."""
    write_atomic(path, (json.dumps(payload, indent=2) + "\n").encode())


def summarize(runs, keys):
    """Mean and standard deviation over seeds, per method."""
    out = {}
    for name, rs in runs.items():
        out[name] = {k: [float(np.mean([r[k] for r in rs])), float(np.std([r[k] for r in rs]))]
                     for k in keys}
    return out


def train_interleaved(setups, optimizer, batches, *, key, total_steps, weight_delay=0):
    """Trains several methods step by step in turn, on the same batches and keys.

    setups: name -> (loss_fn, params, weight_start, weight_end). Interleaving makes
    load from other processes on a shared machine hit every method alike, so the
    training-time ratios stay meaningful. Regularization weights are zero for the first
    `weight_delay` steps. Returns name -> (params, History).
    """
    from samplax.neural_ode import History, exponential_weight, make_step, timed_step

    state = {}
    for name, (loss_fn, params, w0, w1) in setups.items():
        state[name] = [make_step(loss_fn, optimizer), params, optimizer.init(params),
                       History(), w0, w1]
    names = list(setups)
    for s in range(total_steps):
        batch = next(batches)
        k = jax.random.fold_in(key, s)
        for name in names[s % len(names):] + names[: s % len(names)]:
            step, params, opt_state, hist, w0, w1 = state[name]
            weight = exponential_weight(s, total_steps, w0, w1, weight_delay)
            state[name][1:3] = timed_step(step, hist, s, params, opt_state, batch, k, weight)
    return {name: (st[1], st[3]) for name, st in state.items()}
