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
# # Gradients through the sampler
#
# `sample` is differentiable: a loss on the samples has gradients with respect to the
# noise, the condition and the network's weights. Backpropagation through the solver's scan
# stores every step's activations, so its memory grows with the steps; `sample(...,
# adjoint=...)` chooses another way to get the same gradient at constant memory:
# `Checkpointed()` recomputes each step in the backward pass, `ExponentialAdjoint()` solves
# the adjoint ODE backwards (AdjointDPM, Pan et al. 2024; AdjointDEIS, Blasingame and Liu
# 2024), and `ReversibleAdjoint()` inverts each step of reversible Heun. This notebook
# compares them on the exact Gaussian-mixture model, then uses them for the two tasks of
# AdjointDPM: optimizing the noise of samples for a reward, and fine-tuning part of a
# network for a loss defined only on its samples. `SAMPLAX_FAST=1` runs a few iterations
# on a few samples.

# %%
import dataclasses
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import samplax as sx
from samplax import metrics
from samplax.models import pretrained

FAST = os.environ.get("SAMPLAX_FAST") == "1"

# %% [markdown]
# ## Four gradient methods, one gradient
#
# The gradient of a loss on DPM-Solver++(2M) samples of a mixture, with respect to the
# noise, in float32. Checkpointing gives backpropagation's gradient to rounding; the
# exponential adjoint solves a continuous adjoint, so it converges to the gradient of a fine
# solve as the steps grow. The temporary memory of the compiled gradient program grows with
# the steps by every intermediate of every step under backpropagation, by one state per step
# under checkpointing and by a few coefficients per step under the adjoint; with a network
# the intermediates are what counts (on the digits UNet, 200 steps take 19x the memory of
# 10 under backpropagation and 1.00-1.14x under the others: docs/benchmarks.md,
# `python benchmarks/gradient_memory.py`).

# %%
mixture = sx.GaussianMixture.random(0, 8, 4)
model = mixture.denoiser(sx.schedules.VPLinear(), "noise")
noise = jax.random.normal(jax.random.key(0), (16, 8))


def noise_gradient(adjoint, steps):
    def loss(noise):
        samples, _ = sx.sample(model, "dpm++2m", noise, steps=steps, adjoint=adjoint)
        return jnp.mean(samples**2)

    return jax.jit(jax.grad(loss))


STEP_COUNTS = (10, 200) if FAST else (10, 50, 200)
methods = {"backpropagation": sx.Backpropagation(), "checkpointed": sx.Checkpointed(),
           "exponential adjoint": sx.ExponentialAdjoint(2)}
gradients = {(name, steps): noise_gradient(adjoint, steps)
             for name, adjoint in methods.items() for steps in STEP_COUNTS}
reference = gradients["backpropagation", STEP_COUNTS[-1]](noise)
for name in methods:
    errors, memory = [], []
    for steps in STEP_COUNTS:
        gradient = gradients[name, steps]
        errors.append(float(jnp.linalg.norm(gradient(noise) - reference) / jnp.linalg.norm(reference)))
        memory.append(gradient.lower(noise).compile().memory_analysis().temp_size_in_bytes / 1e3)
    print(f"{name:20s} error vs {STEP_COUNTS[-1]}-step backprop at {'/'.join(map(str, STEP_COUNTS))} steps: "
          + " ".join(f"{error:.1e}" for error in errors)
          + "   temporary kB: " + " ".join(f"{kilobytes:.0f}" for kilobytes in memory))

# %% [markdown]
# ## Noise optimization: turn ones into sevens
#
# `optimize_noise` runs Adam on the initial noise to raise a differentiable reward of the
# samples (here the shipped classifier's log-probability of the label 7), with a penalty
# that keeps each noise's norm typical of a standard normal (DOODL, DNO). The unconditional
# digits model draws some ones; their noise is optimized through a 10-step solve whose
# gradient comes from the exponential adjoint. `benchmarks/gradient_applications.py` runs
# this on 32 samples for 60 iterations (docs/benchmarks.md).

# %%
classifier, _ = pretrained.load("digits-classifier")
digits = pretrained.denoiser("digits-diffusion")
pool = jax.random.normal(jax.random.key(1), (256, 8, 8, 1))
start_samples, _ = sx.sample(digits, "dpm++2m", pool, steps=10)
probabilities = jax.nn.softmax(classifier(start_samples), axis=1)
ones = np.flatnonzero((np.argmax(probabilities, 1) == 1) & (probabilities[:, 7] < 0.05))[: 4 if FAST else 16]


def reward(samples):
    return jax.nn.log_softmax(classifier(samples), axis=1)[:, 7]


optimized_noise, info = sx.optimize_noise(digits, "dpm++2m", pool[ones], reward, iterations=5 if FAST else 60,
                                          learning_rate=0.05, steps=10, adjoint=sx.ExponentialAdjoint(2))
after = jax.nn.softmax(classifier(info.samples), axis=1)[:, 7]
before = float(probabilities[ones, 7].mean())
print(f"{ones.size} ones: mean probability of 7 {before:.4f} -> {float(after.mean()):.4f}")
print("mean noise norm", float(jnp.linalg.norm(optimized_noise.reshape(ones.size, -1), axis=1).mean()),
      "(typical: sqrt(64) = 8)")

figure, axes = plt.subplots(2, ones.size, figsize=(ones.size, 2.2), squeeze=False)
for column in range(ones.size):
    for row, images in enumerate((start_samples[ones], info.samples)):
        axes[row, column].imshow(np.clip(images[column, ..., 0], -1, 1), cmap="gray", vmin=-1, vmax=1)
        axes[row, column].axis("off")
figure.suptitle("before (top) and after noise optimization (bottom)")
plt.show()

# %% [markdown]
# ## Customization: bolder digits, same labels
#
# `fine_tune` trains the leaves of `model.network` chosen by a predicate on their key path,
# here only the class-label embedding of the conditional model, so that its samples
# minimise a loss that exists only on the output: less white space (more ink), plus a
# cross-entropy term under the classifier that keeps each digit's label. The gradient goes
# through a 10-step solve by checkpointing. Fresh noise, never seen in training, measures
# the effect.

# %%
labels = jnp.arange(20) % 10
conditional = pretrained.denoiser("digits-diffusion", labels=labels)


def ink(samples):
    return jnp.mean((samples + 1.0) / 2.0, axis=(1, 2, 3))


def customization_loss(samples):
    log_probabilities = jax.nn.log_softmax(classifier(samples), axis=1)
    cross_entropy = -jnp.mean(jnp.take_along_axis(log_probabilities, labels[:, None], axis=1))
    return -jnp.mean(ink(samples)) + 0.1 * cross_entropy


tuned, tune_info = sx.fine_tune(conditional, "dpm++2m", customization_loss, trainable=lambda path: "['label']" in path,
                                shape=(8, 8, 1), key=jax.random.key(2), batch=20, iterations=3 if FAST else 40,
                                learning_rate=0.02, steps=10, adjoint=sx.Checkpointed())
test_count = 20 if FAST else 100
test_labels = jnp.arange(test_count) % 10
test_noise = jax.random.normal(jax.random.key(3), (test_count, 8, 8, 1))
for name, denoiser in (("before", conditional), ("after", tuned)):
    samples, _ = sx.sample(dataclasses.replace(denoiser, condition={"label": test_labels}), "dpm++2m", test_noise,
                           steps=10)
    accuracy = metrics.label_accuracy(samples, test_labels, classifier)
    print(f"{name:6s}: ink {float(ink(samples).mean()):.4f}, label accuracy {accuracy:.1%}")
