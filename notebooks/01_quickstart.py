# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Quickstart: sampling digits
#
# samplax ships a small class-conditional diffusion model of 8x8 digits, so sampling works
# with no download. This notebook samples it with several solvers, shows the images, and
# measures quality against the number of network evaluations (NFE) with the shipped
# classifier: label accuracy and the Frechet distance to held-out digits.
#
# Set `SAMPLAX_FAST=1` for a reduced run (fewer samples, solvers and NFEs).

# %%
import os

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import samplax as sx
from samplax import metrics
from samplax.models import pretrained

FAST = os.environ.get("SAMPLAX_FAST") == "1"
SAMPLES = 40 if FAST else 300
NFES = [10] if FAST else [5, 8, 10, 15, 20, 50]  # NFE 10 is the first cell's run again
SOLVERS = ["dpm++2m"] if FAST else ["ddim", "dpm++2m", "dpm++3m", "unipc-bh2-2"]

# %% [markdown]
# One noise per sample, drawn from the sample's own seed (as `scripts/sample.py` does), and
# labels cycling through 0-9. `pretrained.denoiser` wraps the shipped network in a
# `Denoiser` with classifier-free guidance at the given scale.

# %%
seeds = np.arange(SAMPLES)
noise = jax.vmap(lambda s: jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(0), s), (8, 8, 1)))(seeds)
labels = seeds % 10
model = pretrained.denoiser("digits-diffusion", labels=labels, guidance_scale=2.0)

images, info = sx.sample(model, "dpm++2m", noise, steps=9, denoise_to_zero=True)
print("NFE:", int(info.nfe), " images:", images.shape)

# %%
figure, axes = plt.subplots(2, 10, figsize=(10, 2.2))
for axis, image, label in zip(axes.ravel(), np.asarray(images), labels, strict=False):
    axis.imshow(np.clip(image[..., 0], -1, 1), cmap="gray", vmin=-1, vmax=1)
    axis.set_title(str(label), fontsize=8)
    axis.axis("off")
figure.tight_layout()

# %% [markdown]
# ## Quality against NFE
#
# Every run finishes with the denoising step, so NFE = steps + 1.

# %%
quality = {}
for name in SOLVERS:
    quality[name] = []
    for nfe in NFES:
        images, _ = sx.sample(model, name, noise, steps=nfe - 1, denoise_to_zero=True)
        accuracy = metrics.label_accuracy(images, labels)
        distance = metrics.digits_frechet_distance(images)
        quality[name].append((accuracy, distance))
        print(f"{name:12s} NFE {nfe:3d}: accuracy {100 * accuracy:5.1f}%, Frechet distance {distance:6.2f}")

# %%
figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
for name, values in quality.items():
    left.plot(NFES, [100 * a for a, _ in values], marker="o", label=name)
    right.plot(NFES, [d for _, d in values], marker="o", label=name)
left.set_xlabel("NFE")
left.set_ylabel("label accuracy (%)")
right.set_xlabel("NFE")
right.set_ylabel("Frechet distance (lower is better)")
right.legend(fontsize=8)
figure.tight_layout()
