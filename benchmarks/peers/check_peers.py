"""Make a small Gaussian-mixture problem and check peer results against an exact reference.

Runs in the peers environment (numpy and scipy only). Usage:

    python benchmarks/peers/check_peers.py make-problem --out problem.npz
    python benchmarks/peers/check_peers.py check --problem problem.npz --results results.npz

The reference solves the probability-flow ODE of the mixture in VE form,
x_ve = x / alpha and s = sigma / alpha:

    dx_ve/ds = s * sum_k w_k(x_ve, s) (x_ve - mu_k) / (s_k^2 + s^2),

with scipy's DOP853 at rtol 1e-10, from s_max (DDPM index 999, x_ve = noise / alpha)
down to every final noise level a peer ended at. This is the same ODE as
dy/dlambda = e^lambda x0_hat with y = x / sigma, but it stays smooth at s = 0, so
peers that end on clean data (final sigma 0) are checked exactly. A peer's VP-scale
sample at final level s_f is compared with x_ve(s_f) / sqrt(1 + s_f^2).
"""

import argparse
import json
import sys

import numpy as np
from scipy.integrate import solve_ivp
from scipy.special import logsumexp


def make_problem(seed=0, dim=64, components=8, batch=256):
    """A seeded isotropic Gaussian mixture with DDPM linear betas and a batch of noise."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(components, dim)) / np.sqrt(dim)
    stds = np.linspace(0.05, 0.25, components)
    weights = rng.dirichlet(np.full(components, 5.0))
    return dict(
        means=means,
        stds=stds,
        weights=weights,
        betas=np.linspace(1e-4, 0.02, 1000, dtype=np.float64),
        noise=rng.normal(size=(batch, dim)).astype(np.float32),
        nfes=np.array([5, 6, 8, 10, 15, 20]),
    )


def ve_velocity(x, s, means, stds, log_weights):
    """dx_ve/ds of the mixture's probability-flow ODE; x of shape (B, D)."""
    var = stds**2 + s**2
    diff = x[:, None, :] - means[None]
    log_prob = log_weights - 0.5 * (diff**2).sum(-1) / var - 0.5 * x.shape[-1] * np.log(var)
    weights = np.exp(log_prob - logsumexp(log_prob, axis=-1, keepdims=True))
    return s * np.einsum("bk,bkd->bd", weights / var, diff)


def reference(problem, final_sigmas, rtol=1e-10, atol=1e-10):
    """Exact-ODE VP-scale states at each final VE sigma: dict sigma -> (B, D)."""
    alphas_cumprod = np.cumprod(1.0 - problem["betas"])
    s_max = np.sqrt((1 - alphas_cumprod[-1]) / alphas_cumprod[-1])
    noise = problem["noise"].astype(np.float64)
    shape = noise.shape
    x_start = noise * np.sqrt(1 + s_max**2)
    means, stds = problem["means"], problem["stds"]
    log_weights = np.log(problem["weights"])

    def rhs(s, flat):
        return ve_velocity(flat.reshape(shape), s, means, stds, log_weights).ravel()

    targets = np.unique(final_sigmas)[::-1]
    solution = solve_ivp(rhs, (s_max, 0.0), x_start.ravel(), method="DOP853", t_eval=targets, rtol=rtol, atol=atol)
    if not solution.success:
        raise RuntimeError(f"reference ODE solve failed: {solution.message}")
    print(f"reference: DOP853 rtol={rtol:g}, {solution.nfev} RHS evaluations, "
          f"final sigmas {', '.join(f'{s:.6g}' for s in targets)}", file=sys.stderr)
    return {s: solution.y[:, i].reshape(shape) / np.sqrt(1 + s**2) for i, s in enumerate(targets)}


def load_results(path):
    """Results npz -> {config: {nfe: {field: array}}}."""
    data = np.load(path)
    results = {}
    for key in data.files:
        if key.count("/") != 2:
            continue
        field, config, nfe = key.split("/")
        results.setdefault(config, {}).setdefault(int(nfe), {})[field] = data[key]
    return results


def check(problem, results):
    """RMS error table {config: {nfe: error}} against the reference."""
    finals = [float(entry["final_sigma"]) for runs in results.values() for entry in runs.values()]
    refs = reference(problem, np.array(finals))
    table = {}
    for config, runs in results.items():
        table[config] = {}
        for nfe, entry in sorted(runs.items()):
            ref = refs[float(entry["final_sigma"])]
            table[config][nfe] = float(np.sqrt(np.mean((entry["samples"] - ref) ** 2)))
    return table


def print_table(table, nfes):
    """Print RMS errors, a row per config and a column per NFE; rows whose NFEs differ
    (Heun, adaptive) list error@NFE. 'falls' compares the largest NFE with the smallest."""
    print(f"{'config':46s} " + " ".join(f"{n:>8d}" for n in nfes) + "  falls")
    for config, errors in table.items():
        if set(errors) <= set(nfes):
            cells = " ".join(f"{errors[n]:8.2e}" if n in errors else f"{'-':>8s}" for n in nfes)
        else:
            cells = " ".join(f"{errors[n]:.2e}@{n}" for n in sorted(errors))
        ordered = [errors[n] for n in sorted(errors)]
        falls = "-" if len(ordered) < 2 else ("yes" if ordered[-1] < ordered[0] else "NO")
        print(f"{config:46s} {cells}  {falls}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make-problem", help="write a seeded problem npz")
    make.add_argument("--out", required=True)
    make.add_argument("--seed", type=int, default=0)
    run = sub.add_parser("check", help="compare results with the exact reference")
    run.add_argument("--problem", required=True)
    run.add_argument("--results", required=True)
    run.add_argument("--json", help="also write the error table as JSON")
    args = parser.parse_args()

    if args.command == "make-problem":
        np.savez(args.out, **make_problem(args.seed))
        return
    problem = dict(np.load(args.problem))
    table = check(problem, load_results(args.results))
    print_table(table, [int(n) for n in problem["nfes"]])
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(table, handle, indent=1)


if __name__ == "__main__":
    main()
