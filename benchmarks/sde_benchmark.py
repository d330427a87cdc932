"""Distribution error of the stochastic samplers (and the best ODE solvers) against NFE on
the sharp 64-D Gaussian mixture under the DDPM schedule, beside k-diffusion's and
diffusers' stochastic samplers.

Every sampler denoises to sigma = 0 (samplax: denoise_to_zero, which counts one
evaluation). The metric has a known zero: with each sample assigned to its most likely
component, the occupancy KL(p_hat || w) plus sum_k p_hat_k KL(N(m_k, v_k I) || N(mu_k,
s_k^2 I)), the Gaussian fitted to component k's samples (mean vector m_k, pooled variance
v_k) against the true one. Its floor is the same metric on exact samples of the same size
(mean and spread over seeds). Sampler noise uses two seeds; the table gives the mean.

    python benchmarks/sde_benchmark.py                      # samplax only
    python benchmarks/sde_benchmark.py --peers              # also run the peers (about an hour)
    python benchmarks/sde_benchmark.py --keep-samplax --peer-results a.npz b.npz
        # samplax's results kept from --out, the peers' read from sde_peer_runner.py outputs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from problems import markdown_table, registered_solvers, stochastic_problem, write_json, write_text

import samplax as sx

NFES = (10, 20, 50)
SEEDS = (0, 1)
GRIDS = ("logsnr", "karras")
ODE_SOLVERS = ("dpm++2m", "dpm++3m", "unipc-bh2-3", "heun")
RESULTS = os.path.join(os.path.dirname(__file__), "results")


def distribution_error(mixture, x) -> float:
    """Occupancy KL plus the occupancy-weighted KL of each component's fitted Gaussian."""
    x = np.asarray(x, np.float64)
    means, stds, weights = (np.asarray(a, np.float64) for a in (mixture.means, mixture.stds, mixture.weights))
    dimension = x.shape[1]
    log_density = np.log(weights) - 0.5 * ((x[:, None] - means) ** 2).sum(-1) / stds**2 - dimension * np.log(stds)
    component = log_density.argmax(1)
    total = 0.0
    for k in range(len(weights)):
        members = x[component == k]
        share = len(members) / len(x)
        if share == 0:
            continue
        total += share * np.log(share / weights[k])
        if len(members) < 2:
            return float("inf")
        ratio = members.var(0).mean() / stds[k] ** 2
        offset = np.sum((members.mean(0) - means[k]) ** 2) / stds[k] ** 2
        total += share * 0.5 * (dimension * ratio + offset - dimension - dimension * np.log(ratio))
    return float(total)


def floor(mixture, samples: int, seeds=range(5)) -> dict:
    values = [distribution_error(mixture, mixture.sample(jax.random.key(100 + s), samples)) for s in seeds]
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}


# Registered stochastic solvers left out as the same sampler under another name: ddim-eta
# at its default eta is ddpm; dpm++1-sde is the same step at eta = 1.
SAME_AS_ANOTHER = ("ddim-eta", "dpm++1-sde")


def samplax_candidates():
    """{name: solver}: every registered stochastic solver (aliases once) and the ODE solvers."""
    stochastic = registered_solvers(lambda solver: solver.stochastic, distinct=True)
    stochastic = {name: solver for name, solver in stochastic.items() if name not in SAME_AS_ANOTHER}
    return {**stochastic, **{name: sx.solvers.get(name) for name in ODE_SOLVERS}}


def _steps_at_most(solver, nfe):
    """The most grid intervals whose NFE (with the denoising step) is at most nfe."""
    fitting = [s for s in range(solver.min_steps(), nfe + 1) if solver.evaluations(s, True) <= nfe]
    return max(fitting) if fitting else None


def samplax_errors(mixture, model, noise) -> dict:
    """{name: {grid: {nfe: {"nfe": actual, "errors": [per seed]}}}}."""
    results = {}
    for name, solver in samplax_candidates().items():
        results[name] = {}
        for grid in GRIDS:
            runs = {}
            for nfe in NFES:
                steps = _steps_at_most(solver, nfe)
                if steps is None:
                    continue
                errors = []
                for seed in SEEDS if solver.stochastic else SEEDS[:1]:
                    options = {"key": jax.random.key(seed)} if solver.stochastic else {}
                    x, info = sx.sample(model, solver, noise, steps=steps, grid=grid, denoise_to_zero=True, **options)
                    errors.append(distribution_error(mixture, x))
                runs[nfe] = {"nfe": int(info.nfe), "steps": steps, "errors": errors}
            results[name][grid] = runs
            print(name, grid, {n: round(float(np.mean(r["errors"])), 4) for n, r in runs.items()}, flush=True)
    return results


def run_peers(mixture, noise, peer_python) -> list[str]:
    """Run benchmarks/peers/sde_peer_runner.py on the problem; returns the results path."""
    directory = tempfile.mkdtemp(prefix="sde-peers-")
    problem_path, out_path = os.path.join(directory, "problem.npz"), os.path.join(directory, "peers.npz")
    np.savez(problem_path, means=np.asarray(mixture.means), stds=np.asarray(mixture.stds),
             weights=np.asarray(mixture.weights), betas=np.linspace(1e-4, 0.02, 1000),
             noise=np.asarray(noise, np.float32), nfes=np.array(NFES), seeds=np.array(SEEDS))
    runner = os.path.join(os.path.dirname(__file__), "peers", "sde_peer_runner.py")
    subprocess.run([peer_python, runner, "--problem", problem_path, "--out", out_path], check=True)
    return [out_path]


def peer_errors(mixture, paths) -> dict:
    """{config: {"library": ..., nfe: {"nfe": actual, "errors": [per seed]}}} from the
    peer runner's results files; the target NFE is the NFES entry at or above the actual."""
    results = {}
    for path in paths:
        with np.load(path, allow_pickle=False) as data:
            configs = json.loads(str(data["configs"]))
            for key in data.files:
                if not key.startswith("samples/"):
                    continue
                _, config, nfe, _seed = key.split("/")
                target = min(n for n in NFES if n >= int(nfe))
                entry = results.setdefault(config, {"library": configs[config]["library"]})
                run = entry.setdefault(target, {"nfe": int(nfe), "errors": []})
                run["errors"].append(distribution_error(mixture, data[key]))
    return results


def _best(runs_by_name, nfe):
    """(mean error, name, spread) of the lowest mean error at a target NFE."""
    best = None
    for name, runs in runs_by_name.items():
        if nfe in runs:
            errors = runs[nfe]["errors"]
            candidate = (float(np.mean(errors)), name, float(np.ptp(errors)) if len(errors) > 1 else 0.0)
            best = candidate if best is None or candidate < best else best
    return best


def _flatten(samplax):
    """{name [grid]: runs} with one entry per (solver, grid)."""
    return {f"{name} [{grid}]": runs for name, grids in samplax.items() for grid, runs in grids.items()}


def markdown(report) -> str:
    flat = _flatten(report["samplax"])
    stochastic = {k: v for k, v in flat.items() if sx.solvers.get(k.split(" ")[0]).stochastic}
    ode = {k: v for k, v in flat.items() if not sx.solvers.get(k.split(" ")[0]).stochastic}
    groups = {"samplax stochastic": stochastic, "samplax ODE": ode}
    for library in ("k-diffusion", "diffusers"):
        groups[library] = {c: r for c, r in report.get("peers", {}).items() if r["library"] == library}
    floor_text = f"{report['floor']['mean']:.4f} +- {report['floor']['std']:.4f}"
    lines = [f"Exact-sample floor (same sample count, 5 seeds): {floor_text}", ""]
    header = ["best of", *[f"NFE {n}" for n in NFES]]
    rows = []
    for group, runs in groups.items():
        if not runs:
            continue
        cells = []
        for nfe in NFES:
            best = _best(runs, nfe)
            cells.append("" if best is None else f"{best[0]:.4f} ({best[1]}; spread {best[2]:.4f})")
        rows.append([group, *cells])
    lines += markdown_table(header, rows)
    lines += ["", "Every samplax solver (best grid), mean over seeds:", ""]
    per_solver = []
    for name, grids in report["samplax"].items():
        cells = []
        for nfe in NFES:
            options = [(float(np.mean(r[nfe]["errors"])), grid) for grid, r in grids.items() if nfe in r]
            cells.append("" if not options else f"{min(options)[0]:.4f} ({min(options)[1]})")
        per_solver.append([name, *cells])
    lines += markdown_table(["solver", *[f"NFE {n}" for n in NFES]], per_solver)
    if report.get("peers"):
        lines += ["", "Every peer config, mean over seeds (actual NFE):", ""]
        peer_rows = [[c, *[f"{np.mean(r[n]['errors']):.4f} ({r[n]['nfe']})" if n in r else "" for n in NFES]]
                     for c, r in sorted(report["peers"].items())]
        lines += markdown_table(["config", *[f"NFE {n}" for n in NFES]], peer_rows)
    return "\n".join(lines) + "\n"


def _stored(path) -> dict:
    """A stored report, with its NFE keys as integers again (JSON keeps them as strings)."""
    with open(path) as handle:
        report = json.load(handle)
    report["samplax"] = {name: {grid: {int(n): run for n, run in runs.items()} for grid, runs in grids.items()}
                         for name, grids in report["samplax"].items()}
    report.pop("peers", None)
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--peers", action="store_true", help="run the peer samplers (separate environment)")
    parser.add_argument("--peer-results", nargs="+", default=None, help="stored results of sde_peer_runner.py")
    parser.add_argument("--peer-python", default="/work/peers-venv/bin/python")
    parser.add_argument("--keep-samplax", action="store_true",
                        help="keep samplax's results and the floor already in --out; only add the peers")
    parser.add_argument("--out", default=os.path.join(RESULTS, "sde_benchmark.json"))
    args = parser.parse_args()
    if args.peers and args.peer_results:
        parser.error("--peers runs the peers; --peer-results reads stored results: choose one")
    if args.keep_samplax and not os.path.exists(args.out):
        parser.error(f"--keep-samplax reads the results in --out, and {args.out} does not exist")
    mixture, schedule, noise = stochastic_problem(args.samples)
    model = mixture.denoiser(schedule, "noise")
    started = time.perf_counter()
    command = " ".join(["python"] + sys.argv)
    if args.keep_samplax:
        report = _stored(args.out)
        report["command"] = f"{report['command']}` then `{command}"
    else:
        report = {
            "command": command,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}",
            "problem": {"dimension": mixture.dimension, "components": int(mixture.weights.shape[0]),
                        "samples": args.samples, "schedule": "DDPM linear betas 1e-4..0.02, 1000 steps",
                        "nfe": list(NFES), "seeds": list(SEEDS)},
            "floor": floor(mixture, args.samples),
            "samplax": samplax_errors(mixture, model, jnp.asarray(noise)),
        }
    paths = run_peers(mixture, noise, args.peer_python) if args.peers else args.peer_results
    if paths:
        report["peers"] = peer_errors(mixture, paths)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    text = markdown(report)
    write_json(args.out, report)
    write_text(args.out[:-5] + ".md", text)
    print(text)


if __name__ == "__main__":
    main()
