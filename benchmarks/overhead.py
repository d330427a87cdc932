"""Sampler overhead over the physical limit NFE x (one network call), and compile time.

    python benchmarks/overhead.py [--repeats 7]

Writes benchmarks/results/overhead.json. Run it on an otherwise idle machine: it times
wall clock.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from problems import write_json  # noqa: E402

import samplax as sx  # noqa: E402

# (solver, noise source): the deterministic ones, and the stochastic ones with each source.
SOLVERS = (
    ("dpm++2m", None), ("dpm++3m", None), ("dpm++3s", None), ("ddim", None),
    ("ddpm", "independent"), ("dpm++2m-sde", "independent"), ("dpm++2m-sde", "brownian"),
    ("sa-solver", "independent"), ("edm-churn", "independent"), ("pc", "independent"),
)

# -- timing ------------------------------------------------------------------------------


def timing(samples_per_batch: int = 256, repeats: int = 7):
    """Sampler overhead over the physical limit, NFE x (one network call), for an MLP that
    costs over a millisecond per call, and compile time for 5 and 20 steps.

    The limit is measured as one jitted `lax.scan` of NFE network calls (each fed the last
    output, so none can be elided): the network's own cost with no solver arithmetic and no
    per-call dispatch. Both are timed alternately, best of `repeats`."""
    dimension, width = 64, 1024
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    weights = [
        jax.random.normal(keys[0], (dimension + 1, width)) / np.sqrt(dimension),
        jax.random.normal(keys[1], (width, width)) / np.sqrt(width),
        jax.random.normal(keys[2], (width, dimension)) / np.sqrt(width),
    ]

    def network(parameters, x, t):
        hidden = jnp.concatenate([x, t[:, None]], axis=1)
        hidden = jax.nn.silu(hidden @ parameters[0])
        hidden = jax.nn.silu(hidden @ parameters[1])
        return hidden @ parameters[2]

    schedule = sx.schedules.VPDiscrete.ddpm_linear()
    model = sx.Denoiser(jax.tree_util.Partial(network, weights), schedule, "noise")
    noise = jax.random.normal(jax.random.PRNGKey(1), (samples_per_batch, dimension))
    t = jnp.full((samples_per_batch,), 0.5)

    @jax.jit
    def network_calls(x, count_array):
        def call(x, _):
            return network(weights, x, t), None

        return jax.lax.scan(call, x, count_array)[0]

    def best_of(function, *args, **kwargs):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(function(*args, **kwargs))
            times.append(time.perf_counter() - start)
        return min(times)

    def samples(name, steps, source=None):
        options = {} if source is None else {"key": jax.random.key(0), "noise_source": source}
        return sx.sample(model, name, noise, steps=steps, **options)[0]

    results = {"network_call_ms": {}, "overhead": {}, "compile_s": {}}
    for name, source in SOLVERS:
        for steps in (10, 20):
            label = f"{name} steps={steps}" + (f" noise={source}" if source else "")
            count_array = jnp.zeros((sx.solvers.get(name).evaluations(steps),))
            network_calls(noise, count_array).block_until_ready()
            samples(name, steps, source)  # compile
            limit, wall = [], []
            for _ in range(repeats):
                limit.append(best_of(network_calls, noise, count_array))
                wall.append(best_of(samples, name, steps, source))
            results["network_call_ms"][label] = 1e3 * min(limit) / count_array.shape[0]
            results["overhead"][label] = min(wall) / min(limit)
    for steps in (5, 20):
        jax.clear_caches()
        start = time.perf_counter()
        jax.block_until_ready(samples("dpm++2m", steps))
        first = time.perf_counter() - start
        second = best_of(samples, "dpm++2m", steps)
        results["compile_s"][f"dpm++2m steps={steps}"] = first - second
    return results


def noise_cost(samples_per_batch: int = 256, steps: int = 500, repeats: int = 30):
    """Milliseconds per stage of a 500-step solve whose network is almost free (x / 2):
    the deterministic dpm++2m against dpm++2m-sde with each noise source, so the
    difference is what drawing the noise costs per evaluation for a (256, 64) batch."""
    schedule = sx.schedules.VPDiscrete.ddpm_linear()
    model = sx.Denoiser(lambda x, t: 0.5 * x, schedule, "noise")
    noise = jax.random.normal(jax.random.PRNGKey(1), (samples_per_batch, 64))
    cases = {"dpm++2m": {}, "dpm++2m-sde independent": {"key": jax.random.key(0)},
             "dpm++2m-sde brownian": {"key": jax.random.key(0), "noise_source": "brownian"}}
    result = {}
    for label, options in cases.items():
        name = label.split(" ")[0]

        def run(name=name, options=options):
            return sx.sample(model, name, noise, steps=steps, **options)[0]

        jax.block_until_ready(run())
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(run())
            times.append(time.perf_counter() - start)
        result[label] = 1e3 * min(times) / steps
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "overhead.json"))
    args = parser.parse_args()
    results = timing(repeats=args.repeats)
    results["ms_per_stage_with_a_free_network"] = noise_cost()
    results["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, {jax.devices()[0].device_kind}"
    )
    write_json(args.out, results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
