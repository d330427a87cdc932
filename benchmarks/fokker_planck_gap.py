"""The ODE-SDE gap of trained models, with and without the Fokker-Planck penalty.

For each problem (two 2-D toys and the 8x8 digits), weight of the penalty and seed, a
model is trained (MLP, VP-linear schedule, noise prediction; `denoising_loss` with
`fokker_planck_weight`) and measured:

- the gap: the distance between its ODE samples (dpm++2m, 100 steps) and its SDE samples
  (dpm++2m-sde, 200 steps, the reverse SDE) from the same starting noise;
- each sampler's distance to held-out data;
- the ODE log-likelihood of held-out data (nats per point on 2000 toy points, exact divergence;
  bits/dim of the uniformly dequantised 17-level digits, Hutchinson with one probe);
- the training time, and its ratio to the unpenalised run of the same seed.

Distances are sliced Wasserstein-2 on the toys and Frechet distances in the digits
classifier's features on the digits. The floor is the distance between two independent
held-out sets of the same size. Deveney et al. (2023) report that the penalty improves
the ODE samples and may worsen the SDE samples; the table shows what we find.

    python benchmarks/fokker_planck_gap.py                 # everything (about 40 minutes on 2 cores)
    python benchmarks/fokker_planck_gap.py --weights 0 1 3 --problems checkerboard
    python benchmarks/fokker_planck_gap.py --cost          # milliseconds per training step
    python benchmarks/fokker_planck_gap.py --problems checkerboard --seeds 0 --steps 300 --samples 500
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from problems import markdown_table, write_json, write_text

import samplax as sx
from samplax import metrics
from samplax.models import data, losses, networks, training
from samplax.models.pretrained import as_denoiser

RESULTS = os.path.join(os.path.dirname(__file__), "results")
TOYS = ("checkerboard", "eight-gaussians")
PROBLEMS = (*TOYS, "digits")
WEIGHTS = {"checkerboard": (0.0, 1.0), "eight-gaussians": (0.0, 1.0), "digits": (0.0, 1.0)}
# The penalty is evaluated on this many samples of each batch (its cost is third-order
# differentiation); the toys use the exact divergence, the digits (64 dimensions) Hutchinson's.
SETTINGS = {
    "toy": {"width": 128, "batch_size": 256, "penalty_samples": 32, "divergence": "exact", "steps": 1000,
            "samples": 20_000},
    "digits": {"width": 256, "batch_size": 128, "penalty_samples": 16, "divergence": "hutchinson", "steps": 2000,
               "samples": 4000},
}
SCHEDULE = sx.schedules.VPLinear()
LIKELIHOOD_POINTS = 2000  # held-out toy points whose log-likelihood is computed
ODE, ODE_STEPS = "dpm++2m", 100
SDE, SDE_STEPS = "dpm++2m-sde", 200


def problem_data(problem: str, held_out: int):
    """(training points, held-out points, two independent sets for the floor), each
    (n, dimension)."""
    if problem == "digits":  # too few held-out digits to split: the floor compares train and test
        train = data.digits("train").images.reshape(-1, 64)
        test = data.digits("test").images.reshape(-1, 64)
        return train, test, (train[: test.shape[0]], test)
    train = data.toy(problem, 20_000, seed=0)
    test = data.toy(problem, 2 * held_out, seed=1)
    return train, test[:held_out], (test[:held_out], test[held_out:])


def train(problem: str, weight: float, seed: int, steps: int):
    """(Denoiser of the EMA weights, training seconds)."""
    kind = "digits" if problem == "digits" else "toy"
    settings = SETTINGS[kind]
    train_points, _, _ = problem_data(problem, 1)
    model = networks.build(
        "MLP", {"dimension": train_points.shape[1], "width": settings["width"], "depth": 3}, seed=seed
    )
    loss = losses.denoising_loss(
        SCHEDULE,
        "noise",
        fokker_planck_weight=weight,
        fokker_planck_divergence=settings["divergence"],
        fokker_planck_samples=settings["penalty_samples"],
    )
    config = training.TrainConfig(
        steps=steps, batch_size=settings["batch_size"], warmup_steps=min(100, steps // 10), ema_decay=0.995,
        seed=seed, checkpoint_every=0,
    )
    result = training.train(model, loss, {"x": train_points}, config, progress=False)
    return as_denoiser(result.ema, SCHEDULE, "noise"), result.seconds


def _distance(problem: str, a, b) -> float:
    if problem == "digits":
        return metrics.frechet_distance(
            metrics.classifier_features(a.reshape(-1, 8, 8, 1)), metrics.classifier_features(b.reshape(-1, 8, 8, 1))
        )
    return metrics.sliced_wasserstein(a, b)


def _held_out_likelihood(problem: str, model, test, seed: int) -> float:
    key = jax.random.key(1000 + seed)
    if problem == "digits":
        levels = np.rint((test + 1.0) * 8.0).astype(np.int32)  # the 17 grey levels 0..16
        bits, _ = sx.bits_per_dim(model, levels, key=key, levels=17, divergence=sx.Hutchinson(1))
        return float(jnp.mean(bits))
    log_p, _ = sx.log_likelihood(model, jnp.asarray(test[:LIKELIHOOD_POINTS]))
    return float(jnp.mean(log_p))


def evaluate(problem: str, model, seed: int, samples: int) -> dict:
    _, test, (first, second) = problem_data(problem, samples)
    noise = jax.random.normal(jax.random.key(seed), (samples, test.shape[1]))
    ode, _ = sx.sample(model, ODE, noise, steps=ODE_STEPS)
    sde, _ = sx.sample(model, SDE, noise, steps=SDE_STEPS, key=jax.random.key(100 + seed))
    ode, sde = np.asarray(ode), np.asarray(sde)
    return {
        "gap": _distance(problem, ode, sde),
        "ode_to_data": _distance(problem, ode, test),
        "sde_to_data": _distance(problem, sde, test),
        "floor": _distance(problem, first, second),
        "held_out_likelihood": _held_out_likelihood(problem, model, test, seed),
    }


def run(problems, seeds, steps, samples, weights=None) -> list[dict]:
    rows = []
    for problem in problems:
        kind = "digits" if problem == "digits" else "toy"
        for seed in seeds:
            for weight in weights or WEIGHTS[problem]:
                print(f"training {problem}, weight {weight:g}, seed {seed}", flush=True)
                model, seconds = train(problem, weight, seed, steps or SETTINGS[kind]["steps"])
                row = {"problem": problem, "weight": weight, "seed": seed, "train_seconds": seconds,
                       **evaluate(problem, model, seed, samples or SETTINGS[kind]["samples"])}
                print({key: round(value, 4) if isinstance(value, float) else value for key, value in row.items()},
                      flush=True)
                rows.append(row)
    return rows


def summary(rows) -> list[dict]:
    """Mean and spread over seeds per (problem, weight), with the gap's change and the
    train-time ratio against weight 0 of the same seeds."""
    table = []
    for problem in dict.fromkeys(row["problem"] for row in rows):
        base = {row["seed"]: row for row in rows if row["problem"] == problem and row["weight"] == 0.0}
        for weight in dict.fromkeys(row["weight"] for row in rows if row["problem"] == problem):
            group = [row for row in rows if row["problem"] == problem and row["weight"] == weight]
            entry = {"problem": problem, "weight": weight, "seeds": len(group)}
            for name in ("gap", "ode_to_data", "sde_to_data", "floor", "held_out_likelihood", "train_seconds"):
                values = np.array([row[name] for row in group])
                entry[name] = float(values.mean())
                entry[name + "_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            paired = [row for row in group if row["seed"] in base]
            if paired:
                entry["gap_change"] = float(np.mean([row["gap"] / base[row["seed"]]["gap"] - 1.0 for row in paired]))
                entry["time_ratio"] = float(np.mean([
                    row["train_seconds"] / base[row["seed"]]["train_seconds"] for row in paired
                ]))
            table.append(entry)
    return table


COST_CASES = {  # name: (network, its arguments, data, batch size, penalty divergence, penalty samples)
    "toy MLP, exact, 32 of 256": ("MLP", {"dimension": 2, "width": 128, "depth": 3}, "toy", 256, "exact", 32),
    "toy MLP, exact, all 256": ("MLP", {"dimension": 2, "width": 128, "depth": 3}, "toy", 256, "exact", None),
    "digits MLP, Hutchinson, 16 of 128": ("MLP", {"dimension": 64, "width": 256, "depth": 3}, "digits", 128,
                                          "hutchinson", 16),
    "digits UNet (train.py), Hutchinson, 16 of 64": ("UNet", {
        "channels": 1, "widths": [24, 48], "blocks_per_level": 1, "attention_levels": [], "heads": 1, "groups": 8,
        "time_features": 32, "time_scale": 1.0, "num_classes": 10}, "images", 64, "hutchinson", 16),
}


def step_cost(steps: int = 40) -> list[dict]:
    """Milliseconds per training step without and with the penalty (weight 1), compile
    excluded: the time between the training loop's first and last logged steps."""
    rows = []
    for name, (network, arguments, kind, batch_size, divergence, samples) in COST_CASES.items():
        points = {"toy": data.toy("checkerboard", 4096), "digits": data.digits("train").images.reshape(-1, 64),
                  "images": data.digits("train").images}[kind]
        schedule = sx.schedules.VPDiscrete.ddpm_linear() if network == "UNet" else SCHEDULE
        time_input = "discrete" if network == "UNet" else "continuous"
        costs = []
        for weight in (0.0, 1.0):
            loss = losses.denoising_loss(schedule, "noise", time_input, fokker_planck_weight=weight,
                                         fokker_planck_divergence=divergence, fokker_planck_samples=samples)
            config = training.TrainConfig(steps=steps, batch_size=batch_size, warmup_steps=1, checkpoint_every=0)
            marks = []
            training.train(networks.build(network, arguments, seed=0), loss, {"x": points}, config, progress=False,
                           callback=lambda step, value, marks=marks: marks.append((step, time.perf_counter())))
            (first_step, first_time), (last_step, last_time) = marks[0], marks[-1]
            costs.append(1000.0 * (last_time - first_time) / (last_step - first_step))
        rows.append({"case": name, "plain_ms": costs[0], "penalty_ms": costs[1], "ratio": costs[1] / costs[0]})
        print(rows[-1], flush=True)
    return rows


def markdown(report) -> str:
    lines = [
        "# ODE-SDE gap with and without the Fokker-Planck penalty",
        "",
        f"Command: `{report['command']}`; machine: {report['machine']}.",
        f"ODE {ODE} ({ODE_STEPS} steps) and SDE {SDE} ({SDE_STEPS} steps) from the same noise; "
        f"samples per sampler {report['samples']}; mean +- std over seeds {report['seeds']}. "
        "Distances: sliced W2 (toys), Frechet distance in classifier features (digits). "
        "Likelihood: nats per point (toys, higher is better), "
        "bits/dim of dequantised 17-level digits (lower is better). Gap change and time ratio are against "
        "weight 0 with the same seed.",
        "",
    ]

    def cell(entry, name, digits=4):
        return f"{entry[name]:.{digits}f} +- {entry[name + '_std']:.{digits}f}"

    header = ["problem", "weight", "gap", "gap change", "ODE to data", "SDE to data", "floor", "held-out likelihood",
              "train s", "time ratio"]
    rows = [
        [entry["problem"], f"{entry['weight']:g}", cell(entry, "gap"), f"{100 * entry.get('gap_change', 0.0):+.0f}%",
         cell(entry, "ode_to_data"), cell(entry, "sde_to_data"), cell(entry, "floor"),
         cell(entry, "held_out_likelihood", 3), f"{entry['train_seconds']:.0f}", f"{entry.get('time_ratio', 1.0):.2f}"]
        for entry in report["summary"]
    ]
    lines += markdown_table(header, rows)
    if report.get("cost"):
        lines += ["", "Cost of a training step (ms, compile excluded; `python benchmarks/fokker_planck_gap.py "
                  "--cost`), without and with the penalty (weight 1):", ""]
        lines += markdown_table(
            ["case", "plain", "with penalty", "ratio"],
            [[row["case"], f"{row['plain_ms']:.1f}", f"{row['penalty_ms']:.1f}", f"{row['ratio']:.2f}"]
             for row in report["cost"]],
        )
    return "\n".join(lines) + "\n"


def _machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", choices=PROBLEMS, default=list(PROBLEMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--weights", nargs="+", type=float, help="override the weights tried on every problem")
    parser.add_argument("--steps", type=int, help="training steps (default: 1000 on the toys, 2000 on the digits)")
    parser.add_argument("--samples", type=int,
                        help="samples per sampler (default: 20000 on the toys, 4000 on the digits)")
    parser.add_argument("--cost", action="store_true", help="only measure the cost per training step")
    parser.add_argument("--out", default=os.path.join(RESULTS, "fokker_planck_gap.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    cost_path = args.out[:-5] + "_cost.json"
    if args.cost:  # kept beside the main results, whose table includes it
        write_json(cost_path, {"command": "python benchmarks/fokker_planck_gap.py --cost", "machine": _machine(),
                               "cost": step_cost()})
        return
    rows = run(args.problems, args.seeds, args.steps, args.samples, args.weights)
    report = {
        "command": " ".join(["python benchmarks/fokker_planck_gap.py", *os.sys.argv[1:]]),
        "machine": _machine(),
        "samples": args.samples or {problem: SETTINGS["digits" if problem == "digits" else "toy"]["samples"]
                                    for problem in args.problems},
        "seeds": args.seeds,
        "rows": rows,
        "summary": summary(rows),
        "seconds": time.perf_counter() - started,
    }
    if os.path.exists(cost_path):
        with open(cost_path) as handle:
            report["cost"] = json.load(handle)["cost"]
    text = markdown(report)
    print(text)
    write_json(args.out, report)
    write_text(args.out[:-5] + ".md", text)


if __name__ == "__main__":
    main()
