"""Error versus NFE of every diffusion solver on the sharp Gaussian-mixture problem, side by
side with peer implementations (sampler overhead and compile time: overhead.py).

    python benchmarks/dpm_benchmark.py                       # samplax only
    python benchmarks/dpm_benchmark.py --peers               # + diffusers, k-diffusion, DPM-Solver

The peers run in a separate Python environment (see benchmarks/peers/README.md), given by
--peer-python; the official DPM-Solver file is given by --dpm-solver-path. Results go to
benchmarks/results/dpm_benchmark.json and a markdown table to
benchmarks/results/dpm_benchmark.md.

Every configuration is scored against the exact ODE solution at its own end point: sigma = 0
for runs that finish with a denoising step (all of ours, diffusers' DPM-Solver++ and
k-diffusion), or the last noise level where a peer stops there.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import samplax as sx  # noqa: E402
from problems import NFES, diffusion_problem, rms_error  # noqa: E402

T_END = 1e-3  # the schedule's smallest time, sigma ~ 0.01, followed by the denoising step
GRID_KINDS = ("logsnr", "karras", "uniform", "quadratic")
STOP_AT_END_SOLVERS = ("dpm++2m", "dpm++3m", "dpm++3m-taylor", "dpm++3s", "unipc-bh1-3", "unipc-bh2-3", "deis-tab3")
# Peer configurations that use the same algorithm on the same grid as one of ours: the
# diffusers DPM-Solver++ multistep runs on integer timesteps (linspace / trailing spacing).
AGREEMENT_CONFIGS = {
    "diffusers_dpmpp_2m_linspace": 2,
    "diffusers_dpmpp_2m_trailing": 2,
    "diffusers_dpmpp_3m_linspace": 3,
    "diffusers_dpmpp_3m_trailing": 3,
}
OFFICIAL_AGREEMENT_CONFIGS = {
    "dpmsolver_multistep_o2_time_uniform": 2,
    "dpmsolver_multistep_o3_time_uniform": 3,
    "dpmsolver_multistep_o2_logSNR": 2,
    "dpmsolver_multistep_o3_logSNR": 3,
}
# The official code's denoise_to_zero variants are left out: its lower-order-final rule does
# not count the final denoising step, ours does (as diffusers' final step to sigma = 0), so
# their last grid steps use different orders.


def diffusion_solvers(names=None):
    """Every registered fixed-grid solver that integrates a data or noise prediction (or
    those of `names`), with both lower_order_final settings where the solver has that
    option."""
    configurations = {}
    for name in names or sx.solvers.names():
        solver = sx.solvers.get(name)
        if solver.adaptive or solver.prediction not in ("data", "noise"):
            continue
        configurations[name] = solver
        if getattr(solver, "lower_order_final", False) and getattr(solver, "method", "multistep") == "multistep":
            configurations[name + " (no lower-order final)"] = _replace(solver, lower_order_final=False)
    return configurations


def _replace(solver, **changes):
    return dataclasses.replace(solver, **changes)


def steps_for(solver, nfe, denoise):
    """The number of steps at which `solver` uses exactly `nfe` evaluations, or None (a
    Runge-Kutta solver with several evaluations per step reaches only some NFEs)."""
    for steps in range(solver.min_steps(), nfe + 1):
        if solver.evaluations(steps, denoise) == nfe:
            return steps
    return None


@functools.partial(jax.jit, static_argnames=("prediction",))
def _run(model, prediction, plan, x):
    return sx.solvers.run_plan(plan, model.predict(prediction), x)[0]


def solve(model, solver, noise, steps, kind, denoise):
    """What `sx.sample` computes, with the plan's coefficients computed eagerly: the jitted
    part is then shared by every solver with the same number of stages and history size,
    which saves hundreds of compilations in this sweep."""
    schedule = model.schedule
    times = sx.solvers.time_grid(schedule, steps, kind, t_end=T_END)
    plan = solver.plan(schedule, times, denoise)
    assert plan.num_evaluations == solver.evaluations(steps, denoise)
    return _run(model, solver.prediction, plan, schedule.sigma(times[0]) * noise)


def samplax_errors(model, noise, reference, reference_at_end, partial_path, names=None):
    """{configuration: {grid: {nfe: error}}} for every solver, grid and NFE. "+denoise" runs
    steps = NFE - 1 and the denoising step (scored against the sigma = 0 endpoint); the
    plain grid, run for STOP_AT_END_SOLVERS only, takes steps = NFE and stops at T_END
    (scored against the exact solution there). Finished solvers are kept in partial_path,
    so an interrupted sweep resumes where it stopped."""
    results = json.loads(open(partial_path).read()) if os.path.exists(partial_path) else {}
    for name, solver in diffusion_solvers(names).items():
        if name in results:
            continue
        by_grid = {}
        conventions = (True, False) if name in STOP_AT_END_SOLVERS else (True,)
        for kind in GRID_KINDS:
            for denoise in conventions:
                label = kind + ("+denoise" if denoise else "")
                by_grid[label] = {}
                for nfe in NFES:
                    steps = steps_for(solver, nfe, denoise)
                    if steps is not None:
                        x = solve(model, solver, noise, steps, kind, denoise)
                        by_grid[label][str(nfe)] = rms_error(x, reference if denoise else reference_at_end)
        results[name] = by_grid
        _write(partial_path, json.dumps(results))
        best = [min(by_nfe.get(str(n), np.inf) for by_nfe in by_grid.values()) for n in NFES]
        print(f"  {name:40s}", " ".join(f"{value:.2e}" for value in best), flush=True)
    return results


def adaptive_errors(model, noise, reference):
    """Error and mean NFE of the adaptive solvers at a few tolerances."""
    results = {}
    for name in ("dpm++12", "dpm++23", "dpm-solver-12", "dpm-solver-23"):
        for tolerance in (0.05, 0.01, 0.003):
            solver = _replace(sx.solvers.get(name), atol=tolerance, rtol=tolerance)
            x, info = sx.sample(model, solver, noise, t_end=T_END, denoise_to_zero=True)
            results[f"{name} tol={tolerance:g}"] = {
                "nfe": float(jnp.mean(info.nfe)),
                "error": rms_error(x, reference),
            }
    return results


# -- peers -------------------------------------------------------------------------------


def run_peers(problem, noise, args):
    mixture, schedule = problem
    x_start = np.asarray(schedule.sigma(1.0)) * np.asarray(noise, np.float64)
    with tempfile.TemporaryDirectory() as directory:
        problem_path = os.path.join(directory, "problem.npz")
        out_path = os.path.join(directory, "peers.npz")
        np.savez(
            problem_path,
            means=np.asarray(mixture.means, np.float64),
            stds=np.asarray(mixture.stds, np.float64),
            weights=np.asarray(mixture.weights, np.float64),
            betas=np.linspace(1e-4, 0.02, 1000),
            noise=x_start.astype(np.float32),
            nfes=np.array(NFES),
        )
        command = [args.peer_python, os.path.join(os.path.dirname(__file__), "peers", "peer_runner.py"),
                   "--problem", problem_path, "--out", out_path]
        if args.dpm_solver_path:
            command += ["--dpm-solver-path", args.dpm_solver_path]
        subprocess.run(command, check=True)
        with np.load(out_path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}


def reference_at(mixture, schedule, x_start, final_sigma, cache):
    """Exact ODE solution from t = 1 down to VE noise level final_sigma (0: the data)."""
    key = round(float(final_sigma), 12)
    if key not in cache:
        if key == 0.0:
            cache[key] = mixture.flow_to_data(x_start, schedule, 1.0)
        else:
            with jax.enable_x64(True):
                t_final = float(schedule.inverse_lambda(-np.log(final_sigma)))
            cache[key] = mixture.flow_map(x_start, schedule, 1.0, t_final)
    return cache[key]


def peer_errors(peers, mixture, schedule, x_start):
    """({config: {nfe: error}} against each config's own end point, {config: end}), where
    end is "sigma = 0" or "t_min" (the peer stops at its last noise level)."""
    cache = {}
    errors, ends = {}, {}
    for key in peers:
        if not key.startswith("samples/"):
            continue
        _, config, nfe = key.split("/")
        final_sigma = float(peers[f"final_sigma/{config}/{nfe}"])
        reference = reference_at(mixture, schedule, x_start, final_sigma, cache)
        errors.setdefault(config, {})[str(int(nfe))] = rms_error(peers[key], reference)
        ends[config] = "sigma = 0" if final_sigma == 0.0 else "t_min"
    return errors, ends


def agreement(peers, model, noise):
    """Relative RMS difference between samplax and a peer running the same algorithm on the
    same grid with the same end convention, in float32."""
    differences = {}
    for config, order in {**AGREEMENT_CONFIGS, **OFFICIAL_AGREEMENT_CONFIGS}.items():
        for nfe in NFES:
            key = f"samples/{config}/{nfe}"
            if key not in peers:
                continue
            theirs = peers[key]
            final_sigma = float(peers[f"final_sigma/{config}/{nfe}"])
            denoise = final_sigma == 0.0
            times = (np.asarray(peers[f"timesteps/{config}/{nfe}"], np.float64) + 1.0) / 1000.0
            if config.startswith("diffusers"):
                # diffusers: N timesteps, then a forced first-order step to sigma = 0, with
                # lower-order final steps below 15 timesteps.
                lower_order_final = len(times) < 15
            else:
                # DPM-Solver: the grid holds steps + 1 times; lower-order final below 10 steps.
                lower_order_final = len(times) - 1 < 10
            solver = sx.solvers.DPMSolver(order=order, method="multistep", prediction="data",
                                          lower_order_final=lower_order_final)
            ours, info = sx.sample(model, solver, noise, grid=times, denoise_to_zero=denoise)
            assert int(info.nfe) == nfe, (config, nfe, int(info.nfe))
            ours = np.asarray(ours, np.float64)
            differences.setdefault(config, {})[str(nfe)] = float(
                np.sqrt(np.mean((ours - theirs) ** 2)) / np.sqrt(np.mean(theirs**2))
            )
    return differences


# -- report ------------------------------------------------------------------------------


def best_by_nfe(errors_by_config):
    """{nfe: (error, configuration)} minimum over configurations."""
    best = {}
    for config, by_nfe in errors_by_config.items():
        for nfe, error in by_nfe.items():
            if np.isfinite(error) and (nfe not in best or error < best[nfe][0]):
                best[nfe] = (error, config)
    return best


def samplax_end(label):
    return "sigma = 0" if label.endswith("+denoise") else "t_min"


def markdown(report):
    lines = []
    peers = report.get("peers", {})
    peer_ends = report.get("peer_ends", {})
    libraries = {"diffusers": "diffusers_", "k-diffusion": "kdiff_", "DPM-Solver (official)": "dpmsolver_"}
    for end in ("sigma = 0", "t_min"):
        ours = {
            f"{name} [{label}]": by_nfe
            for name, by_grid in report["samplax"].items()
            for label, by_nfe in by_grid.items()
            if samplax_end(label) == end
        }
        rows = {"samplax (best)": best_by_nfe(ours)}
        for library, prefix in libraries.items():
            subset = {
                k: v for k, v in peers.items()
                if k.startswith(prefix) and "adaptive" not in k and peer_ends.get(k) == end
            }
            if subset:
                rows[f"{library} (best)"] = best_by_nfe(subset)
        title = "denoised to sigma = 0" if end == "sigma = 0" else f"stopping at t_min = {T_END} (sigma ~ 0.01)"
        lines.append(f"Runs {title}: lowest error over each library's configurations.")
        lines.append("")
        lines.append("| configuration | " + " | ".join(f"NFE {n}" for n in NFES) + " |")
        lines.append("|---|" + "---|" * len(NFES))
        for label, best in rows.items():
            cells = [f"{best[str(n)][0]:.2e}" if str(n) in best else "-" for n in NFES]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
        for label, best in rows.items():
            lines.append(f"- {label}: " + "; ".join(f"{n}: {best[str(n)][1]}" for n in NFES if str(n) in best))
        lines.append("")
    lines.append("| samplax solver (best grid) | " + " | ".join(f"NFE {n}" for n in NFES) + " |")
    lines.append("|---|" + "---|" * len(NFES))
    for name, by_grid in report["samplax"].items():
        cells = []
        for n in NFES:
            candidates = [(by_grid[k][str(n)], k) for k in by_grid if str(n) in by_grid[k]]
            cells.append(f"{min(candidates)[0]:.2e} ({min(candidates)[1]})" if candidates else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if peers:
        lines.append("")
        lines.append("| peer configuration | " + " | ".join(f"NFE {n}" for n in NFES) + " |")
        lines.append("|---|" + "---|" * len(NFES))
        for config, by_nfe in sorted(peers.items()):
            if "adaptive" in config:
                continue
            cells = " | ".join(f"{by_nfe[str(n)]:.2e}" if str(n) in by_nfe else "-" for n in NFES)
            lines.append(f"| {config} ({peer_ends.get(config, '?')}) | {cells} |")
    if report.get("agreement"):
        lines.append("")
        lines.append("Agreement with peers running the same algorithm on the same grid (relative RMS difference, float32):")
        lines.append("")
        lines.append("| peer configuration | " + " | ".join(f"NFE {n}" for n in NFES) + " |")
        lines.append("|---|" + "---|" * len(NFES))
        for config, by_nfe in report["agreement"].items():
            lines.append(f"| {config} | " + " | ".join(f"{by_nfe[str(n)]:.1e}" if str(n) in by_nfe else "-" for n in NFES) + " |")
    if report.get("adaptive"):
        lines.append("")
        lines.append("| adaptive solver | mean NFE | error |")
        lines.append("|---|---|---|")
        for name, entry in report["adaptive"].items():
            lines.append(f"| {name} | {entry['nfe']:.1f} | {entry['error']:.2e} |")
    return "\n".join(lines) + "\n"


def _write(path, text):
    """Write a file atomically: a temporary name in the same folder, then a rename."""
    with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(path), delete=False) as handle:
        handle.write(text)
    os.replace(handle.name, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000, help="number of noise samples")
    parser.add_argument("--peers", action="store_true", help="also run the peer implementations")
    parser.add_argument("--peer-python", default="/work/peers-venv/bin/python", help="python of the peer environment")
    parser.add_argument("--dpm-solver-path", default=None, help="path to the official dpm_solver_pytorch.py")
    parser.add_argument("--solvers", nargs="+", default=None, help="sweep only these solvers (default: all)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "dpm_benchmark.json"))
    args = parser.parse_args()

    mixture, schedule, noise, reference = diffusion_problem(args.samples)
    model = mixture.denoiser(schedule, "noise")
    noise = jnp.asarray(noise)
    report = {
        "command": " ".join(["python"] + sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, jax {jax.__version__}, {jax.devices()[0].device_kind}",
        "problem": {"dimension": mixture.dimension, "components": int(mixture.weights.shape[0]),
                    "samples": args.samples, "schedule": "DDPM linear betas 1e-4..0.02, 1000 steps",
                    "t_end": T_END},
    }
    print("samplax: error at NFE", NFES)
    x_start = np.asarray(schedule.sigma(1.0)) * np.asarray(noise, np.float64)
    reference_at_end = mixture.flow_map(x_start, schedule, 1.0, T_END)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    report["samplax"] = samplax_errors(model, noise, reference, reference_at_end, args.out[:-5] + ".partial.json", args.solvers)
    report["adaptive"] = adaptive_errors(model, noise, reference)
    if args.peers:
        peers = run_peers((mixture, schedule), noise, args)
        report["peers"], report["peer_ends"] = peer_errors(peers, mixture, schedule, x_start)
        report["agreement"] = agreement(peers, model, noise)
    text = markdown(report)
    _write(args.out, json.dumps(report, indent=1, default=str))
    _write(args.out[:-5] + ".md", text)
    print(text)


if __name__ == "__main__":
    main()
