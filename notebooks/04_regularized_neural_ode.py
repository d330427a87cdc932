# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
# ---

# %% [markdown]
# # Neural ODEs that need fewer solver steps
#
# Pal et al. (ICML 2021) regularize the adaptive solver's own heuristics: the local
# error estimate E of every accepted step (ERNODE) and its stiffness estimate (SRNODE).
# Pal et al. (ICML 2023) take one solver step at a random time instead (local
# regularization). Here a digits classifier is trained with and without them and the
# number of vector-field evaluations (NFE) a prediction needs is compared.
# `SAMPLAX_FAST=1` trains briefly on a subset.

# %%
import os

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import flax.nnx as nnx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from samplax.neural_ode import (  # noqa: E402
    GlobalRegularization,
    LocalRegularization,
    NoRegularization,
    ODEClassifier,
    RegularizedSolver,
    solve,
    train,
)
from samplax.neural_ode.data import batches, digits  # noqa: E402

FAST = os.environ.get("SAMPLAX_FAST") == "1"

# %% [markdown]
# ## The wrapper solver
# `RegularizedSolver` wraps Tsit5; diffrax keeps its state on accepted steps only, so the
# sums run over accepted steps. On y' = -lambda y the stiffness estimate is lambda.

# %%
solver = RegularizedSolver(rtol=1e-6, atol=1e-9)
sol, pen = solve(diffrax.ODETerm(lambda t, y, lam: -lam * y), solver, 0.0, 1.0, jnp.ones(2),
                 10.0)
print("lambda estimate:", float(pen.stiffness) * solver.stability_size,
      "NFE:", int(pen.num_evaluations),
      "accepted steps:", int(pen.num_accepted))

# %% [markdown]
# ## Training a digits classifier three ways

# %%
x_train, y_train, x_test, y_test = digits(0)
if FAST:
    x_train, y_train = x_train[:256], y_train[:256]
    x_test, y_test = x_test[:128], y_test[:128]
epochs = 2 if FAST else 30
TOL = dict(rtol=1e-6, atol=1e-6)


def fit(method, weight):
    graphdef, params = nnx.split(ODEClassifier(64, 64, 10, rngs=nnx.Rngs(0),
                                               dtype=jnp.float64))

    def loss_fn(p, batch, key):
        x, y = batch
        logits, penalty, nfe = nnx.merge(graphdef, p)(x, method, key=key, **TOL)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), (penalty, nfe)

    steps = epochs * (len(x_train) // 128)
    params, hist = train(loss_fn, params, optax.adam(3e-3),
                         batches((x_train, y_train), 128, seed=0), key=jax.random.key(0),
                         total_steps=steps, weight_start=weight[0], weight_end=weight[1])
    logits, _, nfe = nnx.merge(graphdef, params)(jnp.asarray(x_test), **TOL)
    acc = 100 * float(jnp.mean(jnp.argmax(logits, -1) == y_test))
    return acc, int(nfe)


for name, method, weight in [
    ("unregularized", NoRegularization(), (0.0, 0.0)),
    ("ERNODE", GlobalRegularization("error"), (1.0, 0.1)),
    ("local (unbiased)", LocalRegularization("error", "unbiased"), (1.0, 0.1)),
]:
    acc, nfe = fit(method, weight)
    print(f"{name:18s} test accuracy {acc:5.1f}%  prediction NFE {nfe}")
