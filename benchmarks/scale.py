"""Sampling at real scale, with random weights: diffusers' UNet2DModel in the
configuration of google/ddpm-cifar10-32 (35.7M parameters, 32x32x3 images) and a
DiT-S/2 (Peebles and Xie 2023: width 384, 12 blocks, 6 heads, patches of 2, on a 32x32x4
latent, learned sigma, 1000 classes), both the NNX conversions of samplax.models.

    python benchmarks/scale.py [--networks cifar-unet dit-s-2] [--batch 8] [--throughput-batch 64] [--repeats 2]
                               [--overhead-only] [--out FILE]

Measures, for each network and dpm++2m at 10 and 50 steps: one network call; the sampler's overhead over
the physical limit (a jitted lax.scan of NFE network calls at NFE different times, each
fed the mean of the last input and output, so that none can be elided and the values
stay bounded: the network's own cost with no solver arithmetic), and the solver's own
arithmetic per step measured with a free network (the overhead it implies is
1 + arithmetic / call, a difference far above the machine's noise); compile time; images per second at
the throughput batch; peak memory of the compiled sampler (XLA's buffer assignment); and
the network in bfloat16 (weights in float32): its time and the error it adds to a
10-step sample against float32; and on the exact Gaussian mixture, the error of samples
from a bfloat16 network against the exact flow map, beside a float32 network's. Writes
benchmarks/results/scale.json. Time it on an otherwise idle machine.
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
from samplax.models.diffusers_dit import DiTConfig, DiTTransformer2DModel  # noqa: E402
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
DIT_S_2 = DiTConfig(num_attention_heads=6, attention_head_dim=64, in_channels=4, out_channels=8, num_layers=12,
                    sample_size=32, patch_size=2, num_embeds_ada_norm=1000)
NETWORKS = {"cifar-unet": (UNet2DModel, CIFAR_UNET), "dit-s-2": (DiTTransformer2DModel, DIT_S_2)}
STEPS = (10, 50)


def denoiser(name, dtype=None):
    """The network with random weights (the same weights for every dtype) as a Denoiser of
    the DDPM schedule (the DiT conditioned on class 0), its pure function with the
    condition bound, and its parameter count."""
    module_class, config = NETWORKS[name]
    module = module_class(config, dtype=dtype, rngs=nnx.Rngs(0))
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(nnx.state(module, nnx.Param)))
    network = network_function(module)
    condition = {"label": jnp.int32(0)} if config.classes else {}
    model = sx.Denoiser(network, sx.schedules.VPDiscrete.ddpm_linear(), "noise", "discrete", condition=condition)
    return model, jax.tree_util.Partial(network, **condition), count, config.sample_shape


def best_of(repeats, function, *args):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def free_network_ms_per_step(model, noise, steps, repeats=20):
    """The sampler's own arithmetic per step on these shapes: dpm++2m with a network that
    costs nothing (x / 2) minus the same scan of x / 2 alone, best of `repeats`. Unlike
    the ratio to the limit, this difference is far above the machine's noise."""
    free = sx.Denoiser(lambda x, t: 0.5 * x, model.schedule, "noise", "discrete")
    sampler = jax.jit(lambda noise: sx.sample(free, "dpm++2m", noise, steps=steps)[0])
    limit = jax.jit(lambda x, times: jax.lax.scan(lambda x, time: (0.5 * (x + 0.5 * x), None), x, times)[0])
    times = jnp.linspace(999.0, 0.0, steps)
    sampler(noise).block_until_ready()
    limit(noise, times).block_until_ready()
    return 1e3 * (best_of(repeats, sampler, noise) - best_of(repeats, limit, noise, times)) / steps


def measure(name, batch, throughput_batch, repeats, overhead_only=False):
    """The measurements of one network (see the module docstring)."""
    model, network, count, shape = denoiser(name)
    noise = jax.random.normal(jax.random.key(0), (batch, *shape))
    t = jnp.full((batch,), 499.0)  # for the single calls of the bfloat16 comparison
    results = {"parameters": count, "batch": batch, "solver": "dpm++2m", "steps": {}}

    @jax.jit
    def network_calls(x, times):
        # One call per grid time, so that the time conditioning is computed at every call as
        # in the sampler (a fixed t would let XLA hoist it out of the loop).
        def call(x, time):
            return 0.5 * (x + network(x, jnp.broadcast_to(time, (batch,)))), None

        return jax.lax.scan(call, x, times)[0]

    for steps in STEPS:
        jax.clear_caches()
        sampler = jax.jit(lambda noise, steps=steps: sx.sample(model, "dpm++2m", noise, steps=steps)[0])
        start = time.perf_counter()
        compiled = sampler.lower(noise).compile()
        compile_s = time.perf_counter() - start
        memory = compiled.memory_analysis()
        times = jnp.linspace(999.0, 0.0, steps)
        network_calls(noise, times).block_until_ready()
        compiled(noise).block_until_ready()
        # Alternately, so that a slow spell of the machine hits both.
        pairs = [(best_of(1, network_calls, noise, times), best_of(1, compiled, noise)) for _ in range(repeats)]
        limit, wall = min(pair[0] for pair in pairs), min(pair[1] for pair in pairs)
        arithmetic_ms = free_network_ms_per_step(model, noise, steps)
        results["steps"][str(steps)] = {
            "network_call_ms": 1e3 * limit / steps, "sample_s": wall, "overhead": wall / limit,
            "solver_arithmetic_ms_per_step": arithmetic_ms,
            "overhead_from_arithmetic": 1.0 + arithmetic_ms / (1e3 * limit / steps),
            "compile_s": compile_s,
            "peak_bytes": memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes,
        }
        print(name, steps, results["steps"][str(steps)], flush=True)
    results["compile_ratio_50_to_10"] = results["steps"]["50"]["compile_s"] / results["steps"]["10"]["compile_s"]
    if overhead_only:
        return results

    big = jax.random.normal(jax.random.key(1), (throughput_batch, *shape))
    sampler = jax.jit(lambda noise: sx.sample(model, "dpm++2m", noise, steps=10)[0])
    sampler(big).block_until_ready()
    results["images_per_second_at_10_steps"] = throughput_batch / best_of(1, sampler, big)
    results["throughput_batch"] = throughput_batch

    reference = jax.jit(lambda noise: sx.sample(model, "dpm++2m", noise, steps=10)[0])(noise)
    half_model, half_network, _, _ = denoiser(name, jnp.bfloat16)
    half_sampler = jax.jit(lambda noise: sx.sample(half_model, "dpm++2m", noise, steps=10)[0])
    half = half_sampler(noise)
    full_output, half_output = jax.jit(network)(noise, t), jax.jit(half_network)(noise, t)
    results["bfloat16"] = {
        "sample_relative_rms_error": float(jnp.sqrt(jnp.mean((half - reference) ** 2) / jnp.mean(reference**2))),
        "network_relative_rms_error": float(jnp.sqrt(jnp.mean((half_output - full_output) ** 2)
                                                     / jnp.mean(full_output**2))),
        "sample_s_at_10_steps": best_of(repeats, half_sampler, noise),
        "float32_sample_s_at_10_steps": results["steps"]["10"]["sample_s"],
    }
    print(name, results, flush=True)
    return results


def mixture_precision(samples=512, steps=(10, 20, 50)):
    """The error a bfloat16 network adds on the exact problem: a 16-D, 4-component
    mixture under VPLinear whose exact noise prediction is computed in float32 or in
    bfloat16 (parameters, inputs and arithmetic), sampled by dpm++2m (state in float32),
    against the exact flow map (float64). RMS error per step count."""
    mixture = sx.GaussianMixture.random(0, 16, 4)
    schedule = sx.schedules.VPLinear()
    t_end = 1e-3
    noise = jax.random.normal(jax.random.key(0), (samples, 16))
    with jax.enable_x64(True):
        x64 = sx.GaussianMixture(*(np.asarray(a, np.float64) for a in (mixture.means, mixture.stds, mixture.weights)))
        exact = np.asarray(x64.flow_map(np.asarray(noise, np.float64), schedule, 1.0, t_end))
    half = sx.GaussianMixture(*(jnp.asarray(a, jnp.bfloat16) for a in (mixture.means, mixture.stds, mixture.weights)))

    def half_network(x, t):
        alpha, sigma = schedule.alpha(t).astype(jnp.bfloat16), schedule.sigma(t).astype(jnp.bfloat16)
        return half.posterior_means(x.astype(jnp.bfloat16), alpha, sigma)[1].astype(x.dtype)

    models = {"float32": mixture.denoiser(schedule, "noise"),
              "bfloat16": sx.Denoiser(half_network, schedule, "noise", sample_shape=(16,))}
    errors = {}
    for name, model in models.items():
        for count in steps:
            x, _ = sx.sample(model, "dpm++2m", noise, steps=count, t_end=t_end, denoise_to_zero=False)
            errors[f"{name} steps={count}"] = float(np.sqrt(np.mean((np.asarray(x, np.float64) - exact) ** 2)))
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="+", choices=tuple(NETWORKS), default=list(NETWORKS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--throughput-batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--overhead-only", action="store_true",
                        help="only the call time, overhead, compile time and memory (no throughput or bfloat16)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "scale.json"))
    args = parser.parse_args()
    results = {} if args.overhead_only else {"mixture_bfloat16_rms_error": mixture_precision()}
    print(results, flush=True)
    results.update({name: measure(name, args.batch, args.throughput_batch, args.repeats, args.overhead_only)
                    for name in args.networks})
    results["machine"] = (f"{platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
                          f"{jax.devices()[0].device_kind}")
    write_json(args.out, results)


if __name__ == "__main__":
    main()
