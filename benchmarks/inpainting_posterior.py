"""Inpainting against the exact posterior: a Gaussian mixture whose posterior given part
of a sample is again a Gaussian mixture (`GaussianMixture.posterior`), so the distance of
each sampler's inpaintings to exact posterior samples is measured, against NFE: `inpaint`
(replacement, RePaint) for a noiseless observation, and posterior guidance (DPS, and the
variance-inflated Gaussian likelihood) for a noisy one (noise std 0.05).

    python benchmarks/inpainting_posterior.py [--samples 4096] [--out benchmarks/results/inpainting_posterior.json]

The problem: a 4-D mixture of 4 components (stds 0.15-0.3, seed 3) under VPLinear; the
first two coordinates of one draw are known, the last two sampled. The distance is the
sliced 2-Wasserstein distance (samplax.metrics.sliced_wasserstein) between the sampled
coordinates and as many exact posterior draws; its floor is that distance between two
independent sets of exact draws.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import problems  # noqa: E402

import samplax as sx  # noqa: E402
from samplax.metrics import sliced_wasserstein  # noqa: E402

STEPS = (10, 25, 50, 100)
# (label, solver, resample, jump)
NOISE_STD = 0.05
# (label, solver, inflate) of posterior guidance for the noisy observation.
GUIDED = (
    ("DPS (inflate=0), dpm++2m", "dpm++2m", 0.0),
    ("DPS (inflate=0), ddpm", "ddpm", 0.0),
    ("inflated (inflate=1), dpm++2m", "dpm++2m", 1.0),
    ("inflated (inflate=1), ddpm", "ddpm", 1.0),
)
METHODS = (
    ("replacement, dpm++2m", "dpm++2m", 1, 1),
    ("replacement, ddpm", "ddpm", 1, 1),
    ("RePaint r=4 j=2, ddpm", "ddpm", 4, 2),
    ("RePaint r=8 j=2, ddpm", "ddpm", 8, 2),
)


def inpainting_problem(samples: int):
    """(mixture, schedule, image batch, mask, known coordinates, exact posterior draws,
    a second independent set of them)."""
    mixture = sx.GaussianMixture.random(3, 4, 4, std_range=(0.15, 0.3))
    observed = mixture.sample(jax.random.key(1), 1)[0]
    known = np.array([True, True, False, False])
    posterior = mixture.posterior(observed, known)
    image = jnp.broadcast_to(observed, (samples, 4))
    return (mixture, sx.schedules.VPLinear(), image, jnp.asarray(known, image.dtype), known,
            posterior.sample(jax.random.key(9), samples), posterior.sample(jax.random.key(10), samples))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--out", default="benchmarks/results/inpainting_posterior.json")
    args = parser.parse_args()
    mixture, schedule, image, mask, known, exact, exact_again = inpainting_problem(args.samples)
    model = mixture.denoiser(schedule, "noise")
    floor = sliced_wasserstein(exact, exact_again)
    rows = []
    for label, solver, resample, jump in METHODS:
        for steps in STEPS:
            began = time.perf_counter()
            samples, info = sx.inpaint(model, solver, image, mask, key=jax.random.key(2), steps=steps,
                                       resample=resample, jump=jump, denoise_to_zero=True)
            distance = sliced_wasserstein(np.asarray(samples)[:, ~known], exact)
            rows.append({"method": label, "steps": steps, "nfe": int(info.nfe), "distance": distance,
                         "seconds": time.perf_counter() - began})
            print(f"{label:24s} steps {steps:4d} nfe {int(info.nfe):5d} distance {distance:.4f}", flush=True)
    observed = image * mask + NOISE_STD * jax.random.normal(jax.random.key(7), image.shape[1:]) * mask
    noisy_exact = mixture.posterior(observed[0], known, noise_std=NOISE_STD).sample(jax.random.key(11), args.samples)
    guided_rows = []
    for label, solver, inflate in GUIDED:
        guided = sx.posterior_guidance(
            model, sx.gaussian_observation(jax.tree_util.Partial(jnp.multiply, mask), observed, NOISE_STD, inflate))
        for steps in STEPS:
            options = {"key": jax.random.key(3)} if sx.solvers.get(solver).stochastic else {}
            began = time.perf_counter()
            samples, info = sx.sample(guided, solver, jax.random.normal(jax.random.key(2), image.shape), steps=steps,
                                      denoise_to_zero=True, **options)
            distance = sliced_wasserstein(np.asarray(samples)[:, ~known], noisy_exact)
            guided_rows.append({"method": label, "steps": steps, "nfe": int(info.nfe), "distance": distance,
                                "seconds": time.perf_counter() - began})
            print(f"{label:32s} steps {steps:4d} nfe {int(info.nfe):5d} distance {distance:.4g}", flush=True)
    payload = {"samples": args.samples, "floor": floor, "posterior_weights": np.asarray(
        mixture.posterior(image[0], known).weights).tolist(), "rows": rows, "noise_std": NOISE_STD,
        "guided_rows": guided_rows}
    problems.write_json(args.out, payload)

    def table(results, labels):
        return problems.markdown_table(
            ["method"] + [f"{steps} steps" for steps in STEPS],
            [[label] + [f"{row['distance']:.3g} ({row['nfe']})" for row in results if row["method"] == label]
             for label in labels],
            ["---"] + ["---:"] * len(STEPS),
        )

    text = "\n".join([
        f"Sliced W2 to the exact posterior (NFE in brackets); floor (two exact sets of {args.samples}): "
        f"{floor:.3f}.", "", "Noiseless observation, `inpaint`:", "", *table(rows, [m[0] for m in METHODS]), "",
        f"Observation with noise std {NOISE_STD}, `posterior_guidance(gaussian_observation(...))`:", "",
        *table(guided_rows, [m[0] for m in GUIDED]), ""])
    problems.write_text(pathlib.Path(args.out).with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
