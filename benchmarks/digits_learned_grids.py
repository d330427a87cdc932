"""Learned time grids on the shipped digits diffusion model: how long a fit with
`samplax.tune_grid`'s defaults takes on this machine, and the sample quality on the
learned grid against the schedule's default grid at NFE 5-8.

The fit uses tune_grid's defaults (a pool of 2048 noises, a quarter for validation,
mini-batches of 128, 300 Adam steps from the schedule's default grid) on the model as it
samples: class-conditional with guidance 2, labels cycling 0-9 (one per pool noise).
Quality is measured as in benchmarks/digits_quality.py (same noise seeds and labels):
label accuracy under the shipped classifier and Frechet distance to the 360 held-out test
digits, for samples drawn from noise the fit never saw.

    python benchmarks/digits_learned_grids.py       # writes benchmarks/results/digits_learned_grids.json
    python benchmarks/digits_learned_grids.py --nfes 6 8   # adds rows to it

A fit takes about 15 minutes on a quiet 2-core CPU (the 200-step reference solves of the
2048 pool noises and 300 gradient steps through the guided UNet), so the results file is
written after every row, and rows already in it are kept (delete it to start afresh).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import pathlib
import platform
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from digits_quality import draw_digits  # noqa: E402
from problems import markdown_table, write_json  # noqa: E402

import samplax  # noqa: E402
from samplax import metrics  # noqa: E402
from samplax.models import pretrained  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent
MODEL = "digits-diffusion"
IMAGE_SHAPE = (8, 8, 1)
FIT_SEED = 2024  # the quality samples use seeds 0.. of benchmarks/digits_quality.py


POOL = inspect.signature(samplax.tune_grid).parameters["samples"].default  # tune_grid's default pool


def fit(solver, steps, guidance):
    """tune_grid with its defaults on the guided class-conditional model; (times, info, seconds)."""
    model = pretrained.denoiser(MODEL, labels=jnp.arange(POOL) % 10, guidance_scale=guidance)
    started = time.perf_counter()
    times, info = samplax.tune_grid(model, solver, steps, jax.random.PRNGKey(FIT_SEED), shape=IMAGE_SHAPE,
                                    denoise_to_zero=False)
    jax.block_until_ready(times)
    return times, info, time.perf_counter() - started


def quality(solver, steps, grid, samples, guidance):
    images, labels, nfe = draw_digits(MODEL, solver, steps, samples, guidance, grid=grid)
    return {"nfe": nfe, "accuracy": metrics.label_accuracy(images, labels),
            "frechet": metrics.digits_frechet_distance(images)}


def markdown(result):
    rows = []
    for row in result["rows"]:
        default, learned = row["default_grid"], row["learned_grid"]
        rows.append([row["solver"], f"{row['nfe']}", f"{default['frechet']:.2f}", f"{learned['frechet']:.2f}",
                     f"{100 * default['accuracy']:.1f}", f"{100 * learned['accuracy']:.1f}",
                     f"{row['training_rms']:.3f}", f"{row['validation_rms']:.3f}", f"{row['fit_seconds']:.0f}"])
    return "\n".join([
        f"{result['samples']} samples of {MODEL}, guidance {result['guidance']}, labels cycling 0-9; Frechet distance "
        "(FD) to the held-out test digits and label accuracy (%), default grid vs learned grid. Training and "
        "validation RMS of the fit (distance to a 200-step solve), fit time with tune_grid's defaults.",
        "",
        *markdown_table(["solver", "NFE", "FD default", "FD learned", "accuracy default", "accuracy learned",
                         "training RMS", "validation RMS", "fit s"], rows,
                        align=["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--solvers", nargs="+", default=["dpm++2m"])
    parser.add_argument("--nfes", nargs="+", type=int, default=[5, 6, 7, 8])
    parser.add_argument("--samples", type=int, default=500, help="samples for the quality measures")
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--out", default=str(ROOT / "results" / "digits_learned_grids.json"))
    args = parser.parse_args()
    rows = json.loads(pathlib.Path(args.out).read_text())["rows"] if os.path.exists(args.out) else []
    result = {
        "command": "python benchmarks/" + " ".join([os.path.basename(__file__)] + sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__} ({jax.default_backend()})",
        "samples": args.samples, "guidance": args.guidance, "rows": rows,
    }
    for solver in args.solvers:
        for nfe in args.nfes:
            if any((row["solver"], row["nfe"]) == (solver, nfe) for row in rows):
                continue
            steps = samplax.solvers.get(solver).steps_for(nfe)
            times, info, seconds = fit(solver, steps, args.guidance)
            row = {
                "solver": solver, "nfe": nfe, "steps": steps, "times": [float(t) for t in times],
                "training_rms": float(info.training_rms), "validation_rms": float(info.validation_rms),
                "fit_seconds": seconds,
                "default_grid": quality(solver, steps, None, args.samples, args.guidance),
                "learned_grid": quality(solver, steps, times, args.samples, args.guidance),
            }
            rows.append(row)
            print(row, flush=True)
            write_json(args.out, result, indent=2)
    print(markdown(result))


if __name__ == "__main__":
    main()
