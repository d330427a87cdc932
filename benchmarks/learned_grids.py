"""Learned time grids on the shared benchmark problem: fit a grid per solver, NFE and end
convention on training noise, measure the error on the benchmark's held-out noise.

    python benchmarks/learned_grids.py                      # default solvers, NFEs, both ends
    python benchmarks/learned_grids.py --nfes 5 6 --solvers ipndm --conventions t_min
    python benchmarks/learned_grids.py --seed 1             # the second mixture (peers: dpm_benchmark_seed1.json)
    python benchmarks/learned_grids.py --seed 2 --std-range 0.02 0.1   # a sharper mixture (no peer results)
    python benchmarks/learned_grids.py --pool-curve unipc-bh2-3 6      # held-out error against the pool size

Two end conventions, as in benchmarks/dpm_benchmark.py, each compared with the peers run in
the same convention:
  "t_min":     the solve stops at t_min = 1e-3 (sigma ~ 0.01); NFE = steps, and the error is
               the RMS distance to the exact ODE solution at t_min;
  "sigma = 0": the solve ends with the denoising step at t_min (denoise_to_zero=True);
               NFE = steps + 1, and the error is the RMS distance to the exact endpoint at
               sigma = 0 (benchmarks/problems.py).
Grids are fitted with `samplax.tune_grid` on a pool of noise drawn from a different seed
than the held-out noise, against a high-accuracy solve of the model (not the exact
reference), from several starting grids; tune_grid returns the grid with the lowest loss on
the validation part of its pool. For each NFE and convention the reported "best learned"
solver is the one with the lowest *validation* loss, so the held-out noise plays no part in
any choice. Training, validation and held-out RMS are reported side by side (the held-out
to training ratio shows how well a fit generalises). When the peer results of
benchmarks/dpm_benchmark.py --peers exist for the mixture (benchmarks/results/
dpm_benchmark.json for seed 0, dpm_benchmark_seed<seed>.json otherwise), the best peer
configuration of the same convention per NFE is put side by side.

`--pool-curve SOLVER NFE` fits one solver and NFE with pools of several sizes
(`--pools`), with each `--losses`, and reports training, validation and held-out RMS
against the pool size: the measurement behind tune_grid's default pool.

Writes benchmarks/results/learned_grids<suffix>.json and benchmarks/LEARNED_GRIDS<suffix>.md
(suffix "" for the benchmark mixture, "_seed1" and so on for others; "_pool_curve" added
for the pool curve).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from problems import (  # noqa: E402
    STD_RANGE,
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


def fit(model, solver, nfe, convention, args, shape, samples=None, loss=None):
    """tune_grid with the benchmark's settings (`samples` and `loss` override --samples
    and --loss); returns (times, info, seconds)."""
    samples = samples or args.samples
    options = {"samples": samples} if samples else {}
    start = time.perf_counter()
    times, info = sx.tune_grid(
        model,
        solver,
        steps_for(solver, nfe, convention),
        jax.random.PRNGKey(TRAINING_SEED),
        shape=shape,
        iterations=args.iterations,
        learning_rate=args.learning_rate,
        loss=loss or args.loss,
        init=INITS,
        denoise_to_zero=convention == "sigma = 0",
        **options,
    )
    return times, info, time.perf_counter() - start


def fit_record(model, solver, nfe, convention, args, shape, noise, reference, samples=None, loss=None):
    """Fit, measure on the held-out noise, and return the record of the fit."""
    times, info, seconds = fit(model, solver, nfe, convention, args, shape, samples, loss)
    held_out, used = held_out_error(model, solver, noise, reference, times, convention)
    if used != nfe:
        raise RuntimeError(f"{solver} used {used} evaluations, expected {nfe}")
    return {
        "learned": held_out,
        "training_rms": float(info.training_rms),
        "validation_rms": float(info.validation_rms),
        "validation_loss": float(info.validation_loss),
        "held_out_over_training": held_out / float(info.training_rms),
        "start": INITS[info.start],
        "iteration": int(info.iteration),
        "times": [float(t) for t in np.asarray(times)],
        "fit_seconds": seconds,
    }


def best_peers(path):
    """{convention: {nfe: (config, error)}}: the best peer configuration per end convention
    and NFE, if peer results exist."""
    if not path or not os.path.exists(path):
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
    chosen = {n: part["results"][entry["solver"]][n] for n, entry in best.items()}
    row("**samplax best learned**, held-out (chosen by validation loss)", cells(best, lambda entry: entry["error"]))
    row("solver", cells(best, lambda entry: entry["solver"]), fmt="{}")
    row("its training RMS", cells(chosen, lambda entry: entry["training_rms"]))
    row("its validation RMS", cells(chosen, lambda entry: entry["validation_rms"]))
    row("held-out / training (target <= 1.5)", cells(chosen, lambda entry: entry["held_out_over_training"]),
        fmt="{:.2f}")
    if peers:
        row(f"**best peer configuration ({convention})**", cells(peers, lambda entry: entry["error"]))
        row("peer", cells(peers, lambda entry: entry["config"]), fmt="{}")
        ratios = [
            best[str(n)]["error"] / peers[str(n)]["error"] if str(n) in peers and str(n) in best else None for n in nfes
        ]
        row("ratio samplax / peer (target <= 0.50)", ratios, fmt="{:.2f}")
    lines = markdown_table([""] + [f"NFE {n}" for n in nfes], rows)
    if not peers:
        lines += ["", "Peer results (benchmarks/dpm_benchmark.py with `--peers` on this mixture) were not available."]
    return lines


def describe(report):
    """The opening lines of a report: the mixture, the fit's settings, command and machine."""
    settings = report["settings"]
    problem = report["problem"]
    return [
        f"Mixture: 64-D, 8 components, seed {problem['seed']}, component stds {problem['std_range'][0]}-"
        f"{problem['std_range'][1]}, DDPM schedule. RMS error on {report['held_out_samples']} held-out noises "
        "(`benchmarks/problems.py`) in the two end conventions of benchmarks/dpm_benchmark.py. Grids fitted by "
        f"`samplax.tune_grid` on a pool of {settings['samples']} noises (seed {settings['training_seed']}; "
        "a quarter held out for validation, Adam on mini-batches of 128) from each of the starting grids "
        f"{', '.join(settings['inits'])} ({settings['iterations']} steps each, learning rate "
        f"{settings['learning_rate']} with cosine decay, loss {settings['loss']!r}), against a "
        f"{settings['reference']} solve; the grid with the lowest validation loss is returned.",
        "",
        f"Command: `{report['command']}`. Machine: {report['machine']}. Total time {report['seconds'] / 60:.0f} min.",
    ]


def markdown(report):
    lines = ["# Learned time grids", "", *describe(report)]
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
        "Fitted grids, starting grids and iterations of the returned grids, and fit times are in the results JSON.",
        "",
        "## Using a learned grid",
        "",
        "```python",
        "import jax, samplax as sx",
        "",
        "times, info = sx.tune_grid(model, \"ipndm\", 6, jax.random.PRNGKey(0), shape=(64,),",
        "                           init=(\"logsnr\", \"karras\", \"quadratic\"), denoise_to_zero=False)",
        "print(info.training_rms, info.validation_rms)  # how far the fit generalises",
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


def pool_curve_markdown(report):
    solver, nfe = report["pool_curve"]["solver"], report["pool_curve"]["nfe"]
    lines = [f"# Learned grids against the size of the noise pool: {solver}, NFE {nfe}", "", *describe(report), ""]
    lines += ["The pool size is the whole pool: a quarter of it is the validation noise.", ""]
    for convention, by_loss in report["pool_curve"]["results"].items():
        lines += [f"## {convention}", ""]
        rows = []
        for loss, by_pool in by_loss.items():
            for pool, entry in by_pool.items():
                rows.append([loss, pool] + [f"{entry[k]:.2e}" for k in ("training_rms", "validation_rms", "learned")]
                            + [f"{entry['held_out_over_training']:.2f}", f"{entry['fit_seconds']:.0f}"])
        lines += markdown_table(["loss", "pool", "training RMS", "validation RMS", "held-out RMS",
                                 "held-out / training", "fit s"], rows) + [""]
    return "\n".join(lines)


def pool_curve(args, model, shape, noise, references, report):
    """Held-out error against the pool size, for one solver and NFE, every --losses."""
    solver, nfe = args.pool_curve[0], int(args.pool_curve[1])
    report["pool_curve"] = {"solver": solver, "nfe": nfe, "pools": args.pools, "results": {}}
    for convention in args.conventions:
        by_loss = report["pool_curve"]["results"][convention] = {}
        for loss in args.losses:
            by_pool = by_loss[loss] = {}
            for pool in args.pools:
                entry = by_pool[str(pool)] = fit_record(model, solver, nfe, convention, args, shape, noise,
                                                        references[convention], samples=pool, loss=loss)
                print(f"{convention:>9} {solver} NFE {nfe} {loss:>7} pool {pool:>5}: "
                      f"training {entry['training_rms']:.2e} validation {entry['validation_rms']:.2e} "
                      f"held-out {entry['learned']:.2e} ({entry['fit_seconds']:.0f} s)", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--solvers", nargs="+", default=list(DEFAULT_SOLVERS))
    parser.add_argument("--nfes", nargs="+", type=int, default=list(DEFAULT_NFES))
    parser.add_argument("--conventions", nargs="+", choices=CONVENTIONS, default=list(CONVENTIONS))
    parser.add_argument("--seed", type=int, default=0, help="seed of the mixture (0: the benchmark problem)")
    parser.add_argument("--std-range", nargs=2, type=float, default=list(STD_RANGE), metavar=("LOW", "HIGH"),
                        help="component standard deviations of the mixture")
    parser.add_argument("--samples", type=int, default=None, help="noise pool (default: tune_grid's)")
    parser.add_argument("--iterations", type=int, default=300, help="Adam steps per starting grid")
    parser.add_argument("--learning-rate", type=float, default=0.2)
    parser.add_argument("--loss", choices=("squared", "rms"), default="squared")
    parser.add_argument("--pool-curve", nargs=2, metavar=("SOLVER", "NFE"), default=None)
    parser.add_argument("--pools", nargs="+", type=int, default=[128, 256, 512, 1024, 2048, 4096])
    parser.add_argument("--losses", nargs="+", choices=("squared", "rms"), default=["squared", "rms"])
    parser.add_argument("--out", default=None, help="results JSON (default: by mixture)")
    parser.add_argument("--markdown", default=None, help="markdown table (default: by mixture)")
    parser.add_argument("--peer-results", default=None, help="dpm_benchmark results with peers (default: by seed)")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the markdown (and peer columns) from an existing --out"
    )
    args = parser.parse_args()
    custom_std = tuple(args.std_range) != tuple(STD_RANGE)
    suffix = (f"_seed{args.seed}" if args.seed or custom_std else "") + (
        f"_std{args.std_range[0]:g}-{args.std_range[1]:g}" if custom_std else "") + (
        "_pool_curve" if args.pool_curve else "")
    args.out = args.out or os.path.join(HERE, "results", f"learned_grids{suffix}.json")
    args.markdown = args.markdown or os.path.join(HERE, f"LEARNED_GRIDS{suffix}.md")
    peer_file = "dpm_benchmark.json" if not args.seed else f"dpm_benchmark_seed{args.seed}.json"
    args.peer_results = args.peer_results or ("" if custom_std else os.path.join(HERE, "results", peer_file))
    render = pool_curve_markdown if args.pool_curve else markdown
    if args.render_only:
        with open(args.out) as file:
            report = json.load(file)
        if not args.pool_curve:
            attach_peers(report, args.peer_results)
        write_json(args.out, report)
        write_text(args.markdown, render(report))
        print(render(report))
        return

    started = time.perf_counter()
    mixture, schedule, noise, reference_at_zero = diffusion_problem(seed=args.seed, std_range=args.std_range)
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
        "problem": {"seed": args.seed, "std_range": list(args.std_range)},
        "settings": {
            "samples": args.samples or inspect.signature(sx.tune_grid).parameters["samples"].default,
            "iterations": args.iterations,
            "learning_rate": args.learning_rate,
            "loss": args.loss,
            "decay": "cosine",
            "inits": list(INITS),
            "training_seed": TRAINING_SEED,
            "reference": "dpm++3m-taylor, 200 logSNR steps",
        },
        "nfes": args.nfes,
        "solvers": args.solvers,
        "conventions": {},
    }
    if args.pool_curve:
        pool_curve(args, model, shape, noise, references, report)
    for convention in [] if args.pool_curve else args.conventions:
        reference = references[convention]
        part = report["conventions"][convention] = {
            "reference_error": held_out_error(
                model, "dpm++3m-taylor", noise, reference, "logsnr", convention, steps=200
            )[0],
            "results": {},
        }
        for solver in args.solvers:
            part["results"][solver] = {}
            for nfe in args.nfes:
                steps = steps_for(solver, nfe, convention)
                baseline = {
                    grid: held_out_error(model, solver, noise, reference, grid, convention, steps=steps)[0]
                    for grid in BASELINE_GRIDS
                }
                entry = fit_record(model, solver, nfe, convention, args, shape, noise, reference)
                part["results"][solver][str(nfe)] = {"baseline": baseline, **entry}
                print(
                    f"{convention:>9} {solver:>12} NFE {nfe:>2}: best fixed grid {min(baseline.values()):.2e}, "
                    f"learned {entry['learned']:.2e} (training {entry['training_rms']:.2e}, validation "
                    f"{entry['validation_rms']:.2e}, {entry['fit_seconds']:.0f} s)",
                    flush=True,
                )
        part["best_learned"] = {}
        for nfe in args.nfes:
            solver = min(args.solvers, key=lambda s: part["results"][s][str(nfe)]["validation_loss"])
            part["best_learned"][str(nfe)] = {"solver": solver, "error": part["results"][solver][str(nfe)]["learned"]}
    report["seconds"] = time.perf_counter() - started
    if not args.pool_curve:
        attach_peers(report, args.peer_results)
    write_json(args.out, report)
    write_text(args.markdown, render(report))
    print(render(report))


if __name__ == "__main__":
    main()
