"""Flow samplers and inversion on a sharp Gaussian mixture under the rectified-flow path.

Sampling: RMS error at t = 0 against the exact ODE endpoint, for NFE in {4, 6, 8, 10, 16,
20}, for every flow solver (and the exponential integrators that reach sigma = 0 on this
schedule), each on several time grids. Inversion: data (the exact endpoints) -> noise ->
data with NFE per direction in {8, 16, 32, 60}: the distance of the inverted noise from
the exact ODE inverse (the noise the data came from) and the round-trip error.

With --peers, diffusers' flow samplers (FlowMatchEuler, and DPM-Solver++ and UniPC with flow
sigmas) run on the same mixture and noise in the peer environment (benchmarks/peers/README.md,
--peer-python) and are scored against the same reference.

    python benchmarks/flow_benchmark.py [--samples 500] [--quick] [--peers]

Writes benchmarks/results/flow_benchmark.json and benchmarks/FLOW_RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from problems import (  # noqa: E402
    markdown_table,
    rectified_flow_problem,
    registered_solvers,
    rms_error,
    write_json,
    write_text,
)

import samplax as sx  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent
SAMPLING_NFES = (4, 6, 8, 10, 16, 20)
INVERSION_NFES = (8, 16, 32, 60)
# Exponential integrators through the Denoiser (velocity -> data prediction) that reach
# t = 0 (lambda = +inf) on this schedule; see FLOW_RESULTS.md for the ones that do not.
EXPONENTIAL_SOLVERS = ("dpm++2m", "dpm++3m", "unipc-bh2-2")
QUICK_SOLVERS = ("euler", "fireflow", "reversible-heun")  # --quick: a smoke test
SHIFTS = (3.0, 0.5, 1.0 / 3.0)
SCHEDULE = sx.schedules.RectifiedFlow()
PEER_RUNNER = ROOT / "peers" / "flow_peer_runner.py"
# FlowMatchEuler (shift 1) at large NFE: it must converge to the reference (sign/time check).
CONVERGENCE_CONFIG, CONVERGENCE_NFES = "diffusers_flowmatch_euler_shift1", (100, 1000)


def flow_solvers() -> dict:
    """Every registered fixed-grid solver of the velocity (the reversible ones included)."""
    return registered_solvers(lambda solver: solver.prediction == "velocity" and not solver.adaptive)


def adaptive_flow_solvers() -> dict:
    return registered_solvers(lambda solver: solver.prediction == "velocity" and solver.adaptive, distinct=True)


def is_reversible(name: str) -> bool:
    return sx.solvers.get(name).reversible


def sampled_solvers() -> list[str]:
    """What the sampling sweep runs, in table order: the flow solvers, the exponential
    integrators, then the reversible solvers."""
    flow = list(flow_solvers())
    return [n for n in flow if not is_reversible(n)] + list(EXPONENTIAL_SOLVERS) + [n for n in flow if is_reversible(n)]


# Exponential integrators step in lambda, infinite at t = 1 and t = 0 on this path: they
# start just below t = 1 and stop at t_end > 0, then take the denoising step to t = 0.
# Two ends are tried: t = 1e-3, and t = 1 / NFE, where diffusers' flow DPM-Solver++ and
# UniPC take their last first-order step to 0 from.
EXPONENTIAL_T_START = 1.0 - 1e-5
EXPONENTIAL_ENDS = {"": lambda nfe: 1e-3, "@1/N": lambda nfe: 1.0 / nfe}
SHORT_GRIDS = {"uniform": "u", "shift-3": "s3", "shift-0.5": "s0.5", "shift-0.33": "s0.33"}


def short_grid(name: str) -> str:
    """'shift-0.5@1/N' -> 's0.5@1/N' for the tables."""
    base, _, end = name.partition("@")
    return SHORT_GRIDS[base] + ("@" + end if end else "")


def grids(steps: int, t_start=None, t_end=None) -> dict:
    """The grids every solver is tried on: uniform in t, and the SD3/FLUX shift with s = 3
    (denser near noise) and s = 1/2, 1/3 (denser near data)."""
    found = {"uniform": sx.solvers.time_grid(SCHEDULE, steps, "uniform", t_start, t_end)}
    for shift in SHIFTS:
        found[f"shift-{shift:.2g}"] = sx.solvers.time_grid(SCHEDULE, steps, "shifted", t_start, t_end, shift=shift)
    return found


def run_sampling(model, noise, reference, solvers):
    """One row per solver, NFE and grid. Flow solvers run from t = 1 to 0; exponential
    integrators (which integrate a data or noise prediction) run between the ends of
    EXPONENTIAL_ENDS and finish with the denoising step."""
    rows = []
    for name in solvers:
        solver = sx.solvers.get(name)
        exponential = solver.prediction != "velocity"
        for nfe in SAMPLING_NFES:
            steps = solver.steps_for(nfe, exponential)
            if steps is None:
                continue
            if exponential:
                candidates = {
                    grid_name + suffix: times
                    for suffix, t_end in EXPONENTIAL_ENDS.items()
                    for grid_name, times in grids(steps, EXPONENTIAL_T_START, t_end(nfe)).items()
                }
            else:
                candidates = grids(steps)
            for grid_name, times in candidates.items():
                start = time.perf_counter()
                try:
                    x, info = sx.sample(model, solver, noise, grid=times, denoise_to_zero=exponential)
                    error = rms_error(x, reference)
                except FloatingPointError:
                    error = float("nan")
                rows.append({"solver": name, "nfe": nfe, "steps": steps, "grid": grid_name, "rms_error": error,
                             "seconds": time.perf_counter() - start})
                print(f"sample {name:14s} nfe {nfe:3d} {grid_name:10s} {error:.3e}", flush=True)
    return rows


def run_inversion(model, noise, reference, solvers):
    """data -> noise -> data with the same solver and grid; a reversible solver keeps its
    companion state (samplax.reversible_invert / reversible_sample)."""
    data = jnp.asarray(reference, jnp.float32)
    rows = []
    for name in solvers:
        solver = sx.solvers.get(name)
        for nfe in INVERSION_NFES:
            steps = solver.steps_for(nfe)
            if steps is None:
                continue
            for grid_name, times in grids(steps).items():
                if solver.reversible:
                    state, _ = sx.reversible_invert(model, data, grid=times)
                    back, _ = sx.reversible_sample(model, state, grid=times)
                    inverted = state.x
                else:
                    inverted, _ = sx.invert(model, solver, data, grid=times)
                    back, _ = sx.sample(model, solver, inverted, grid=times)
                row = {"solver": name, "nfe_per_direction": nfe, "steps": steps, "grid": grid_name,
                       "noise_error": rms_error(inverted, noise), "round_trip_error": rms_error(back, data),
                       "round_trip_max": float(jnp.max(jnp.abs(back - data)))}
                rows.append(row)
                print(f"invert {name:14s} nfe {nfe:3d} {grid_name:10s} noise {row['noise_error']:.3e} "
                      f"round trip {row['round_trip_error']:.3e}", flush=True)
    return rows


def run_adaptive(model, noise, reference):
    rows = []
    for name, registered in adaptive_flow_solvers().items():
        for tolerance in (1e-3, 1e-5):
            solver = dataclasses.replace(registered, rtol=tolerance, atol=tolerance)
            x, info = sx.sample(model, solver, noise)
            rows.append({"solver": name, "tolerance": tolerance, "mean_nfe": float(jnp.mean(info.nfe)),
                         "rms_error": rms_error(x, reference)})
            print(f"adaptive {name} tol {tolerance:g}: nfe {rows[-1]['mean_nfe']:.1f} "
                  f"error {rows[-1]['rms_error']:.3e}")
    return rows


def _run_peer_runner(mixture, noise, nfes, only, peer_python, directory) -> dict:
    """Run flow_peer_runner.py on the mixture and noise for `nfes`; its output arrays."""
    problem, out = os.path.join(directory, f"problem{only}.npz"), os.path.join(directory, f"peers{only}.npz")
    np.savez(problem, means=np.asarray(mixture.means, np.float64), stds=np.asarray(mixture.stds, np.float64),
             weights=np.asarray(mixture.weights, np.float64), noise=noise, nfes=np.array(nfes))
    subprocess.run([peer_python, str(PEER_RUNNER), "--problem", problem, "--out", out, "--only", only], check=True)
    with np.load(out) as data:
        return {key: data[key] for key in data.files}


def _peer_rows(peers, reference):
    """One row per config and NFE: RMS error against the t = 0 reference."""
    configs = json.loads(str(peers["configs"]))
    rows = []
    for key in peers:
        if key.startswith("samples/"):
            _, config, nfe = key.split("/")
            rows.append({"solver": config, "scheduler": configs[config]["scheduler"], "nfe": int(nfe),
                         "rms_error": rms_error(peers[key], reference),
                         "final_sigma": float(peers[f"final_sigma/{config}/{nfe}"])})
    return rows


def run_peers(mixture, model, noise, reference, peer_python):
    """diffusers' flow samplers on the same problem, scored against the same reference; the
    FlowMatchEuler convergence check; and samplax Euler on FlowMatchEuler's own grids, which
    must agree with it to float32 rounding (same sign and time convention)."""
    with tempfile.TemporaryDirectory() as directory:
        peers = _run_peer_runner(mixture, noise, SAMPLING_NFES, "", peer_python, directory)
        convergence = _run_peer_runner(mixture, noise, CONVERGENCE_NFES, CONVERGENCE_CONFIG, peer_python, directory)
    sampling, convergence = _peer_rows(peers, reference), _peer_rows(convergence, reference)
    for row in sampling + convergence:
        print(f"peer {row['solver']:44s} nfe {row['nfe']:4d} {row['rms_error']:.3e}", flush=True)
    agreement = []
    for key in peers:
        if key.startswith("samples/diffusers_flowmatch_euler"):
            _, config, nfe = key.split("/")
            grid = jnp.asarray(peers[f"sigmas/{config}/{nfe}"], jnp.float32)
            ours, _ = sx.sample(model, "euler", noise, grid=grid)
            agreement.append({"solver": config, "nfe": int(nfe),
                              "relative_difference": rms_error(ours, peers[key]) / rms_error(peers[key], 0.0)})
    return {"sampling": sampling, "convergence": convergence,
            "euler_agreement": agreement, "configs": json.loads(str(peers["configs"])),
            "versions": json.loads(str(peers["versions"]))}


def _lowest(rows, criterion="rms_error"):
    """The row with the smallest finite `criterion`, or None."""
    finite = [r for r in rows if np.isfinite(r[criterion])]
    return min(finite, key=lambda r: r[criterion]) if finite else None


def _best(rows, criterion, solver, nfe_key, nfe):
    """The row of `solver` at `nfe` with the smallest finite `criterion`, or None."""
    return _lowest([r for r in rows if r["solver"] == solver and r[nfe_key] == nfe], criterion)


def _peer_name(config: str) -> str:
    return config.removeprefix("diffusers_")


PEER_LABELS = {"FlowMatchEulerDiscreteScheduler": "diffusers FlowMatchEuler",
               "DPMSolverMultistepScheduler": "diffusers DPM-Solver++ (flow sigmas)",
               "UniPCMultistepScheduler": "diffusers UniPC (flow sigmas)"}


def _peer_markdown(results) -> tuple[list, list]:
    """The side-by-side rows for the sampling table, and the peers' own section."""
    ours, peers = results["sampling"], results["peers"]
    best_ours = {nfe: _lowest([r for r in ours if r["nfe"] == nfe]) for nfe in SAMPLING_NFES}
    rows = [["**samplax, best**"] + [
        f"**{best_ours[n]['rms_error']:.2e}** ({best_ours[n]['solver']}, {short_grid(best_ours[n]['grid'])})"
        for n in SAMPLING_NFES]]
    best_peer = {}
    for scheduler in dict.fromkeys(r["scheduler"] for r in peers["sampling"]):
        cells = []
        for nfe in SAMPLING_NFES:
            best = _lowest([r for r in peers["sampling"] if r["scheduler"] == scheduler and r["nfe"] == nfe])
            cells.append("-" if best is None else f"{best['rms_error']:.2e} ({_peer_name(best['solver'])})")
            if best is not None and best["rms_error"] < best_peer.get(nfe, np.inf):
                best_peer[nfe] = best["rms_error"]
        rows.append([f"{PEER_LABELS[scheduler]}, best config"] + cells)
    ratios = [f"{best_peer[n] / best_ours[n]['rms_error']:.2f}" for n in SAMPLING_NFES]
    rows.append(["best peer / best samplax"] + ratios)
    wins = all(best_peer[n] > best_ours[n]["rms_error"] for n in SAMPLING_NFES)
    versions = peers["versions"]
    section = [
        "",
        "## diffusers' flow samplers on the same problem",
        "",
        f"diffusers {versions['diffusers']} (torch {versions['torch']}, CPU) run by "
        "`benchmarks/peers/flow_peer_runner.py` in the peer environment on the same mixture, the same noise "
        "at t = 1 and the same reference at t = 0. The model is the exact velocity noise - x0 computed in "
        "float64 in torch and returned as float32; diffusers' flow sigma is our t. NFE = model calls counted "
        "in the model wrapper (= inference steps for all three schedulers). "
        f"samplax's best beats every peer config at every NFE: **{'yes' if wins else 'no'}**.",
        "",
        "All configs (RMS error at t = 0; NaN where the output is not finite):",
        "",
    ]
    configs = []
    for config in dict.fromkeys(r["solver"] for r in peers["sampling"]):
        errors = {r["nfe"]: r["rms_error"] for r in peers["sampling"] if r["solver"] == config}
        configs.append([_peer_name(config)] + [f"{errors[n]:.2e}" if n in errors else "-" for n in SAMPLING_NFES])
    section += markdown_table(["config"] + [f"NFE {n}" for n in SAMPLING_NFES], configs)
    convergence = ", ".join(f"NFE {r['nfe']}: {r['rms_error']:.2e}" for r in peers["convergence"])
    agreement = max(r["relative_difference"] for r in peers["euler_agreement"])
    section += [
        "",
        "Conventions checked:",
        "",
        f"- {_peer_name(CONVERGENCE_CONFIG)} converges to the reference: {convergence} "
        "(first order).",
        "- samplax's Euler on FlowMatchEuler's own sigma grids reproduces its samples to a relative RMS "
        f"difference of at most {agreement:.1e} (float32), at every NFE and shift.",
        "",
        "Peer behaviour to know (details in benchmarks/peers/README.md):",
        "",
        "- FlowMatchEuler calls the model at `timestep / 1000` = sigma. With shift 3 it shifts the end of "
        "its range twice: its last nonzero sigma is about 0.009 instead of 0.003.",
        "- DPM-Solver++ and UniPC use `use_flow_sigmas=True`, `prediction_type=\"flow_prediction\"`. "
        "DPM-Solver++ starts at sigma = shift(0.999), UniPC at 1 - 1e-6, from the noise as given; both end "
        "with a first-order step to sigma = 0. Their `timesteps` are `int64(1000 sigma)`: configs without a "
        "suffix call the model at `timestep / 1000`, as a pipeline does, `_sigma_t` configs at the "
        "scheduler's own float sigma.",
        "- UniPC bh1 returns NaN with `final_sigmas_type=\"zero\"`. The bh1 configs use `\"sigma_min\"`: "
        "their last step has zero length, so they stop at the last grid sigma (1/N before the shift) and are "
        "scored there against the t = 0 reference.",
    ]
    return rows, section


def _inversion_table(inversion, column, cell) -> list[str]:
    """One row per solver, one column per NFE per direction; cell(solver, rows) formats
    the rows (one per grid) of that solver and NFE."""
    rows = []
    for solver in dict.fromkeys(r["solver"] for r in inversion):
        by_nfe = [[r for r in inversion if r["solver"] == solver and r["nfe_per_direction"] == nfe]
                  for nfe in INVERSION_NFES]
        rows.append([solver] + [cell(solver, found) for found in by_nfe])
    return markdown_table(["solver"] + [column.format(n) for n in INVERSION_NFES], rows)


def _round_trip_cell(solver, rows) -> str:
    """Noise error / round-trip error on the grid of lowest round-trip error. A reversible
    solver's round trip is rounding on every grid: its grid is picked by the noise error,
    and its max abs round-trip error is shown."""
    if is_reversible(solver):
        best = _lowest(rows, "noise_error")
        return "-" if best is None else f"{best['noise_error']:.2e} / {best['round_trip_max']:.1e} max"
    best = _lowest(rows, "round_trip_error")
    return "-" if best is None else f"{best['noise_error']:.2e} / {best['round_trip_error']:.2e}"


def _noise_cell(solver, rows) -> str:
    best = _lowest(rows, "noise_error")
    return "-" if best is None else f"{best['noise_error']:.2e} ({short_grid(best['grid'])})"


def markdown(results) -> str:
    sampling, inversion = results["sampling"], results["inversion"]
    solvers = list(dict.fromkeys(r["solver"] for r in sampling))
    lines = [
        "## Flow samplers on a sharp Gaussian mixture (rectified-flow path)",
        "",
        f"64-D mixture of 8 components (stds 0.05-0.25), {results['samples']} samples, exact velocity, float32; "
        "RMS error at t = 0 against the exact ODE endpoint (Dopri8, float64). Each entry is the solver's best "
        "grid among uniform and shifts s = 3, 1/2, 1/3 (in brackets: u, s3, s0.5, s0.33); '-' where no whole "
        f"number of steps spends that NFE. Command: `{results.get('command', 'python benchmarks/flow_benchmark.py')}`; "
        f"machine: {results['machine']}.",
        "",
    ]
    rows = []
    for solver in solvers:
        cells = []
        for nfe in SAMPLING_NFES:
            best = _best(sampling, "rms_error", solver, "nfe", nfe)
            cells.append("-" if best is None else f"{best['rms_error']:.2e} ({short_grid(best['grid'])})")
        rows.append([solver] + cells)
    peer_rows, peer_section = _peer_markdown(results) if "peers" in results else ([], [])
    lines += markdown_table(["solver"] + [f"NFE {n}" for n in SAMPLING_NFES], rows + peer_rows)
    lines += ["", "Adaptive reference solves (mean NFE per sample, RMS error):", ""]
    for row in results["adaptive"]:
        lines.append(f"- {row['solver']} rtol = atol = {row['tolerance']:g}: NFE {row['mean_nfe']:.1f}, "
                     f"error {row['rms_error']:.2e}")
    lines += [
        "",
        "## Inversion on the same problem",
        "",
        "Data = the exact endpoints; invert to t = 1 and sample back with the same solver and grid. "
        "'noise' is the RMS distance of the inverted noise from the exact ODE inverse, 'round trip' the RMS "
        "error of data -> noise -> data (max abs error for reversible Heun). Best grid per entry, chosen by "
        "round-trip error (by noise error for reversible Heun).",
        "",
    ]
    lines += _inversion_table(inversion, "NFE/dir {}: noise / round trip", _round_trip_cell)
    lines += ["", "Distance of the inverted noise from the exact ODE inverse, best grid per entry:", ""]
    lines += _inversion_table(inversion, "NFE/dir {}", _noise_cell)
    lines += [
        "",
        "Notes:",
        "",
        "- fireflow-3 is samplax's third-order extension of FireFlow (same N + 1 evaluations; "
        "`samplax.solvers.FireFlow(order=3)`); rf-solver-2 equals midpoint to rounding, as it must.",
        "- Reversible Heun (`samplax.reversible_invert` / `reversible_sample`) keeps the noise and its "
        "companion state; the round trip is exact up to float32 rounding at every NFE. Its inverted noise "
        "is a second-order approximation of the exact inverse.",
        "- Exponential integrators run through the Denoiser (velocity -> data prediction) from "
        "t = 1 - 1e-5 to t_end and finish with the denoising step to t = 0 (NFE = steps + 1): "
        "lambda = log(alpha / sigma) is infinite at t = 1 and t = 0 on this path. Two ends are tried, "
        "t_end = 1e-3 and t_end = 1/NFE (marked @1/N), the end of diffusers' flow DPM-Solver++ and UniPC.",
    ]
    lines += peer_section
    return "\n".join(lines) + "\n"


def write_markdown(json_path: pathlib.Path, markdown_path: pathlib.Path) -> None:
    """Rewrite the markdown tables from a results file."""
    write_text(markdown_path, markdown(json.loads(json_path.read_text())))


def update(args, model, noise, reference) -> None:
    """Replace the sampling rows of some solvers in an existing results file."""
    solvers = tuple(name.strip() for name in args.update.split(","))
    unknown = [name for name in solvers if name not in sampled_solvers()]
    if unknown:
        raise SystemExit(f"--update: unknown solvers {unknown}")
    if not args.output.is_file():
        raise SystemExit(f"--update needs an existing results file; {args.output} does not exist")
    results = json.loads(args.output.read_text())
    if results["samples"] != args.samples:
        raise SystemExit(f"--update: {args.output} has {results['samples']} samples, not {args.samples}")
    rows = run_sampling(model, noise, reference, solvers)
    results["sampling"] = [r for r in results["sampling"] if r["solver"] not in solvers] + rows
    command = " ".join(["python", "benchmarks/flow_benchmark.py", *sys.argv[1:]])
    results["command"] = results["command"] + f"` then `{command}"
    write_json(args.output, results)
    write_text(args.markdown, markdown(results))
    print(markdown(results))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="a few solvers only, for a smoke test")
    parser.add_argument("--peers", action="store_true", help="also run diffusers' flow samplers")
    parser.add_argument("--peer-python", default="/work/peers-venv/bin/python", help="python of the peer environment")
    parser.add_argument("--output", type=pathlib.Path, default=ROOT / "results" / "flow_benchmark.json")
    parser.add_argument("--markdown", type=pathlib.Path, default=ROOT / "FLOW_RESULTS.md")
    parser.add_argument("--update", metavar="SOLVERS",
                        help="rerun only the sampling rows of these solvers (comma-separated) and merge them into "
                        "the existing --output, keeping every other row and the peers' results")
    args = parser.parse_args()
    started = time.perf_counter()
    mixture, model, noise, reference = rectified_flow_problem(args.samples)
    if args.update:
        update(args, model, noise, reference)
        return
    sampled, inverted = sampled_solvers(), list(flow_solvers())
    if args.quick:
        sampled, inverted = ([name for name in names if name in QUICK_SOLVERS] for names in (sampled, inverted))
    results = {
        "samples": args.samples,
        "command": " ".join(["python", "benchmarks/flow_benchmark.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, jax {jax.__version__} "
        f"on {jax.default_backend()}",
        "sampling": run_sampling(model, noise, reference, sampled),
        "inversion": run_inversion(model, noise, reference, sorted(inverted, key=is_reversible)),
        "adaptive": [] if args.quick else run_adaptive(model, noise, reference),
    }
    if args.peers:
        results["peers"] = run_peers(mixture, model, noise, reference, args.peer_python)
    results["seconds"] = time.perf_counter() - started
    write_json(args.output, results)
    write_text(args.markdown, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
