"""Learned time grids on the shared benchmark problem: fit a grid per solver, NFE and end
convention on training noise, measure the error on the benchmark's held-out noise.

    python benchmarks/learned_grids.py                      # default solvers, NFEs, both ends
    python benchmarks/learned_grids.py --nfes 5 6 --solvers ipndm --conventions t_min

Two end conventions, as in benchmarks/dpm_benchmark.py, each compared with the peers run in
the same convention:
  "t_min":     the solve stops at t_min = 1e-3 (sigma ~ 0.01); NFE = steps, and the error is
               the RMS distance to the exact ODE solution at t_min;
  "sigma = 0": the solve ends with the denoising step at t_min (denoise_to_zero=True);
               NFE = steps + 1, and the error is the RMS distance to the exact endpoint at
               sigma = 0 (benchmarks/problems.py).
Grids are fitted with `samplax.tune_grid` on noise drawn from a different seed than the
held-out noise, against a high-accuracy solve of the model (not the exact reference), from
several starting grids (the fit keeps the lowest training loss). For each NFE and
convention the reported "best learned" solver is the one with the lowest *training* loss,
so the held-out noise plays no part in any choice. When the peer results of
benchmarks/dpm_benchmark.py --peers exist (benchmarks/results/dpm_benchmark.json), the best
peer configuration of the same convention per NFE is put side by side.

Writes benchmarks/results/learned_grids.json and benchmarks/LEARNED_GRIDS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from problems import (  # noqa: E402
    diffusion_problem,
    markdown_table,
    rms_error,
    write_json,
    write_text,
)

import samplax as sx  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SOLVERS = ("dpm++2m", "ipndm", "unipc-bh2-2", "unipc-bh2-3", "deis-tab3")
DEFAULT_NFES = (5, 6, 8, 10)
CONVENTIONS = ("t_min", "sigma = 0")
BASELINE_GRIDS = ("logsnr", "karras", "uniform", "quadratic")
INITS = ("logsnr", "karras", "quadratic")  # the starting grids of every fit
TRAINING_SEED = 2024  # the held-out noise of problems.py uses seed 1


def steps_for(solver, nfe, convention):
    """Grid intervals at which `solver` (a name) makes `nfe` evaluations in `convention`
    (the "sigma = 0" one counts the final denoising step)."""
    steps = sx.solvers.get(solver).steps_for(nfe, convention == "sigma = 0")
    if steps is None:
        raise SystemExit(f"{solver} cannot spend exactly {nfe} evaluations in the {convention!r} convention")
    return steps


def held_out_error(model, solver, noise, reference, grid, convention, steps=None):
    x, info = sx.sample(model, solver, noise, steps=steps, grid=grid, denoise_to_zero=convention == "sigma = 0")
    return rms_error(x, reference), int(info.nfe)


def fit(model, solver, nfe, convention, args, shape):
    start = time.perf_counter()
    times, info = sx.tune_grid(
        model,
        solver,
        steps_for(solver, nfe, convention),
        jax.random.PRNGKey(TRAINING_SEED),
        shape=shape,
        samples=args.samples,
        iterations=args.iterations,
        learning_rate=args.learning_rate,
        init=INITS,
        denoise_to_zero=convention == "sigma = 0",
    )
    return times, info, time.perf_counter() - start


def best_peers(path):
    """{convention: {nfe: (config, error)}}: the best peer configuration per end convention
    and NFE, if peer results exist."""
    if not os.path.exists(path):
        return {}
    with open(path) as file:
        results = json.load(file)
    peers, ends = results.get("peers", {}), results.get("peer_ends", {})
    best = {}
    for config, by_nfe in peers.items():
        by_convention = best.setdefault(ends.get(config, "sigma = 0"), {})
        for nfe, error in by_nfe.items():
            nfe = int(nfe)
            if error is not None and np.isfinite(error) and (nfe not in by_convention or error < by_convention[nfe][1]):
                by_convention[nfe] = (config, float(error))
    return best


def attach_peers(report, path):
    peers = best_peers(path)
    for convention, part in report["conventions"].items():
        by_nfe = peers.get(convention, {})
        part["best_peer"] = {str(n): {"config": c, "error": e} for n, (c, e) in by_nfe.items() if n in report["nfes"]}


def table(report, convention):
    nfes = report["nfes"]
    part = report["conventions"][convention]
    rows = []

    def row(label, values, fmt="{:.2e}"):
        cells = [fmt.format(v) if isinstance(v, float) else (v if v is not None else "-") for v in values]
        rows.append([label] + cells)

    def cells(by_nfe, read):
        return [read(by_nfe[str(n)]) if str(n) in by_nfe else None for n in nfes]

    for solver in report["solvers"]:
        results = part["results"].get(solver, {})
        row(f"{solver}, best fixed grid", cells(results, lambda entry: min(entry["baseline"].values())))
        row(f"{solver}, learned grid", cells(results, lambda entry: entry["learned"]))
    best, peers = part["best_learned"], part.get("best_peer", {})
    row("**samplax best learned** (chosen by training loss)", cells(best, lambda entry: entry["error"]))
    row("solver", cells(best, lambda entry: entry["solver"]), fmt="{}")
    if peers:
        row(f"**best peer configuration ({convention})**", cells(peers, lambda entry: entry["error"]))
        row("peer", cells(peers, lambda entry: entry["config"]), fmt="{}")
        ratios = [
            best[str(n)]["error"] / peers[str(n)]["error"] if str(n) in peers and str(n) in best else None for n in nfes
        ]
        row("ratio samplax / peer (target <= 0.50)", ratios, fmt="{:.2f}")
    lines = markdown_table([""] + [f"NFE {n}" for n in nfes], rows)
    if not peers:
        lines += ["", "Peer results (benchmarks/results/dpm_benchmark.json with `--peers`) were not available."]
    return lines


def markdown(report):
    settings = report["settings"]
    lines = [
        "# Learned time grids",
        "",
        f"RMS error on the benchmark's held-out noise ({report['held_out_samples']} samples; "
        "`benchmarks/problems.py`) in the two end conventions of benchmarks/dpm_benchmark.py, each next "
        "to the best peer configuration of the same convention. Grids fitted by `samplax.tune_grid` on "
        f"{settings['samples']} training noises (seed {settings['training_seed']}), from each of the starting "
        f"grids {', '.join(settings['inits'])} ({settings['iterations']} Adam steps each, learning rate "
        f"{settings['learning_rate']} with cosine decay; the lowest training loss wins), against a "
        f"{settings['reference']} solve.",
        "",
        f"Command: `{report['command']}`. Machine: {report['machine']}. Total time {report['seconds'] / 60:.0f} min.",
    ]
    for convention in report["conventions"]:
        part = report["conventions"][convention]
        title = (
            "Stopping at t_min = 1e-3 (sigma ~ 0.01), NFE = steps; error against the exact solution at t_min"
            if convention == "t_min"
            else "Ending with the denoising step to sigma = 0, NFE = steps + 1; error against the exact endpoint at "
            "sigma = 0"
        )
        reference = f"Reference solve error on the held-out noise: {part['reference_error']:.2e}."
        lines += ["", f"## {title}", "", *table(report, convention), "", reference]
    lines += [
        "",
        "Training RMS before -> after fitting, the fitted grids and fit times are in "
        "benchmarks/results/learned_grids.json.",
        "",
        "## Using a learned grid",
        "",
        "```python",
        "import jax, samplax as sx",
        "",
        "times, info = sx.tune_grid(model, \"ipndm\", 6, jax.random.PRNGKey(0), shape=(64,),",
        "                           init=(\"logsnr\", \"karras\", \"quadratic\"), denoise_to_zero=False)",
        "sx.save_grid(\"checkpoint/grid_ipndm_nfe6.json\", times, solver=\"ipndm\", steps=6, denoise_to_zero=False)",
        "times, metadata = sx.load_grid(\"checkpoint/grid_ipndm_nfe6.json\")",
        "x, _ = sx.sample(model, \"ipndm\", noise, grid=times, denoise_to_zero=False)",
        "```",
        "",
        "The grid is specific to the model, the solver, the number of steps, the end points and the "
        "end convention; fit it once per checkpoint and keep it next to the checkpoint.",
        "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--solvers", nargs="+", default=list(DEFAULT_SOLVERS))
    parser.add_argument("--nfes", nargs="+", type=int, default=list(DEFAULT_NFES))
    parser.add_argument("--conventions", nargs="+", choices=CONVENTIONS, default=list(CONVENTIONS))
    parser.add_argument("--samples", type=int, default=256, help="training noises")
    parser.add_argument("--iterations", type=int, default=300, help="Adam steps per starting grid")
    parser.add_argument("--learning-rate", type=float, default=0.2)
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
        attach_peers(report, args.peer_results)
        write_json(args.out, report)
        write_text(args.markdown, markdown(report))
        print(markdown(report))
        return

    started = time.perf_counter()
    mixture, schedule, noise, reference_at_zero = diffusion_problem()
    model = mixture.denoiser(schedule, "noise")
    shape = noise.shape[1:]
    x_start = np.asarray(schedule.sigma(1.0)) * noise
    references = {
        "sigma = 0": reference_at_zero,
        "t_min": mixture.flow_map(x_start, schedule, 1.0, schedule.t_min),
    }
    report = {
        "command": "python benchmarks/" + " ".join([os.path.basename(__file__)] + sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__} ({jax.default_backend()})",
        "held_out_samples": int(noise.shape[0]),
        "settings": {
            "samples": args.samples,
            "iterations": args.iterations,
            "learning_rate": args.learning_rate,
            "decay": "cosine",
            "inits": list(INITS),
            "training_seed": TRAINING_SEED,
            "reference": "dpm++3m-taylor, 200 logSNR steps",
        },
        "nfes": args.nfes,
        "solvers": args.solvers,
        "conventions": {},
    }
    for convention in args.conventions:
        reference = references[convention]
        part = report["conventions"][convention] = {
            "reference_error": held_out_error(
                model, "dpm++3m-taylor", noise, reference, "logsnr", convention, steps=200
            )[0],
            "results": {},
        }
        training_loss = {}
        for solver in args.solvers:
            part["results"][solver] = {}
            for nfe in args.nfes:
                steps = steps_for(solver, nfe, convention)
                baseline = {
                    grid: held_out_error(model, solver, noise, reference, grid, convention, steps=steps)[0]
                    for grid in BASELINE_GRIDS
                }
                times, info, seconds = fit(model, solver, nfe, convention, args, shape)
                learned, used = held_out_error(model, solver, noise, reference, times, convention)
                if used != nfe:
                    raise RuntimeError(f"{solver} used {used} evaluations, expected {nfe}")
                training_loss[(solver, nfe)] = float(info.best_loss)
                part["results"][solver][str(nfe)] = {
                    "baseline": baseline,
                    "learned": learned,
                    "times": [float(t) for t in np.asarray(times)],
                    "training_rms_before": float(np.sqrt(info.initial_loss)),
                    "training_rms_after": float(np.sqrt(info.best_loss)),
                    "fit_seconds": seconds,
                }
                print(
                    f"{convention:>9} {solver:>12} NFE {nfe:>2}: best fixed grid {min(baseline.values()):.2e}, "
                    f"learned {learned:.2e} (training rms {np.sqrt(info.initial_loss):.2e} -> "
                    f"{np.sqrt(info.best_loss):.2e}, {seconds:.0f} s)",
                    flush=True,
                )
        part["best_learned"] = {}
        for nfe in args.nfes:
            solver = min(args.solvers, key=lambda s: training_loss[(s, nfe)])
            part["best_learned"][str(nfe)] = {"solver": solver, "error": part["results"][solver][str(nfe)]["learned"]}
    report["seconds"] = time.perf_counter() - started
    attach_peers(report, args.peer_results)
    write_json(args.out, report)
    write_text(args.markdown, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
