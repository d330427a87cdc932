"""Digits (8x8) classification with a neural ODE: the analogue of Pal et al.'s MNIST run.

python benchmarks/neural_ode/digits.py [--seeds 3] [--epochs 30] [--methods none,ernode]
Writes benchmarks/results/neural_ode_digits.json. All methods of a seed train in one
process, one step each in turn, on the same batches (see common.train_interleaved).
"""

import argparse
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import flax.nnx as nnx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import METHODS, summarize, timed, train_interleaved, write_json  # noqa: E402

from samplax.neural_ode import NoRegularization, ODEClassifier  # noqa: E402
from samplax.neural_ode.data import batches, digits  # noqa: E402

WEIGHTS = {  # (start, end) of the exponentially decaying weight
    "none": (0.0, 0.0), "steer": (0.0, 0.0), "rnode": (0.01, 0.01),
    "taynode": (1e-3, 1e-3), "ernode": (1.0, 0.1), "srnode": (0.1, 0.1),
    "local_unbiased": (1.0, 0.1), "local_biased": (1.0, 0.1),
}
TOL = dict(rtol=1e-6, atol=1e-6)


def run_seed(names, seed, epochs, batch_size=128, hidden=64):
    x_train, y_train, x_test, y_test = digits(seed)
    graphdef, params = nnx.split(
        ODEClassifier(64, hidden, 10, rngs=nnx.Rngs(seed), dtype=jnp.float64)
    )

    def make_loss(method):
        def loss_fn(p, batch, key):
            x, y = batch
            logits, penalty, nfe = nnx.merge(graphdef, p)(x, method, key=key, **TOL)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, (penalty, nfe)
        return loss_fn

    steps = epochs * (len(x_train) // batch_size)
    setups = {n: (make_loss(METHODS[n]), params, *WEIGHTS[n]) for n in names}
    trained = train_interleaved(
        setups, optax.adam(3e-3), batches((x_train, y_train), batch_size, seed=seed),
        key=jax.random.key(seed), total_steps=steps,
    )

    @jax.jit
    def predict(p, x):
        logits, _, nfe = nnx.merge(graphdef, p)(x, NoRegularization(), **TOL)
        return logits, nfe

    results = {}
    for name, (p, hist) in trained.items():
        predict_time, (logits, nfe) = timed(predict, p, jnp.asarray(x_test))
        train_logits = predict(p, jnp.asarray(x_train))[0]
        results[name] = dict(
            test_accuracy=100 * float(jnp.mean(jnp.argmax(logits, -1) == y_test)),
            train_accuracy=100 * float(jnp.mean(jnp.argmax(train_logits, -1) == y_train)),
            nfe=int(nfe), predict_time=predict_time, train_time=hist.train_time,
            train_time_median=float(np.median(hist.step_times)) * (steps - 1),
            compile_time=hist.compile_time, train_nfe_mean=float(np.mean(hist.nfe)),
            final_loss=hist.loss[-1], steps=steps, seed=seed,
        )
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed0", type=int, default=0, help="first seed (sweeps use 100+)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--weight", type=float, nargs=2, default=None,
                    help="override (start, end) of the weight of the regularized methods")
    ap.add_argument("--out", default="benchmarks/results/neural_ode_digits.json")
    a = ap.parse_args()
    names = a.methods.split(",")
    if a.weight is not None:
        WEIGHTS.update({k: tuple(a.weight) for k in names if WEIGHTS[k] != (0.0, 0.0)})
    runs = {name: [] for name in names}
    for seed in range(a.seed0, a.seed0 + a.seeds):
        t = time.perf_counter()
        for name, r in run_seed(names, seed, a.epochs).items():
            runs[name].append(r)
            print(name, seed, {k: round(v, 4) for k, v in r.items()}, flush=True)
        print(f"seed {seed} took {time.perf_counter() - t:.0f}s", flush=True)
        write_json(a.out, dict(
            task="digits", config=dict(epochs=a.epochs, seeds=a.seeds, weights=WEIGHTS, **TOL),
            device=str(jax.devices()[0]), runs=runs, summary=summarize(runs, list(r)),
        ))


if __name__ == "__main__":
    main()
