"""The command line and the results file every peer runner shares, with no framework
imported, so that the torch runners and the JAX runner (each in its own environment) use
the same code."""

import argparse
import json
import os
import tempfile

import numpy as np


def save_npz(path, arrays):
    """Write the npz atomically (temporary file, then rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".npz", delete=False) as handle:
        np.savez(handle, **arrays)
    os.replace(handle.name, path)


def parse_arguments(description, problem_fields, extra=()):
    """The arguments every peer runner takes (--problem, --out, --only, --force, and
    `extra`: (flag, help) pairs), refusing to overwrite --out without --force. Returns
    (args, problem), the problem npz as a dict of arrays."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--problem", required=True, help=f"problem npz ({problem_fields})")
    parser.add_argument("--out", required=True, help="results npz to write")
    for flag, text in extra:
        parser.add_argument(flag, help=text)
    parser.add_argument("--only", default="", help="run only configs whose name contains this string")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    args = parser.parse_args()
    if os.path.exists(args.out) and not args.force:
        parser.error(f"--out {args.out} exists; pass --force to overwrite it")
    return args, dict(np.load(args.problem))


def store_result(arrays, name, result) -> None:
    """Put one run's result (samples, nfe, timesteps, sigmas, model_t, wall_s) into `arrays`
    under name/NFE, with the NFE the run used, and print a line about it. A run whose NFE
    is already stored for that config is left out."""
    key = f"{name}/{result['nfe']}"
    if f"samples/{key}" in arrays:
        return
    for field in ("samples", "nfe", "timesteps", "sigmas", "model_t", "wall_s"):
        arrays[f"{field}/{key}"] = np.asarray(result[field])
    arrays[f"final_sigma/{key}"] = np.asarray(result["sigmas"][-1], dtype=np.float64)
    finite = np.isfinite(result["samples"]).all()
    warning = "" if finite else "  NON-FINITE SAMPLES"
    print(f"{name:44s} nfe={result['nfe']:4d} wall={result['wall_s']:.3f}s{warning}", flush=True)


def run_jobs(jobs, only, targets):
    """Run every job whose name contains `only` at each NFE of targets(job). A job is a
    dict of what describes it (kept as its config) and "run", a function of the NFE that
    returns a result for store_result. Returns (arrays, configs)."""
    arrays, configs = {}, {}
    for name, job in jobs.items():
        if only not in name:
            continue
        job = dict(job)
        run = job.pop("run")
        configs[name] = job
        for target in targets(job):
            store_result(arrays, name, run(target))
    return arrays, configs


def save_results(path, arrays, configs, versions) -> None:
    """The results npz: the runs' arrays, and the configs and versions as JSON strings."""
    arrays = dict(arrays, configs=np.asarray(json.dumps(configs, indent=1, default=str)),
                  versions=np.asarray(json.dumps(versions)))
    save_npz(path, arrays)
