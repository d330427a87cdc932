"""Sampling at CIFAR-10 size: diffusers' UNet2DModel in the configuration of
google/ddpm-cifar10-32 (35.7M parameters, 32x32x3), random weights, converted to NNX.

    python benchmarks/scale.py [--batch 8] [--throughput-batch 64] [--repeats 3]

Measures, for dpm++2m at 10 and 50 steps: one network call; the sampler's overhead over
the physical limit (a jitted lax.scan of NFE network calls, each fed the mean of the
last input and output, so that none can be elided and the values stay bounded: the
network's own cost with no solver arithmetic); compile time; images per second at
the throughput batch; peak memory of the compiled sampler (XLA's buffer assignment); and
the network in bfloat16 (weights in float32): its time and the error it adds to a
10-step sample against float32. Writes benchmarks/results/scale.json. Time it on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from problems import write_json  # noqa: E402

import samplax as sx  # noqa: E402
from samplax.models.diffusers_unet import UNet2DConfig, UNet2DModel  # noqa: E402
from samplax.models.networks import network_function  # noqa: E402

# google/ddpm-cifar10-32's unet/config.json (the DDPM CIFAR-10 model of Ho et al. 2020).
CIFAR_UNET = UNet2DConfig(
    sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=2, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6,
    norm_num_groups=32, attention_head_dim=None,
)
STEPS = (10, 50)


def cifar_denoiser(dtype=None):
    """The CIFAR-size UNet with random weights (the same weights for every dtype) as a
    Denoiser of the DDPM schedule, and its parameter count."""
    module = UNet2DModel(CIFAR_UNET, dtype=dtype, rngs=nnx.Rngs(0))
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(nnx.state(module, nnx.Param)))
    network = network_function(module)
    return sx.Denoiser(network, sx.schedules.VPDiscrete.ddpm_linear(), "noise", "discrete"), network, count


def best_of(repeats, function, *args):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--throughput-batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "scale.json"))
    args = parser.parse_args()

    model, network, count = cifar_denoiser()
    noise = jax.random.normal(jax.random.key(0), (args.batch, 32, 32, 3))
    t = jnp.full((args.batch,), 499.0)
    results = {"parameters": count, "batch": args.batch, "solver": "dpm++2m", "steps": {}}

    @jax.jit
    def network_calls(x, count_array):
        return jax.lax.scan(lambda x, _: (0.5 * (x + network(x, t)), None), x, count_array)[0]

    for steps in STEPS:
        jax.clear_caches()
        sampler = jax.jit(lambda noise, steps=steps: sx.sample(model, "dpm++2m", noise, steps=steps)[0])
        start = time.perf_counter()
        compiled = sampler.lower(noise).compile()
        compile_s = time.perf_counter() - start
        memory = compiled.memory_analysis()
        count_array = jnp.zeros((steps,))
        network_calls(noise, count_array).block_until_ready()
        compiled(noise).block_until_ready()
        limit = best_of(args.repeats, network_calls, noise, count_array)
        wall = best_of(args.repeats, compiled, noise)
        results["steps"][str(steps)] = {
            "network_call_ms": 1e3 * limit / steps, "sample_s": wall, "overhead": wall / limit,
            "compile_s": compile_s,
            "peak_bytes": memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes,
        }
        print(steps, results["steps"][str(steps)], flush=True)
    results["compile_ratio_50_to_10"] = results["steps"]["50"]["compile_s"] / results["steps"]["10"]["compile_s"]

    big = jax.random.normal(jax.random.key(1), (args.throughput_batch, 32, 32, 3))
    sampler = jax.jit(lambda noise: sx.sample(model, "dpm++2m", noise, steps=10)[0])
    sampler(big).block_until_ready()
    results["images_per_second_at_10_steps"] = args.throughput_batch / best_of(1, sampler, big)
    results["throughput_batch"] = args.throughput_batch

    reference = jax.jit(lambda noise: sx.sample(model, "dpm++2m", noise, steps=10)[0])(noise)
    half_model, half_network, _ = cifar_denoiser(jnp.bfloat16)
    half_sampler = jax.jit(lambda noise: sx.sample(half_model, "dpm++2m", noise, steps=10)[0])
    half = half_sampler(noise)
    call = jax.jit(network)
    half_call = jax.jit(half_network)
    results["bfloat16"] = {
        "sample_relative_rms_error": float(jnp.sqrt(jnp.mean((half - reference) ** 2) / jnp.mean(reference**2))),
        "network_relative_rms_error": float(jnp.sqrt(jnp.mean((half_call(noise, t) - call(noise, t)) ** 2)
                                                     / jnp.mean(call(noise, t) ** 2))),
        "sample_s_at_10_steps": best_of(args.repeats, half_sampler, noise),
        "float32_sample_s_at_10_steps": results["steps"]["10"]["sample_s"],
    }
    results["machine"] = (f"{platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
                          f"{jax.devices()[0].device_kind}")
    print(results, flush=True)
    write_json(args.out, results)


if __name__ == "__main__":
    main()
