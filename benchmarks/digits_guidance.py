"""Guidance rules on the shipped class-conditional digits models, at several guidance scales.

    python benchmarks/digits_guidance.py [--per-class 40] [--scales 2 3 5]
                                         [--out benchmarks/results/digits_guidance.json]

For digits-diffusion (DPM-Solver++ 2M, 10 steps) and digits-flow (Euler, 20 steps), each
on its schedule's default grid, the same class-conditional samples (seeds 0 to
10 per_class - 1, label = seed mod 10, noise fold_in(PRNGKey(0), seed) as in
digits_quality.py) are drawn without guidance (scale 1) and, at each scale, with:
plain classifier-free guidance (`sx.CFG()`); guidance rescale 0.7 (`sx.CFG(rescale=0.7)`,
Lin et al. 2024's value, in the network's output space); adaptive projected guidance with
no parallel part (`sx.APG(parallel=0)`, Sadat et al. 2025, in data space), without a norm
cap and with cap r = 1 (APG_NORM_THRESHOLD); and plain guidance limited to noise levels
sigma / alpha in [0.28, 5.42] (GUIDANCE_INTERVAL, Kynkaanniemi et al. 2024's interval for
EDM2-XXL). Measured: the shipped classifier's label accuracy (the class asked for against
its prediction), its mean confidence, the Frechet distance of its features to the 360
held-out test digits (samplax.metrics), the NFE (`info.nfe`, solver stages) and the network
evaluations per sample (one per stage, plus one unconditional evaluation per stage where
the rule guides). The norm of the data-space update c - u on noised test digits, which
r is chosen against, is measured first. Rows print as they are made; JSON goes to --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from problems import markdown_table, write_json  # noqa: E402

import samplax as sx  # noqa: E402
from samplax import metrics  # noqa: E402
from samplax.models import data, pretrained  # noqa: E402

MODELS = {"digits-diffusion": ("dpm++2m", 10), "digits-flow": ("euler", 20)}
# The cap on |c - u| (data space, whole 8x8 image): about the update's median norm in the
# middle of the noise range (sigma / alpha = 1: 1.0-1.1), so it shortens the high-noise
# updates (medians 2.6-2.9 at sigma / alpha 5-30) and leaves the low-noise ones (0.2 at
# 0.3) alone; see update_norms().
APG_NORM_THRESHOLD = 1.0
GUIDANCE_INTERVAL = (0.28, 5.42)
RULES = {
    "CFG": sx.CFG(),
    "CFG rescale 0.7": sx.CFG(rescale=0.7),
    "APG eta 0, no cap": sx.APG(parallel=0.0),
    f"APG eta 0, r {APG_NORM_THRESHOLD:g}": sx.APG(parallel=0.0, norm_threshold=APG_NORM_THRESHOLD),
    f"CFG on sigma/alpha in [{GUIDANCE_INTERVAL[0]}, {GUIDANCE_INTERVAL[1]}]": sx.CFG(interval=GUIDANCE_INTERVAL),
}
NORM_LEVELS = (30.0, 5.0, 1.0, 0.3, 0.1)  # sigma / alpha


def update_norms(model_name: str) -> dict:
    """Median per-image norm of the data-space guidance update c - u (conditional minus
    unconditional data prediction) on the test digits noised to each level of NORM_LEVELS,
    conditioned on their true labels."""
    test = data.digits("test")
    images, labels = jnp.asarray(test.images), jnp.asarray(test.labels)
    conditional = pretrained.denoiser(model_name, labels=labels)
    unconditional = pretrained.denoiser(model_name, labels=jnp.full_like(labels, conditional.classes))
    schedule = conditional.schedule
    noise = jax.random.normal(jax.random.key(0), images.shape)
    norms = {}
    for level in NORM_LEVELS:
        t = schedule.inverse_lambda(-np.log(level))
        x = schedule.alpha(t) * images + schedule.sigma(t) * noise
        update = conditional.data(x, t) - unconditional.data(x, t)
        norms[f"{level:g}"] = float(jnp.median(jnp.sqrt(jnp.sum(update**2, axis=(1, 2, 3)))))
    return norms


def draw(model_name: str, rule: sx.Guidance | None, scale: float, samples: int):
    """Class-conditional samples with the model's solver, guided by `rule` at `scale` (None:
    unguided): (images, labels, nfe, network evaluations per sample)."""
    solver, steps = MODELS[model_name]
    seeds = jnp.arange(samples)
    noise = jax.vmap(lambda s: jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(0), s), (8, 8, 1)))(seeds)
    labels = np.asarray(seeds) % 10
    model = pretrained.denoiser(model_name, labels=labels, guidance_scale=1.0 if rule is None else scale)
    if rule is not None:
        model = dataclasses.replace(model, guidance=rule)
    images, info = sx.sample(model, solver, noise, steps=steps)
    # Both solvers evaluate once per step, at its start: the stages are the grid but its end.
    stages = info.times[:-1]
    guided = 0 if rule is None else int(np.sum(rule.active(model.schedule.alpha(stages), model.schedule.sigma(stages))))
    return np.asarray(images), labels, int(info.nfe), int(info.nfe) + guided


def measure(model_name: str, rule_name: str, scale: float, samples: int) -> dict:
    """One row: the samples of `rule_name` (a key of RULES, or "none" for scale 1) and their metrics."""
    started = time.perf_counter()
    images, labels, nfe, evaluations = draw(model_name, RULES.get(rule_name), scale, samples)
    row = {"model": model_name, "rule": rule_name, "scale": scale, "nfe": nfe, "network_evaluations": evaluations,
           "accuracy": metrics.label_accuracy(images, labels),
           "confidence": float(np.mean(metrics.classifier_confidence(images))),
           "frechet_distance": metrics.digits_frechet_distance(images),
           "seconds_with_compile": round(time.perf_counter() - started, 1)}
    print(f"{model_name:16s} {rule_name:34s} scale {scale:g} accuracy {100 * row['accuracy']:5.1f}% "
          f"confidence {row['confidence']:.3f} FD {row['frechet_distance']:6.2f} NFE {nfe} "
          f"evaluations {evaluations} ({row['seconds_with_compile']} s)", flush=True)
    return row


def reference(samples: int) -> dict:
    """The same metrics on real training digits (the floor the samples are compared with)."""
    train = data.digits("train")
    images, labels = train.images[:samples], train.labels[:samples]
    return {"accuracy": metrics.label_accuracy(images, labels),
            "confidence": float(np.mean(metrics.classifier_confidence(images))),
            "frechet_distance": metrics.digits_frechet_distance(images)}


def markdown(result: dict) -> str:
    rows = [[row["model"], row["rule"], f"{row['scale']:g}", f"{100 * row['accuracy']:.1f}",
             f"{row['confidence']:.3f}", f"{row['frechet_distance']:.2f}", f"{row['nfe']}",
             f"{row['network_evaluations']}"] for row in result["rows"]]
    ref = result["train_digits"]
    rows.append(["train digits", "(real data)", "", f"{100 * ref['accuracy']:.1f}", f"{ref['confidence']:.3f}",
                 f"{ref['frechet_distance']:.2f}", "", ""])
    return "\n".join(markdown_table(
        ["model", "rule", "scale", "accuracy %", "confidence", "Frechet distance", "NFE", "network evals"], rows,
        align=["---", "---", "---:", "---:", "---:", "---:", "---:", "---:"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-class", type=int, default=40, help="samples per digit class (default: %(default)s)")
    p.add_argument("--scales", type=float, nargs="+", default=[2.0, 3.0, 5.0],
                   help="guidance scales besides 1 (default: %(default)s)")
    p.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parent / "results" / "digits_guidance.json"))
    args = p.parse_args()
    samples = 10 * args.per_class
    norms = {}
    for model_name in MODELS:
        norms[model_name] = update_norms(model_name)
        print(f"{model_name}: median |c - u| (data space) at sigma/alpha {norms[model_name]}", flush=True)
    rows = []
    for model_name in MODELS:
        rows.append(measure(model_name, "none", 1.0, samples))
        for scale in args.scales:
            rows.extend(measure(model_name, rule_name, scale, samples) for rule_name in RULES)
    result = {
        "samples": samples,
        "solvers": {name: {"solver": solver, "steps": steps} for name, (solver, steps) in MODELS.items()},
        "apg_norm_threshold": APG_NORM_THRESHOLD,
        "guidance_interval": GUIDANCE_INTERVAL,
        "update_norms": norms,
        "rows": rows,
        "train_digits": reference(samples),
        "machine": {"platform": platform.platform(), "devices": [str(d) for d in jax.devices()],
                    "note": "2 CPU cores shared with other jobs"},
        "versions": {"jax": jax.__version__, "samplax": sx.__version__},
    }
    write_json(args.out, result, indent=2)
    print(markdown(result))


if __name__ == "__main__":
    main()
