"""Digits (8x8) classification with a neural ODE: the analogue of Pal et al.'s MNIST run.

python benchmarks/neural_ode/digits.py [--seeds 3] [--epochs 30] [--methods none,ernode]
Writes benchmarks/results/neural_ode_digits.json.
"""

import argparse
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import flax.nnx as nnx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import METHODS, summarize, timed, write_json  # noqa: E402

from samplax.neural_ode import NoRegularization, ODEClassifier, train  # noqa: E402
from samplax.neural_ode.data import batches, digits  # noqa: E402

WEIGHTS = {  # (start, end) of the exponentially decaying weight
    "none": (0.0, 0.0), "steer": (0.0, 0.0), "rnode": (0.01, 0.01),
    "taynode": (1e-3, 1e-3), "ernode": (10.0, 1.0), "srnode": (0.1, 0.1),
    "local_unbiased": (10.0, 1.0), "local_biased": (10.0, 1.0),
}
TOL = dict(rtol=1e-6, atol=1e-6)


def run(method_name, seed, epochs, batch_size=128, hidden=64):
    x_train, y_train, x_test, y_test = digits(seed)
    model = ODEClassifier(64, hidden, 10, rngs=nnx.Rngs(seed), dtype=jnp.float64)
    graphdef, params = nnx.split(model)
    method = METHODS[method_name]

    def loss_fn(p, batch, key):
        x, y = batch
        logits, penalty, nfe = nnx.merge(graphdef, p)(x, method, key=key, **TOL)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), (penalty, nfe)

    steps = epochs * (len(x_train) // batch_size)
    w0, w1 = WEIGHTS[method_name]
    params, hist = train(
        loss_fn, params, optax.adam(3e-3),
        batches((x_train, y_train), batch_size, seed=seed),
        key=jax.random.key(seed), total_steps=steps, weight_start=w0, weight_end=w1,
    )

    @jax.jit
    def predict(p, x):
        logits, _, nfe = nnx.merge(graphdef, p)(x, NoRegularization(), **TOL)
        return logits, nfe

    predict_time, (logits, nfe) = timed(predict, params, jnp.asarray(x_test))
    acc = float(jnp.mean(jnp.argmax(logits, -1) == y_test))
    train_acc = float(jnp.mean(jnp.argmax(predict(params, jnp.asarray(x_train))[0], -1) == y_train))
    return dict(
        test_accuracy=100 * acc, train_accuracy=100 * train_acc, nfe=int(nfe),
        predict_time=predict_time, train_time=hist.train_time,
        compile_time=hist.compile_time, train_nfe_last=hist.nfe[-1],
        final_loss=hist.loss[-1], steps=steps,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default="benchmarks/results/neural_ode_digits.json")
    a = ap.parse_args()
    runs = {}
    for name in a.methods.split(","):
        runs[name] = []
        for seed in range(a.seeds):
            t = time.perf_counter()
            r = run(name, seed, a.epochs)
            runs[name].append(r)
            print(name, seed, {k: round(v, 4) for k, v in r.items()},
                  f"({time.perf_counter() - t:.0f}s)", flush=True)
        write_json(a.out, dict(
            task="digits", config=dict(epochs=a.epochs, seeds=a.seeds, weights=WEIGHTS, **TOL),
            device=str(jax.devices()[0]), runs=runs,
            summary=summarize(runs, list(runs[name][0])),
        ))


if __name__ == "__main__":
    main()
