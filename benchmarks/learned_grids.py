"""Learned time grids on the shared benchmark problem: fit a grid per solver and NFE on
training noise, measure the error on the benchmark's held-out noise.

    python benchmarks/learned_grids.py                      # default solvers and NFEs
    python benchmarks/learned_grids.py --nfes 5 6 --solvers dpm++3m-taylor unipc-bh1-3

Every run ends with the denoising step (denoise_to_zero=True), so NFE = steps + 1 and the
error is the RMS distance to the exact ODE endpoint at sigma = 0 (benchmarks/problems.py).
Grids are fitted with `samplax.tune_grid` on noise drawn from a different seed than the
held-out noise, against a high-accuracy solve of the model (not the exact reference). For
each NFE the reported "best learned" solver is the one with the lowest *training* loss, so
the held-out noise plays no part in any choice. When the peer results of
benchmarks/dpm_benchmark.py --peers exist (benchmarks/results/dpm_benchmark.json), the best
peer configuration per NFE is put side by side.

Writes benchmarks/results/learned_grids.json and benchmarks/LEARNED_GRIDS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import samplax as sx  # noqa: E402
from problems import diffusion_problem, rms_error  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SOLVERS = ("dpm++2m", "dpm++3m-taylor", "unipc-bh1-3", "deis-tab3")
DEFAULT_NFES = (5, 6, 8, 10, 15, 20)
BASELINE_GRIDS = ("logsnr", "karras", "uniform", "quadratic")
TRAINING_SEED = 2024  # the held-out noise of problems.py uses seed 1


def held_out_error(model, solver, noise, reference, grid, steps=None):
    x, info = sx.sample(model, solver, noise, steps=steps, grid=grid, denoise_to_zero=True)
    return rms_error(x, reference), int(info.nfe)


def fit(model, solver, nfe, args, shape):
    start = time.perf_counter()
    times, info = sx.tune_grid(
        model,
        solver,
        nfe - 1,
        jax.random.PRNGKey(TRAINING_SEED),
        shape=shape,
        samples=args.samples,
        iterations=args.iterations,
        learning_rate=args.learning_rate,
        denoise_to_zero=True,
    )
    return times, info, time.perf_counter() - start


def best_peers(path):
    """{nfe: (config, error)} of the best peer configuration, if peer results exist."""
    if not os.path.exists(path):
        return {}
    with open(path) as file:
        peers = json.load(file).get("peers", {})
    best = {}
    for config, by_nfe in peers.items():
        for nfe, error in by_nfe.items():
            nfe = int(nfe)
            if error is not None and np.isfinite(error) and (nfe not in best or error < best[nfe][1]):
                best[nfe] = (config, float(error))
    return best


def markdown(report):
    nfes = report["nfes"]
    header = "| | " + " | ".join(f"NFE {n}" for n in nfes) + " |"
    rule = "|---" * (len(nfes) + 1) + "|"
    lines = [
        "# Learned time grids",
        "",
        "RMS error at sigma = 0 on the benchmark's held-out noise "
        f"({report['held_out_samples']} samples; `benchmarks/problems.py`), every run ending with "
        "the denoising step (NFE = steps + 1). Grids fitted by `samplax.tune_grid` on "
        f"{report['settings']['samples']} training noises (seed {TRAINING_SEED}), "
        f"{report['settings']['iterations']} Adam steps, learning rate "
        f"{report['settings']['learning_rate']}, against a {report['settings']['reference']} solve.",
        "",
        f"Command: `{report['command']}`. Machine: {report['machine']}.",
        "",
        header,
        rule,
    ]

    def row(label, values, fmt="{:.2e}"):
        cells = [fmt.format(v) if isinstance(v, float) else (v if v is not None else "-") for v in values]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    for solver in report["solvers"]:
        results = report["results"][solver]
        best_fixed = []
        for n in nfes:
            entry = results.get(str(n))
            best_fixed.append(min(entry["baseline"].values()) if entry else None)
        row(f"{solver}, best fixed grid", best_fixed)
        row(
            f"{solver}, learned grid",
            [results[str(n)]["learned"] if str(n) in results else None for n in nfes],
        )
    best = report["best_learned"]
    row(
        "**samplax best learned** (chosen by training loss)",
        [best[str(n)]["error"] if str(n) in best else None for n in nfes],
    )
    row("solver", [best[str(n)]["solver"] if str(n) in best else None for n in nfes], fmt="{}")
    peers = report.get("best_peer", {})
    if peers:
        row("**best peer configuration**", [peers[str(n)]["error"] if str(n) in peers else None for n in nfes])
        row("peer", [peers[str(n)]["config"] if str(n) in peers else None for n in nfes], fmt="{}")
        row(
            "ratio samplax / peer",
            [
                best[str(n)]["error"] / peers[str(n)]["error"] if str(n) in peers and str(n) in best else None
                for n in nfes
            ],
            fmt="{:.2f}",
        )
    else:
        lines += ["", "Peer results (benchmarks/results/dpm_benchmark.json with `--peers`) were not available."]
    lines += [
        "",
        f"Reference solve error on the held-out noise: {report['reference_error']:.2e}. "
        "Training RMS before -> after fitting, the fitted grids and fit times are in "
        "benchmarks/results/learned_grids.json.",
        "",
        "## Using a learned grid",
        "",
        "```python",
        "import jax, samplax as sx",
        "",
        "times, info = sx.tune_grid(model, \"unipc-bh1-3\", 7, jax.random.PRNGKey(0), shape=(64,))",
        "sx.save_grid(\"checkpoint/grid_unipc-bh1-3_nfe8.json\", times, solver=\"unipc-bh1-3\", steps=7,",
        "             denoise_to_zero=True)",
        "times, metadata = sx.load_grid(\"checkpoint/grid_unipc-bh1-3_nfe8.json\")",
        "x, _ = sx.sample(model, \"unipc-bh1-3\", noise, grid=times, denoise_to_zero=True)",
        "```",
        "",
        "The grid is specific to the model, the solver, the number of steps and the end points; "
        "fit it once per checkpoint and keep it next to the checkpoint.",
        "",
    ]
    return "\n".join(lines)


def write_atomically(path, text):
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    with os.fdopen(handle, "w") as file:
        file.write(text)
    os.replace(temporary, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--solvers", nargs="+", default=list(DEFAULT_SOLVERS))
    parser.add_argument("--nfes", nargs="+", type=int, default=list(DEFAULT_NFES))
    parser.add_argument("--samples", type=int, default=256, help="training noises")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "learned_grids.json"))
    parser.add_argument("--markdown", default=os.path.join(HERE, "LEARNED_GRIDS.md"))
    parser.add_argument("--peer-results", default=os.path.join(HERE, "results", "dpm_benchmark.json"))
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the markdown (and peer columns) from an existing --out"
    )
    args = parser.parse_args()
    if args.render_only:
        with open(args.out) as file:
            report = json.load(file)
        peers = best_peers(args.peer_results)
        report["best_peer"] = {str(n): {"config": c, "error": e} for n, (c, e) in peers.items() if n in report["nfes"]}
        write_atomically(args.out, json.dumps(report, indent=1))
        write_atomically(args.markdown, markdown(report))
        print(markdown(report))
        return

    mixture, schedule, noise, reference = diffusion_problem()
    model = mixture.denoiser(schedule, "noise")
    shape = noise.shape[1:]
    reference_solve, _ = held_out_error(model, "dpm++3m-taylor", noise, reference, "logsnr", steps=200)
    report = {
        "command": "python benchmarks/" + " ".join([os.path.basename(__file__)] + sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__} ({jax.default_backend()})",
        "held_out_samples": int(noise.shape[0]),
        "settings": {
            "samples": args.samples,
            "iterations": args.iterations,
            "learning_rate": args.learning_rate,
            "training_seed": TRAINING_SEED,
            "reference": "dpm++3m-taylor, 200 logSNR steps",
        },
        "reference_error": reference_solve,
        "nfes": args.nfes,
        "solvers": args.solvers,
        "results": {},
    }
    training_loss = {}
    for solver in args.solvers:
        report["results"][solver] = {}
        for nfe in args.nfes:
            baseline = {
                grid: held_out_error(model, solver, noise, reference, grid, steps=nfe - 1)[0] for grid in BASELINE_GRIDS
            }
            times, info, seconds = fit(model, solver, nfe, args, shape)
            learned, used = held_out_error(model, solver, noise, reference, times)
            if used != nfe:
                raise RuntimeError(f"{solver} used {used} evaluations, expected {nfe}")
            training_loss[(solver, nfe)] = float(info.best_loss)
            report["results"][solver][str(nfe)] = {
                "baseline": baseline,
                "learned": learned,
                "times": [float(t) for t in np.asarray(times)],
                "training_rms_before": float(np.sqrt(info.initial_loss)),
                "training_rms_after": float(np.sqrt(info.best_loss)),
                "fit_seconds": seconds,
            }
            print(
                f"{solver:>16} NFE {nfe:>2}: best fixed grid {min(baseline.values()):.2e}, learned {learned:.2e} "
                f"(training rms {np.sqrt(info.initial_loss):.2e} -> {np.sqrt(info.best_loss):.2e}, {seconds:.0f} s)",
                flush=True,
            )
    report["best_learned"] = {}
    for nfe in args.nfes:
        solver = min(args.solvers, key=lambda s: training_loss[(s, nfe)])
        report["best_learned"][str(nfe)] = {"solver": solver, "error": report["results"][solver][str(nfe)]["learned"]}
    peers = best_peers(args.peer_results)
    report["best_peer"] = {str(n): {"config": c, "error": e} for n, (c, e) in peers.items() if n in args.nfes}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    write_atomically(args.out, json.dumps(report, indent=1))
    write_atomically(args.markdown, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
