"""Shared pieces of the neural-ODE experiments: the methods compared, timing, JSON."""

import json
import os
import time

import jax
import numpy as np

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


def timed(fn, *args, repeats: int = 5):
    """Median wall time of fn(*args) after one warm-up call, and its last output."""
    out = jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


def write_json(path, payload):
    """Atomic write: temporary name, then rename."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)


def summarize(runs, keys):
    """Mean and standard deviation over seeds, per method."""
    out = {}
    for name, rs in runs.items():
        out[name] = {k: [float(np.mean([r[k] for r in rs])), float(np.std([r[k] for r in rs]))]
                     for k in keys}
    return out
