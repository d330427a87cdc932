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

import samplax as sx
from samplax.samplers.reversible import reversible_invert, reversible_sample

ROOT = pathlib.Path(__file__).resolve().parent
DIMENSION, COMPONENTS, STD_RANGE = 64, 8, (0.05, 0.25)
SAMPLING_NFES = (4, 6, 8, 10, 16, 20)
INVERSION_NFES = (8, 16, 32, 60)
FLOW_SOLVERS = ("euler", "heun", "midpoint", "rk4", "rf-solver-2", "rf-solver-3", "fireflow", "fireflow-3")
# Exponential integrators through the Denoiser (velocity -> data prediction) that reach
# t = 0 (lambda = +inf) on this schedule; see FLOW_RESULTS.md for the ones that do not.
EXPONENTIAL_SOLVERS = ("dpm++2m", "dpm++3m", "unipc-bh2-2")
REVERSIBLE = "reversible-heun"
SHIFTS = (3.0, 0.5, 1.0 / 3.0)
SCHEDULE = sx.schedules.RectifiedFlow()
PEER_RUNNER = ROOT / "peers" / "flow_peer_runner.py"
# FlowMatchEuler (shift 1) at large NFE: it must converge to the reference (sign/time check).
CONVERGENCE_CONFIG, CONVERGENCE_NFES = "diffusers_flowmatch_euler_shift1", (100, 1000)


def exact_velocity_network(mixture: sx.GaussianMixture):
    """The exact rectified-flow velocity E[noise | x_t] - E[x0 | x_t] of the mixture, with
    the noise posterior mean written without dividing by t, so it stays finite at t = 0."""

    def network(x, t):
        dtype = x.dtype
        alpha, sigma = (1.0 - t)[:, None, None], t[:, None, None]
        means, stds = mixture.means.astype(dtype), mixture.stds.astype(dtype)
        variance = alpha**2 * stds[None, :, None] ** 2 + sigma**2
        difference = x[:, None, :] - alpha * means[None]
        log_density = (
            jnp.log(mixture.weights.astype(dtype))
            - 0.5 * jnp.sum(difference**2, axis=-1) / variance[..., 0]
            - 0.5 * x.shape[-1] * jnp.log(variance[..., 0])
        )
        posterior = jax.nn.softmax(log_density, axis=-1)[..., None]
        data = jnp.sum(posterior * (means[None] + alpha * stds[None, :, None] ** 2 / variance * difference), 1)
        noise = jnp.sum(posterior * (sigma / variance * difference), 1)
        return noise - data

    return sx.Denoiser(jax.tree_util.Partial(network), SCHEDULE, prediction="velocity")


def rectified_flow_problem(samples: int, seed: int = 0, noise_seed: int = 1):
    """(mixture, model, noise, reference): the sharp mixture of benchmarks/problems.py, its
    exact velocity, standard normal noise at t = 1 and the exact ODE endpoints at t = 0."""
    mixture = sx.GaussianMixture.random(seed, DIMENSION, COMPONENTS, STD_RANGE)
    noise = np.asarray(jax.random.normal(jax.random.PRNGKey(noise_seed), (samples, DIMENSION)))
    # lambda(1) = -inf: start the reference 1e-9 before t = 1 (the state moves by ~1e-9).
    reference = mixture.flow_to_data(noise, SCHEDULE, 1.0 - 1e-9)
    return mixture, exact_velocity_network(mixture), noise.astype(np.float32), reference


def rms(x, reference) -> float:
    return float(np.sqrt(np.mean((np.asarray(x, np.float64) - np.asarray(reference, np.float64)) ** 2)))


def steps_for(name: str, nfe: int) -> int | None:
    """Grid intervals that spend exactly `nfe` evaluations, or None if none do."""
    if name in ("fireflow", "fireflow-3", REVERSIBLE):
        return nfe - 1
    stages = sx.solvers.get(name).evaluations(1)
    return nfe // stages if nfe % stages == 0 else None


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
    rows = []
    for name in solvers:
        for nfe in SAMPLING_NFES:
            exponential = name in EXPONENTIAL_SOLVERS
            steps = nfe - 1 if exponential else steps_for(name, nfe)
            if steps is None or steps < 1:
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
                    if name == REVERSIBLE:
                        x, info = reversible_sample(model, noise, grid=times)
                    else:
                        x, info = sx.sample(model, name, noise, grid=times, denoise_to_zero=exponential)
                    error = rms(x, reference)
                except FloatingPointError:
                    error = float("nan")
                rows.append({"solver": name, "nfe": nfe, "steps": steps, "grid": grid_name, "rms_error": error,
                             "seconds": time.perf_counter() - start})
                print(f"sample {name:14s} nfe {nfe:3d} {grid_name:10s} {error:.3e}", flush=True)
    return rows


def run_inversion(model, noise, reference, solvers):
    data = jnp.asarray(reference, jnp.float32)
    rows = []
    for name in solvers:
        for nfe in INVERSION_NFES:
            steps = steps_for(name, nfe)
            if steps is None:
                continue
            for grid_name, times in grids(steps).items():
                if name == REVERSIBLE:
                    state, _ = reversible_invert(model, data, grid=times)
                    back, _ = reversible_sample(model, state, grid=times)
                    inverted = state.x
                else:
                    inverted, _ = sx.invert(model, name, data, grid=times)
                    back, _ = sx.sample(model, name, inverted, grid=times)
                row = {"solver": name, "nfe_per_direction": nfe, "steps": steps, "grid": grid_name,
                       "noise_error": rms(inverted, noise), "round_trip_error": rms(back, data),
                       "round_trip_max": float(jnp.max(jnp.abs(back - data)))}
                rows.append(row)
                print(f"invert {name:14s} nfe {nfe:3d} {grid_name:10s} noise {row['noise_error']:.3e} "
                      f"round trip {row['round_trip_error']:.3e}", flush=True)
    return rows


def run_adaptive(model, noise, reference):
    rows = []
    for method in ("tsit5", "dopri5"):
        for tolerance in (1e-3, 1e-5):
            solver = sx.solvers.FlowAdaptive(method=method, rtol=tolerance, atol=tolerance)
            x, info = sx.sample(model, solver, noise)
            rows.append({"solver": f"flow-{method}", "tolerance": tolerance, "mean_nfe": float(jnp.mean(info.nfe)),
                         "rms_error": rms(x, reference)})
            print(f"adaptive {method} tol {tolerance:g}: nfe {rows[-1]['mean_nfe']:.1f} "
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
                         "rms_error": rms(peers[key], reference),
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
                              "relative_difference": rms(ours, peers[key]) / rms(peers[key], 0.0)})
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
    rows = ["| **samplax, best** | " + " | ".join(
        f"**{best_ours[n]['rms_error']:.2e}** ({best_ours[n]['solver']}, {short_grid(best_ours[n]['grid'])})"
        for n in SAMPLING_NFES) + " |"]
    best_peer = {}
    for scheduler in dict.fromkeys(r["scheduler"] for r in peers["sampling"]):
        cells = []
        for nfe in SAMPLING_NFES:
            best = _lowest([r for r in peers["sampling"] if r["scheduler"] == scheduler and r["nfe"] == nfe])
            cells.append("-" if best is None else f"{best['rms_error']:.2e} ({_peer_name(best['solver'])})")
            if best is not None and best["rms_error"] < best_peer.get(nfe, np.inf):
                best_peer[nfe] = best["rms_error"]
        rows.append(f"| {PEER_LABELS[scheduler]}, best config | " + " | ".join(cells) + " |")
    rows.append("| best peer / best samplax | " + " | ".join(
        f"{best_peer[n] / best_ours[n]['rms_error']:.2f}" for n in SAMPLING_NFES) + " |")
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
        "| config | " + " | ".join(f"NFE {n}" for n in SAMPLING_NFES) + " |",
        "|---" * (len(SAMPLING_NFES) + 1) + "|",
    ]
    for config in dict.fromkeys(r["solver"] for r in peers["sampling"]):
        errors = {r["nfe"]: r["rms_error"] for r in peers["sampling"] if r["solver"] == config}
        section.append(f"| {_peer_name(config)} | "
                       + " | ".join(f"{errors[n]:.2e}" if n in errors else "-" for n in SAMPLING_NFES) + " |")
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
        "| solver | " + " | ".join(f"NFE {n}" for n in SAMPLING_NFES) + " |",
        "|---" * (len(SAMPLING_NFES) + 1) + "|",
    ]
    for solver in solvers:
        cells = []
        for nfe in SAMPLING_NFES:
            best = _best(sampling, "rms_error", solver, "nfe", nfe)
            cells.append("-" if best is None else f"{best['rms_error']:.2e} ({short_grid(best['grid'])})")
        lines.append(f"| {solver} | " + " | ".join(cells) + " |")
    peer_rows, peer_section = _peer_markdown(results) if "peers" in results else ([], [])
    lines += peer_rows
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
        "| solver | " + " | ".join(f"NFE/dir {n}: noise / round trip" for n in INVERSION_NFES) + " |",
        "|---" * (len(INVERSION_NFES) + 1) + "|",
    ]
    for solver in dict.fromkeys(r["solver"] for r in inversion):
        cells = []
        for nfe in INVERSION_NFES:
            # Reversible Heun's round trip is rounding on every grid: pick its grid by the noise error.
            criterion = "noise_error" if solver == REVERSIBLE else "round_trip_error"
            best = _best(inversion, criterion, solver, "nfe_per_direction", nfe)
            if best is None:
                cells.append("-")
            elif solver == REVERSIBLE:
                cells.append(f"{best['noise_error']:.2e} / {best['round_trip_max']:.1e} max")
            else:
                cells.append(f"{best['noise_error']:.2e} / {best['round_trip_error']:.2e}")
        lines.append(f"| {solver} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Distance of the inverted noise from the exact ODE inverse, best grid per entry:",
        "",
        "| solver | " + " | ".join(f"NFE/dir {n}" for n in INVERSION_NFES) + " |",
        "|---" * (len(INVERSION_NFES) + 1) + "|",
    ]
    for solver in dict.fromkeys(r["solver"] for r in inversion):
        cells = []
        for nfe in INVERSION_NFES:
            best = _best(inversion, "noise_error", solver, "nfe_per_direction", nfe)
            cells.append("-" if best is None else f"{best['noise_error']:.2e} ({short_grid(best['grid'])})")
        lines.append(f"| {solver} | " + " | ".join(cells) + " |")
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


def _write_atomic(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temporary, path)


def write_markdown(json_path: pathlib.Path, markdown_path: pathlib.Path) -> None:
    """Rewrite the markdown table from a results file."""
    _write_atomic(markdown_path, markdown(json.loads(json_path.read_text())))


def update(args, model, noise, reference) -> None:
    """Replace the sampling rows of some solvers in an existing results file."""
    solvers = tuple(name.strip() for name in args.update.split(","))
    unknown = [name for name in solvers if name not in FLOW_SOLVERS + EXPONENTIAL_SOLVERS + (REVERSIBLE,)]
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
    _write_atomic(args.output, json.dumps(results, indent=1))
    _write_atomic(args.markdown, markdown(results))
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
    flow = ("euler", "fireflow") if args.quick else FLOW_SOLVERS
    exponential = () if args.quick else EXPONENTIAL_SOLVERS
    results = {
        "samples": args.samples,
        "command": " ".join(["python", "benchmarks/flow_benchmark.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, jax {jax.__version__} "
        f"on {jax.default_backend()}",
        "sampling": run_sampling(model, noise, reference, flow + exponential + (REVERSIBLE,)),
        "inversion": run_inversion(model, noise, reference, flow + (REVERSIBLE,)),
        "adaptive": [] if args.quick else run_adaptive(model, noise, reference),
    }
    if args.peers:
        results["peers"] = run_peers(mixture, model, noise, reference, args.peer_python)
    results["seconds"] = time.perf_counter() - started
    _write_atomic(args.output, json.dumps(results, indent=1))
    _write_atomic(args.markdown, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
