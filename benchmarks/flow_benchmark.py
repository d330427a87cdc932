"""Flow samplers and inversion on a sharp Gaussian mixture under the rectified-flow path.

Sampling: RMS error at t = 0 against the exact ODE endpoint, for NFE in {4, 6, 8, 10, 16,
20}, for every flow solver (and the exponential integrators that reach sigma = 0 on this
schedule), each on several time grids. Inversion: data (the exact endpoints) -> noise ->
data with NFE per direction in {8, 16, 32, 60}: the distance of the inverted noise from
the exact ODE inverse (the noise the data came from) and the round-trip error.

    python benchmarks/flow_benchmark.py [--samples 500] [--quick]

Writes benchmarks/results/flow_benchmark.json and benchmarks/FLOW_RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
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
# start just below t = 1 and stop at t = 1e-3, then take the denoising step to t = 0.
EXPONENTIAL_T_START, EXPONENTIAL_T_END = 1.0 - 1e-5, 1e-3


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
            ends = (EXPONENTIAL_T_START, EXPONENTIAL_T_END) if exponential else (None, None)
            for grid_name, times in grids(steps, *ends).items():
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


def _best(rows, criterion, solver, nfe_key, nfe):
    """The row of `solver` at `nfe` with the smallest finite `criterion`, or None."""
    candidates = [r for r in rows if r["solver"] == solver and r[nfe_key] == nfe and np.isfinite(r[criterion])]
    return min(candidates, key=lambda r: r[criterion]) if candidates else None


def markdown(results) -> str:
    sampling, inversion = results["sampling"], results["inversion"]
    solvers = list(dict.fromkeys(r["solver"] for r in sampling))
    lines = [
        "## Flow samplers on a sharp Gaussian mixture (rectified-flow path)",
        "",
        f"64-D mixture of 8 components (stds 0.05-0.25), {results['samples']} samples, exact velocity, float32; "
        "RMS error at t = 0 against the exact ODE endpoint (Dopri8, float64). Each entry is the solver's best "
        "grid among uniform and shifts s = 3, 1/2, 1/3 (in brackets: u, s3, s0.5, s0.33); '-' where no whole "
        "number of steps spends that NFE. Command: `python benchmarks/flow_benchmark.py`; machine: "
        f"{results['machine']}.",
        "",
        "| solver | " + " | ".join(f"NFE {n}" for n in SAMPLING_NFES) + " |",
        "|---" * (len(SAMPLING_NFES) + 1) + "|",
    ]
    short = {"uniform": "u", "shift-3": "s3", "shift-0.5": "s0.5", "shift-0.33": "s0.33"}
    for solver in solvers:
        cells = []
        for nfe in SAMPLING_NFES:
            best = _best(sampling, "rms_error", solver, "nfe", nfe)
            cells.append("-" if best is None else f"{best['rms_error']:.2e} ({short[best['grid']]})")
        lines.append(f"| {solver} | " + " | ".join(cells) + " |")
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
            cells.append("-" if best is None else f"{best['noise_error']:.2e} ({short[best['grid']]})")
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
        "t = 1 - 1e-5 to t = 1e-3 and finish with the denoising step to t = 0 (NFE = steps + 1): "
        "lambda = log(alpha / sigma) is infinite at t = 1 and t = 0 on this path.",
    ]
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="a few solvers only, for a smoke test")
    parser.add_argument("--output", type=pathlib.Path, default=ROOT / "results" / "flow_benchmark.json")
    parser.add_argument("--markdown", type=pathlib.Path, default=ROOT / "FLOW_RESULTS.md")
    args = parser.parse_args()
    started = time.perf_counter()
    _, model, noise, reference = rectified_flow_problem(args.samples)
    flow = ("euler", "fireflow") if args.quick else FLOW_SOLVERS
    exponential = () if args.quick else EXPONENTIAL_SOLVERS
    results = {
        "samples": args.samples,
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, jax {jax.__version__} "
        f"on {jax.default_backend()}",
        "sampling": run_sampling(model, noise, reference, flow + exponential + (REVERSIBLE,)),
        "inversion": run_inversion(model, noise, reference, flow + (REVERSIBLE,)),
        "adaptive": [] if args.quick else run_adaptive(model, noise, reference),
    }
    results["seconds"] = time.perf_counter() - started
    _write_atomic(args.output, json.dumps(results, indent=1))
    _write_atomic(args.markdown, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
