"""Sample quality against NFE for the shipped digits models, and CPU throughput.

For each model and solver, draws the same class-conditional samples (label = index mod
10, noise from each sample's seed as in the command line) at several budgets of model
evaluations (NFE), and measures the label accuracy under the shipped classifier and the
Frechet distance in its feature space to the 360 held-out test digits (samplax.metrics).
Throughput is images per second of a second (compiled) call for one batch.

    python benchmarks/digits_quality.py                 # writes benchmarks/results/digits_quality.json
    python benchmarks/digits_quality.py --samples 200   # quicker, noisier

and prints the markdown table of benchmarks/DIGITS_RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
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

import samplax  # noqa: E402
from samplax import metrics  # noqa: E402
from samplax.cli import default_solver  # noqa: E402
from samplax.cli.sampling import SOLVER_NOISE_SEED  # noqa: E402
from samplax.models import data, pretrained  # noqa: E402

# solver -> NFE budgets; the first solver of each model also gets the 100-NFE reference.
SOLVERS = {
    "digits-diffusion": {
        "dpm++2m": (5, 10, 20, 100), "dpm++3m": (10, 20), "unipc-bh2-2": (10, 20), "ddim": (10, 20),
        # stochastic: noise keys per seed as in the command line
        "ddpm": (10, 20, 50), "dpm++2m-sde": (10, 20, 50), "dpm++3m-sde": (10, 20, 50), "sa-solver-3": (10, 20, 50),
        "edm-churn": (10, 20, 50),
    },
    "digits-flow": {"euler": (5, 10, 20, 100), "heun": (10, 20), "midpoint": (10, 20), "rf-solver-2": (10, 20)},
    "digits-flow-attention": {"euler": (5, 10, 20, 100), "heun": (10, 20), "rf-solver-2": (10, 20)},
}
ROOT = pathlib.Path(__file__).resolve().parent


def draw_digits(model_name, solver_name, steps, samples, guidance, seed_offset=0, grid=None):
    """Class-conditional samples (label = seed mod 10, noise from each seed) on the
    schedule's default grid, or on `grid` (a kind or an array of times); returns
    (images, labels, nfe)."""
    seeds = jnp.arange(samples) + seed_offset
    base = jax.random.PRNGKey(0)
    noise = jax.vmap(lambda s: jax.random.normal(jax.random.fold_in(base, s), (8, 8, 1)))(seeds)
    labels = np.asarray(seeds) % 10
    model = pretrained.denoiser(model_name, labels=labels, guidance_scale=guidance)
    options = {}
    if samplax.solvers.get(solver_name).stochastic:
        options["key"] = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(SOLVER_NOISE_SEED), s))(seeds)
    if grid is not None and not isinstance(grid, str):  # an array of times sets the steps
        steps = None
    images, info = samplax.sample(model, solver_name, noise, steps=steps, grid=grid, **options)
    return np.asarray(images), labels, int(info.nfe)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--models", default=",".join(SOLVERS))
    p.add_argument("--solvers", default=None, help="comma-separated: only these solvers (default: all of the model)")
    p.add_argument("--out", default=str(ROOT / "results" / "digits_quality.json"))
    args = p.parse_args()
    rows = []
    for model_name in args.models.split(","):
        for solver_name, nfes in SOLVERS[model_name].items():
            if args.solvers and solver_name not in args.solvers.split(","):
                continue
            solver = samplax.solvers.get(solver_name)
            for target in nfes:
                steps = solver.steps_for(target)
                if steps is None:  # no number of steps spends exactly `target` evaluations
                    continue
                started = time.perf_counter()
                try:
                    images, labels, nfe = draw_digits(model_name, solver_name, steps, args.samples, args.guidance)
                except (FloatingPointError, ValueError) as error:
                    rows.append(
                        {"model": model_name, "solver": solver_name, "steps": steps, "nfe": target, "error": str(error)}
                    )
                    continue
                row = {
                    "model": model_name,
                    "solver": solver_name,
                    "steps": steps,
                    "nfe": nfe,
                    "accuracy": metrics.label_accuracy(images, labels),
                    "frechet": metrics.digits_frechet_distance(images),
                    "seconds_with_compile": round(time.perf_counter() - started, 2),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)

    # Throughput: the same batch, second call (compiled), the command line's solver at 10 NFE.
    throughput = {}
    for model_name in args.models.split(","):
        solver_name = default_solver(pretrained.load(model_name)[1]["schedule"])
        draw_digits(model_name, solver_name, 10, args.samples, args.guidance)
        started = time.perf_counter()
        images, _, _ = draw_digits(model_name, solver_name, 10, args.samples, args.guidance)
        seconds = time.perf_counter() - started
        throughput[model_name] = {"batch": args.samples, "solver": solver_name, "nfe": 10, "guidance": args.guidance,
                                  "seconds": round(seconds, 3), "images_per_s": round(args.samples / seconds, 1)}
        print(json.dumps({"throughput": model_name, **throughput[model_name]}), flush=True)

    reference = metrics.digits_frechet_distance(data.digits("train").images[: args.samples])
    result = {
        "samples": args.samples,
        "guidance": args.guidance,
        "rows": rows,
        "throughput": throughput,
        "frechet_train_digits_vs_test": reference,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "devices": [str(d) for d in jax.devices()],
            "note": "2 CPU cores shared with other jobs; timings are noisy",
        },
        "versions": {"jax": jax.__version__, "samplax": samplax.__version__},
    }
    write_json(args.out, result, indent=2)
    print(markdown(result))


def markdown(result: dict) -> str:
    rows = []
    for row in result["rows"]:
        if "error" in row:
            cells = ["failed", row["error"][:40]]
        else:
            cells = [f"{100 * row['accuracy']:.1f}", f"{row['frechet']:.2f}"]
        rows.append([row["model"], row["solver"], f"{row['nfe']}", f"{row['steps']}"] + cells)
    throughput = [
        [name, f"{t['batch']}", f"{t['solver']}, {t['nfe']} (x2 passes with guidance)", f"{t['images_per_s']}"]
        for name, t in result["throughput"].items()
    ]
    return "\n".join([
        f"Label accuracy (%) / Frechet distance to held-out digits, {result['samples']} samples, "
        f"guidance {result['guidance']}, labels cycling 0-9 (train digits vs test: FD "
        f"{result['frechet_train_digits_vs_test']:.2f}).",
        "",
        *markdown_table(["model", "solver", "NFE", "steps", "accuracy %", "Frechet distance"], rows,
                        align=["---", "---", "---:", "---:", "---:", "---:"]),
        "",
        *markdown_table(["model", "batch", "solver, NFE", "images/s (CPU)"], throughput,
                        align=["---", "---:", "---", "---:"]),
    ])


if __name__ == "__main__":
    main()
