"""Memory and time of gradients through the sampler, for each gradient method of `sample`.

    python benchmarks/gradient_memory.py [--steps 10 50 200] [--time-steps 10 50] [--batch 64]
        [--networks digits cifar]

For the gradient of a loss on a sample with respect to the noise and to the UNet's
parameters: the peak temporary memory of the compiled gradient program
(`jax.jit(...).lower(...).compile().memory_analysis()`, what XLA allocates beyond inputs
and outputs) and, where the machine allows (the digits UNet, at `--time-steps`), the best wall time of
`--repeats` runs. DPM-Solver++(2M) with backpropagation, checkpointing and the exponential
adjoint; reversible Heun with backpropagation and the reversible adjoint. Networks: the
shipped digits UNet (8x8x1, 0.39M parameters) and a UNet of CIFAR-10 size (32x32x3, DDPM's
configuration, about 36M parameters, random weights; memory only: on a 2-core CPU one of
its gradients at 200 steps takes hours). Writes benchmarks/results/gradient_memory.json
and .md (networks not measured in this run keep their earlier results).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

import flax.nnx as nnx
import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from problems import markdown_table, write_json, write_text  # noqa: E402

import samplax as sx  # noqa: E402
from samplax.models import networks, pretrained  # noqa: E402

METHODS = (
    ("dpm++2m", "backpropagation", sx.Backpropagation()),
    ("dpm++2m", "checkpointed", sx.Checkpointed()),
    ("dpm++2m", "exponential adjoint", sx.ExponentialAdjoint(2)),
    ("reversible-heun", "backpropagation", sx.Backpropagation()),
    ("reversible-heun", "reversible adjoint", sx.ReversibleAdjoint()),
)
CIFAR = {"channels": 3, "widths": (128, 256, 256, 256), "blocks_per_level": 2, "attention_levels": (1,),
         "groups": 32, "time_features": 128, "num_classes": None}


def digits_model():
    return pretrained.denoiser("digits-diffusion"), (8, 8, 1)


def cifar_model():
    """DDPM's CIFAR-10 UNet shape (Ho et al. 2020) with random weights, built abstractly:
    only its compiled program is measured."""
    module = nnx.eval_shape(lambda: networks.UNet(**CIFAR, rngs=nnx.Rngs(0)))
    schedule = sx.schedules.VPDiscrete.ddpm_linear()
    return pretrained.as_denoiser(module, schedule, "noise", "discrete"), (32, 32, 3)


def parameter_count(model) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(model.network) if hasattr(leaf, "size"))


def gradient_programs(model, solver, adjoint, steps):
    """(gradient with respect to the noise, gradient with respect to the network) of the
    mean square of the samples, as functions of (noise, network)."""

    def loss(noise, network):
        samples, _ = sx.sample(dataclasses.replace(model, network=network), solver, noise, steps=steps, adjoint=adjoint)
        return jnp.mean(samples**2)

    return jax.jit(jax.grad(loss, argnums=0)), jax.jit(jax.grad(loss, argnums=1))


def measure(model, shape, batch, steps_list, repeats, timed_steps):
    rows = []
    noise_spec = jax.ShapeDtypeStruct((batch, *shape), jnp.float32)
    network_spec = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), model.network)
    for solver, name, adjoint in METHODS:
        for steps in steps_list:
            row = {"solver": solver, "method": name, "steps": steps}
            programs = gradient_programs(model, solver, adjoint, steps)
            for target, program in zip(("noise", "parameters"), programs, strict=True):
                start = time.perf_counter()
                compiled = program.lower(noise_spec, network_spec).compile()
                row[f"{target}_compile_s"] = time.perf_counter() - start
                row[f"{target}_temp_bytes"] = int(compiled.memory_analysis().temp_size_in_bytes)
                if steps in timed_steps:
                    noise = jax.random.normal(jax.random.key(0), (batch, *shape))
                    jax.block_until_ready(compiled(noise, model.network))
                    best = float("inf")
                    for _ in range(repeats):
                        start = time.perf_counter()
                        jax.block_until_ready(compiled(noise, model.network))
                        best = min(best, time.perf_counter() - start)
                    row[f"{target}_seconds"] = best
            print(row, flush=True)
            rows.append(row)
    return rows


def report(results) -> str:
    lines = ["# Gradients through the sampler: memory and time", "",
             f"`python benchmarks/gradient_memory.py` on {results['machine']} (jax {results['jax']}), "
             f"batch {results['batch']}. Temporary memory of the compiled gradient program in MB; "
             "time in seconds (best of the repeats); ratios to backpropagation at equal steps.", ""]
    for network, entry in results["networks"].items():
        lines += [f"## {network} ({entry['parameters'] / 1e6:.2f}M parameters)", ""]
        rows = entry["rows"]
        header = ["solver", "method", "steps", "noise MB", "params MB"]
        header += ["noise s", "params s", "time / backprop (noise)", "time / backprop (params)"]
        table = []
        for row in rows:
            cells = [row["solver"], row["method"], str(row["steps"]),
                     f"{row['noise_temp_bytes'] / 1e6:.1f}", f"{row['parameters_temp_bytes'] / 1e6:.1f}"]
            if "noise_seconds" not in row:
                cells += ["", "", "", ""]
            else:
                base = next(r for r in rows if r["solver"] == row["solver"] and r["steps"] == row["steps"]
                            and r["method"] == "backpropagation")
                cells += [f"{row['noise_seconds']:.3f}", f"{row['parameters_seconds']:.3f}",
                          f"{row['noise_seconds'] / base['noise_seconds']:.2f}",
                          f"{row['parameters_seconds'] / base['parameters_seconds']:.2f}"]
            table.append(cells)
        lines += markdown_table(header, table) + [""]
        growth = []
        for solver, name, _ in METHODS:
            mine = {r["steps"]: r for r in rows if r["solver"] == solver and r["method"] == name}
            low, high = min(mine), max(mine)
            growth.append([solver, name, f"{high} / {low}",
                           f"{mine[high]['noise_temp_bytes'] / mine[low]['noise_temp_bytes']:.2f}",
                           f"{mine[high]['parameters_temp_bytes'] / mine[low]['parameters_temp_bytes']:.2f}"])
        lines += ["Memory growth with the steps:", ""]
        lines += markdown_table(["solver", "method", "steps", "noise", "parameters"], growth) + [""]
    return "\n".join(lines)


def previous_networks(path, batch):
    """The networks measured by an earlier run at the same batch, kept so that
    `--networks cifar` adds to the digits results instead of replacing them."""
    if not os.path.exists(path):
        return {}
    with open(path) as file:
        previous = json.load(file)
    return previous["networks"] if previous.get("batch") == batch else {}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--networks", nargs="+", default=["digits", "cifar"], choices=["digits", "cifar"])
    parser.add_argument("--time-steps", type=int, nargs="*", default=[10, 50],
                        help="the step counts to time (on the digits UNet, or on a GPU)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args()
    path = os.path.join(args.out, "gradient_memory.json")
    results = {"machine": f"{platform.machine()} CPU x{os.cpu_count()} ({jax.default_backend()})",
               "jax": jax.__version__, "batch": args.batch, "networks": previous_networks(path, args.batch)}
    builders = {"digits": digits_model, "cifar": cifar_model}
    for network in args.networks:
        model, shape = builders[network]()
        timed = args.time_steps if network == "digits" or jax.default_backend() != "cpu" else []
        rows = measure(model, shape, args.batch, args.steps, args.repeats, set(timed))
        results["networks"][network] = {"parameters": parameter_count(model), "shape": shape, "rows": rows}
    write_json(path, results)
    write_text(os.path.join(args.out, "gradient_memory.md"), report(results) + "\n")
    print(report(results))


if __name__ == "__main__":
    main()
