"""Markdown table of the neural-ODE experiments, from their JSON results.

python benchmarks/neural_ode/table.py benchmarks/results/neural_ode_digits*.json
Runs of the same seed in several files count once. Ratios are to the unregularized
model of the same seed (trained in the same process), then averaged over seeds.
"""

import json
import re
import sys

import numpy as np


def load(paths):
    runs, task = {}, None
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        task = data["task"]
        match = re.search(r"seed(\d+)", path)
        first = int(match.group(1)) if match else 0
        for name, rs in data["runs"].items():
            for i, r in enumerate(rs):
                runs.setdefault(name, {})[r.get("seed", first + i)] = r
    return task, runs


def table(task, runs):
    metric = "test_accuracy" if task == "digits" else "test_mse"
    label = "test acc. (%)" if task == "digits" else "test MSE"
    base = runs["none"]
    lines = [
        f"| method | {label} | NFE (predict) | NFE ratio | train time (s) | train ratio "
        "| predict time (ms) | predict speed-up | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rs in runs.items():
        seeds = [s for s in rs if s in base]
        m = np.array([rs[s][metric] for s in seeds])
        nfe = np.array([rs[s]["nfe"] for s in seeds])
        tt = np.array([rs[s]["train_time_median"] for s in seeds])
        pt = np.array([rs[s]["predict_time"] for s in seeds])
        nfe_r = np.mean([rs[s]["nfe"] / base[s]["nfe"] for s in seeds])
        tt_r = np.mean([rs[s]["train_time_median"] / base[s]["train_time_median"] for s in seeds])
        pt_r = np.mean([base[s]["predict_time"] / rs[s]["predict_time"] for s in seeds])
        fmt = "{:.2f} ± {:.2f}" if task == "digits" else "{:.4f} ± {:.4f}"
        lines.append(
            f"| {name} | {fmt.format(m.mean(), m.std())} | {nfe.mean():.1f} ± {nfe.std():.1f} "
            f"| {nfe_r:.2f} | {tt.mean():.1f} | {tt_r:.2f} | {1e3 * pt.mean():.1f} "
            f"| {pt_r:.2f} | {len(seeds)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(*load(sys.argv[1:])))
