"""Error versus NFE of every diffusion solver on the sharp Gaussian-mixture problem, side by
side with peer implementations (sampler overhead and compile time: overhead.py).

    python benchmarks/dpm_benchmark.py                       # samplax only
    python benchmarks/dpm_benchmark.py --peers               # + diffusers, k-diffusion, DPM-Solver
    python benchmarks/dpm_benchmark.py --keep-peers          # samplax again, the stored peers kept
    python benchmarks/dpm_benchmark.py --jax-peers           # + dpm_solver_jax.py and jax_deis
    python benchmarks/dpm_benchmark.py --seed 3 --out ...    # another mixture of the same family

The peers run in separate Python environments (see benchmarks/peers/README.md): the torch
ones given by --peer-python, the official DPM-Solver file by --dpm-solver-path, the JAX
ones (built by benchmarks/peers/build_jax_peers.sh) by --jax-peer-python and
--jax-peer-sources. --jax-peers can be combined with --peers or --keep-peers. Results go
to benchmarks/results/dpm_benchmark.json and a markdown table to
benchmarks/results/dpm_benchmark.md.

Every configuration is scored against the exact ODE solution at its own end point: sigma = 0
for runs that finish with a denoising step (all of ours, diffusers' DPM-Solver++ and
k-diffusion), or the last noise level where a peer stops there.
"""

from __future__ import annotations

import argparse
import dataclasses
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

from problems import (  # noqa: E402
    NFES,
    diffusion_problem,
    markdown_table,
    registered_solvers,
    rms_error,
    write_json,
    write_text,
)

import samplax as sx  # noqa: E402

T_END = 1e-3  # the schedule's smallest time, sigma ~ 0.01, followed by the denoising step
GRID_KINDS = ("logsnr", "karras", "uniform", "quadratic")
# Solvers also run stopping at T_END (as jax_deis and the official DPM-Solver do), together
# with their variants without lower-order final steps.
STOP_AT_END_SOLVERS = ("dpm++2m", "dpm++3m", "dpm++3m-taylor", "dpm++3s", "unipc-bh1-3", "unipc-bh2-3", "deis-tab3",
                       "deis-tab4", "deis-rhoab4")
NO_LOWER_ORDER_FINAL, LOWER_ORDER_FINAL = " (no lower-order final)", " (lower-order final)"
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
    """Every registered deterministic fixed-grid solver that integrates a data or noise
    prediction (or those of `names`), and, for multistep solvers with the option, the same
    solver with the opposite lower_order_final."""
    solvers = registered_solvers(
        lambda solver: not solver.adaptive and not solver.stochastic and solver.prediction in ("data", "noise"))
    unknown = sorted(set(names or ()) - set(solvers))
    if unknown:
        raise SystemExit(f"--solvers: {unknown} are not fixed-grid diffusion solvers; choose from {sorted(solvers)}")
    configurations = {}
    for name, solver in solvers.items():
        if names and name not in names:
            continue
        configurations[name] = solver
        if solver.multistep and _has_field(solver, "lower_order_final"):
            suffix = NO_LOWER_ORDER_FINAL if solver.lower_order_final else LOWER_ORDER_FINAL
            configurations[name + suffix] = dataclasses.replace(solver, lower_order_final=not solver.lower_order_final)
    return configurations


def _has_field(solver, name) -> bool:
    """Whether `name` is a hyperparameter of the solver that dataclasses.replace can set
    (UniPC's lower_order_final is its predictor's, so its variants are not built here)."""
    return name in {field.name for field in dataclasses.fields(solver)}


def solve(model, solver, noise, steps, kind, denoise):
    """`sx.sample` with share_compilation: the grid and the plan's coefficients are computed
    eagerly, so the compiled part is shared by every solver with the same number of stages
    and history size, which saves hundreds of compilations in this sweep."""
    x, info = sx.sample(model, solver, noise, steps=steps, grid=kind, t_end=T_END, denoise_to_zero=denoise,
                        share_compilation=True)
    assert int(info.nfe) == solver.evaluations(steps, denoise)
    return x


def samplax_errors(model, noise, reference, reference_at_end, partial_path, names=None):
    """{configuration: {grid: {nfe: error}}} for every solver, grid and NFE. "+denoise" runs
    steps = NFE - 1 and the denoising step (scored against the sigma = 0 endpoint); the
    plain grid, run for STOP_AT_END_SOLVERS (and their variants) only, takes steps = NFE and stops at T_END
    (scored against the exact solution there). Finished solvers are kept in partial_path,
    so an interrupted sweep resumes where it stopped."""
    results = json.loads(open(partial_path).read()) if os.path.exists(partial_path) else {}
    for name, solver in diffusion_solvers(names).items():
        if name in results:
            continue
        by_grid = {}
        base_name = name.removesuffix(NO_LOWER_ORDER_FINAL).removesuffix(LOWER_ORDER_FINAL)
        conventions = (True, False) if base_name in STOP_AT_END_SOLVERS else (True,)
        for kind in GRID_KINDS:
            for denoise in conventions:
                label = kind + ("+denoise" if denoise else "")
                by_grid[label] = {}
                for nfe in NFES:
                    steps = solver.steps_for(nfe, denoise)
                    if steps is not None:
                        x = solve(model, solver, noise, steps, kind, denoise)
                        by_grid[label][str(nfe)] = rms_error(x, reference if denoise else reference_at_end)
        results[name] = by_grid
        write_json(partial_path, results, indent=None)
        best = [min(by_nfe.get(str(n), np.inf) for by_nfe in by_grid.values()) for n in NFES]
        print(f"  {name:40s}", " ".join(f"{value:.2e}" for value in best), flush=True)
    return results


def adaptive_errors(model, noise, reference):
    """Error and mean NFE of the adaptive solvers at a few tolerances."""
    results = {}
    adaptive = registered_solvers(lambda s: s.adaptive and s.prediction in ("data", "noise"), distinct=True)
    for name, registered in adaptive.items():
        for tolerance in (0.05, 0.01, 0.003):
            solver = dataclasses.replace(registered, atol=tolerance, rtol=tolerance)
            x, info = sx.sample(model, solver, noise, t_end=T_END, denoise_to_zero=True)
            results[f"{name} tol={tolerance:g}"] = {
                "nfe": float(jnp.mean(info.nfe)),
                "error": rms_error(x, reference),
            }
    return results


# -- peers -------------------------------------------------------------------------------


def run_peers(problem, noise, args, torch_peers: bool, jax_peers: bool):
    """The peers' results npz (as a dict), from the torch runner and/or the JAX runner."""
    mixture, schedule = problem
    x_start = np.asarray(schedule.sigma(1.0)) * np.asarray(noise, np.float64)
    peers_directory = os.path.join(os.path.dirname(__file__), "peers")
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        problem_path = os.path.join(directory, "problem.npz")
        np.savez(
            problem_path,
            means=np.asarray(mixture.means, np.float64),
            stds=np.asarray(mixture.stds, np.float64),
            weights=np.asarray(mixture.weights, np.float64),
            betas=np.linspace(1e-4, 0.02, 1000),
            noise=x_start.astype(np.float32),
            nfes=np.array(NFES),
        )
        commands = []
        if torch_peers:
            command = [args.peer_python, os.path.join(peers_directory, "peer_runner.py")]
            if args.dpm_solver_path:
                command += ["--dpm-solver-path", args.dpm_solver_path]
            commands.append(command)
        if jax_peers:
            commands.append([args.jax_peer_python, os.path.join(peers_directory, "jax_peer_runner.py"),
                             "--sources", args.jax_peer_sources])
        for number, command in enumerate(commands):
            out_path = os.path.join(directory, f"peers{number}.npz")
            subprocess.run(command + ["--problem", problem_path, "--out", out_path], check=True)
            with np.load(out_path, allow_pickle=False) as data:
                results.update({key: data[key] for key in data.files if key not in ("configs", "versions")})
    return results


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


def jax_deis_same_grid(peers, peer_error, model, noise, reference_at_end):
    """jax_deis's tAB-r and rhoAB-r against samplax's DEIS of order r + 1 (the same
    polynomial) on jax_deis's own grid (its integer indices i as t = (i + 1) / 1000), ending
    where it ends (t_min), with and without lower-order final steps:
    {config: {nfe: {"jax_deis": error, "samplax": error, "samplax (lower-order final)": error}}}."""
    table = {}
    for key in sorted(peers):
        if not key.startswith("samples/jaxdeis_") or "ipndm" in key:
            continue
        _, config, nfe = key.split("/")
        method, degree = config.split("_")[1][:-1], int(config.split("_")[1][-1])
        times = jnp.asarray((np.asarray(peers[f"timesteps/{config}/{nfe}"], np.float64) + 1.0) / 1000.0, jnp.float32)
        row = {"jax_deis": peer_error[config][nfe]}
        for label, lower in (("samplax", False), ("samplax (lower-order final)", True)):
            solver = sx.solvers.DEIS(method=method, order=degree + 1, lower_order_final=lower)
            x, info = sx.sample(model, solver, noise, grid=times)
            assert int(info.nfe) == int(nfe), (config, nfe, int(info.nfe))
            row[label] = rms_error(x, reference_at_end)
        table.setdefault(config, {})[nfe] = row
    return table


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


def _nfe_table(first, rows) -> list[str]:
    """A table with one column per NFE: rows are (label, {nfe: cell})."""
    header = [first] + [f"NFE {n}" for n in NFES]
    return markdown_table(header, [[label] + [cells.get(str(n), "-") for n in NFES] for label, cells in rows])


def markdown(report):
    lines = []
    peers = report.get("peers", {})
    peer_ends = report.get("peer_ends", {})
    libraries = {"diffusers": "diffusers_", "k-diffusion": "kdiff_", "DPM-Solver (official)": "dpmsolver_",
                 "dpm_solver_jax": "dpmsolverjax_", "jax_deis": "jaxdeis_"}
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
        lines += _nfe_table("configuration", [
            (label, {n: f"{error:.2e}" for n, (error, _) in best.items()}) for label, best in rows.items()
        ])
        lines.append("")
        for label, best in rows.items():
            lines.append(f"- {label}: " + "; ".join(f"{n}: {best[str(n)][1]}" for n in NFES if str(n) in best))
        lines.append("")
    rows = []
    for name, by_grid in report["samplax"].items():
        cells = {}
        for n in NFES:
            candidates = [(by_grid[k][str(n)], k) for k in by_grid if str(n) in by_grid[k]]
            if candidates:
                cells[str(n)] = f"{min(candidates)[0]:.2e} ({min(candidates)[1]})"
        rows.append((name, cells))
    lines += _nfe_table("samplax solver (best grid)", rows)
    if peers:
        lines.append("")
        lines += _nfe_table("peer configuration", [
            (f"{config} ({peer_ends.get(config, '?')})", {n: f"{error:.2e}" for n, error in by_nfe.items()})
            for config, by_nfe in sorted(peers.items())
            if "adaptive" not in config
        ])
    if report.get("agreement"):
        lines.append("")
        lines.append(
            "Agreement with peers running the same algorithm on the same grid (relative RMS difference, float32):"
        )
        lines.append("")
        lines += _nfe_table("peer configuration", [
            (config, {n: f"{difference:.1e}" for n, difference in by_nfe.items()})
            for config, by_nfe in report["agreement"].items()
        ])
    if report.get("jax_deis_same_grid"):
        lines += ["", "jax_deis tAB-r / rhoAB-r beside samplax DEIS of order r + 1 (the same polynomial) on "
                  "jax_deis's own grid, ending at t_min: jax_deis / samplax / samplax with lower-order final:", ""]
        lines += _nfe_table("jax_deis configuration", [
            (config, {n: " / ".join(f"{row[k]:.2e}" for k in ("jax_deis", "samplax", "samplax (lower-order final)"))
                      for n, row in by_nfe.items()})
            for config, by_nfe in report["jax_deis_same_grid"].items()
        ])
    if report.get("adaptive"):
        lines.append("")
        lines += markdown_table(["adaptive solver", "mean NFE", "error"], [
            [name, f"{entry['nfe']:.1f}", f"{entry['error']:.2e}"] for name, entry in report["adaptive"].items()
        ])
    return "\n".join(lines) + "\n"


def _stored_peers(path, samples, seed) -> dict:
    """The peers' part of an existing results file (and the command that made it)."""
    if not os.path.isfile(path):
        raise SystemExit(f"--keep-peers needs an existing results file; {path} does not exist")
    with open(path) as file:
        stored = json.load(file)
    if stored["problem"]["samples"] != samples:
        raise SystemExit(f"--keep-peers: {path} has {stored['problem']['samples']} samples, not {samples}")
    if stored["problem"].get("seed", 0) != seed:
        raise SystemExit(f"--keep-peers: {path} is for mixture seed {stored['problem'].get('seed', 0)}, not {seed}")
    return {key: stored[key] for key in ("command", "peers", "peer_ends", "agreement", "jax_deis_same_grid")
            if key in stored}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000, help="number of noise samples")
    parser.add_argument("--peers", action="store_true", help="also run the peer implementations")
    parser.add_argument("--peer-python", default="/work/peers-venv/bin/python", help="python of the peer environment")
    parser.add_argument("--dpm-solver-path", default=None, help="path to the official dpm_solver_pytorch.py")
    parser.add_argument("--jax-peers", action="store_true", help="also run dpm_solver_jax.py and jax_deis")
    parser.add_argument("--jax-peer-python", default="/work/jax-peers/venv/bin/python",
                        help="python of the JAX peers' environment (build_jax_peers.sh)")
    parser.add_argument("--jax-peer-sources", default="/work/jax-peers/src",
                        help="folder with the patched dpm_solver_jax.py and jax_deis/ (build_jax_peers.sh)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mixture (0: the benchmark problem)")
    parser.add_argument("--solvers", nargs="+", default=None, help="sweep only these solvers (default: all)")
    parser.add_argument("--keep-peers", action="store_true",
                        help="rerun samplax only and keep the peers' results (and agreement) already in --out")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "dpm_benchmark.json"))
    args = parser.parse_args()
    if args.keep_peers and args.peers:
        parser.error("--keep-peers keeps the stored peer results; --peers runs them again: choose one")
    stored = _stored_peers(args.out, args.samples, args.seed) if args.keep_peers else {}

    mixture, schedule, noise, reference = diffusion_problem(args.samples, seed=args.seed)
    model = mixture.denoiser(schedule, "noise")
    noise = jnp.asarray(noise)
    report = {
        "command": " ".join(["python"] + sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, jax {jax.__version__}, "
        f"{jax.devices()[0].device_kind}",
        "problem": {"dimension": mixture.dimension, "components": int(mixture.weights.shape[0]),
                    "samples": args.samples, "seed": args.seed, "schedule": "DDPM linear betas 1e-4..0.02, 1000 steps",
                    "t_end": T_END},
    }
    print("samplax: error at NFE", NFES)
    x_start = np.asarray(schedule.sigma(1.0)) * np.asarray(noise, np.float64)
    reference_at_end = mixture.flow_map(x_start, schedule, 1.0, T_END)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    partial = args.out[:-5] + ".partial.json"
    report["samplax"] = samplax_errors(model, noise, reference, reference_at_end, partial, args.solvers)
    report["adaptive"] = adaptive_errors(model, noise, reference)
    if stored:
        report.update(stored, command=f"{stored['command']}` then `{report['command']}")
    if args.peers or args.jax_peers:
        peers = run_peers((mixture, schedule), noise, args, args.peers, args.jax_peers)
        errors, ends = peer_errors(peers, mixture, schedule, x_start)
        report["peers"] = {**report.get("peers", {}), **errors}
        report["peer_ends"] = {**report.get("peer_ends", {}), **ends}
        if args.peers:
            report["agreement"] = agreement(peers, model, noise)
        if args.jax_peers:
            report["jax_deis_same_grid"] = jax_deis_same_grid(peers, errors, model, noise, reference_at_end)
    text = markdown(report)
    write_json(args.out, report)
    write_text(args.out[:-5] + ".md", text)
    print(text)


if __name__ == "__main__":
    main()
