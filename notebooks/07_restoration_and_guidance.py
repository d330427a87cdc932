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
# # Guidance, img2img, inpainting and restoration on digits
#
# With the shipped `digits-flow` model and the shipped classifier:
#
# 1. Guidance rules side by side at one scale: classifier-free guidance, its rescale,
#    APG and guidance limited to an interval of noise levels.
# 2. img2img (SDEdit) at three strengths, turning test 3s into 8s.
# 3. Inpainting the left half: replacement alone and RePaint's resampling.
# 4. Restoration of 4x4 -> 8x8 down-sampled digits: DPS (gradient through the network)
#    against FlowChef's gradient skipping, at equal NFE.
# 5. Noisy digits restored by SDEdit and by CODE.
#
# docs/benchmarks.md measures all of these on the 360 test digits; here a few digits are
# shown. Set `SAMPLAX_FAST=1` for a reduced run (fewer digits and steps).

# %%
import dataclasses
import os

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import samplax as sx
from samplax.metrics import classifier_confidence, label_accuracy
from samplax.models import data, pretrained

FAST = os.environ.get("SAMPLAX_FAST") == "1"
SHOWN = 4 if FAST else 8
STEPS = 8 if FAST else 20
test = data.digits("test")


def show(rows, title):
    """One row of digits per (name, images) pair."""
    figure, axes = plt.subplots(len(rows), SHOWN, figsize=(1.1 * SHOWN, 1.2 * len(rows)), squeeze=False)
    for row, (name, images) in enumerate(rows):
        for column in range(SHOWN):
            axes[row, column].imshow(np.asarray(images[column, ..., 0]), cmap="gray", vmin=-1, vmax=1)
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
        axes[row, 0].set_ylabel(name, fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()


# %% [markdown]
# ## 1. Guidance rules
#
# The same noise and labels under each rule at scale 4 (`samplax.CFG`, `samplax.APG`, a
# rule on the Denoiser's `guidance` field; see docs/solvers.md). Plain CFG at this scale
# saturates the strokes; rescale, APG's cap on the update and the interval all keep
# them closer to the unguided look, as the Frechet distances of docs/benchmarks.md show.

# %%
labels = jnp.arange(SHOWN) % 10
guided = pretrained.denoiser("digits-flow", labels=labels, guidance_scale=4.0)
noise = jax.random.normal(jax.random.key(0), (SHOWN, 8, 8, 1))
rules = [
    ("CFG", sx.CFG()),
    ("CFG rescale 0.7", sx.CFG(rescale=0.7)),
    ("APG, cap 1", sx.APG(parallel=0.0, norm_threshold=1.0)),
    ("CFG on an interval", sx.CFG(interval=(0.28, 5.42))),
]
unguided, _ = sx.sample(pretrained.denoiser("digits-flow", labels=labels), "euler", noise, steps=STEPS)
rows = [("unguided", unguided)]
for name, rule in rules:
    samples, _ = sx.sample(dataclasses.replace(guided, guidance=rule), "euler", noise, steps=STEPS)
    rows.append((name, samples))
    print(f"{name:20s} accuracy {label_accuracy(samples, labels):.2f}")
show(rows, "scale 4, labels 0, 1, 2, ...")

# %% [markdown]
# ## 2. img2img
#
# `samplax.sdedit` runs the last floor(strength x steps) intervals of the whole grid
# from the image noised to where they begin. Low strength keeps the 3; high strength
# follows the label 8.

# %%
threes = jnp.asarray(test.images[test.labels == 3][:SHOWN])
eights = pretrained.denoiser("digits-flow", labels=jnp.full(SHOWN, 8), guidance_scale=2.0)
rows = [("input", threes)]
for strength in (0.3, 0.6, 0.9):
    edited, info = sx.sdedit(eights, "euler", threes, strength=strength, key=jax.random.key(1), steps=STEPS)
    rows.append((f"strength {strength} ({int(info.nfe)} NFE)", edited))
    print(f"strength {strength}: mean p(8) {np.mean(classifier_confidence(edited)):.2f}, "
          f"accuracy as 8 {label_accuracy(edited, np.full(SHOWN, 8)):.2f}")
show(rows, "3s regenerated under label 8")

# %% [markdown]
# ## 3. Inpainting
#
# `samplax.inpaint` keeps the right half (mask 1) and regenerates the left. Replacement
# alone does not make the two halves agree; RePaint's resampling (`resample=4`) lets them
# harmonise, at four times the NFE.

# %%
unconditional = pretrained.denoiser("digits-flow", labels=None)
digits_shown = jnp.asarray(test.images[:SHOWN])
keep_right = jnp.zeros((8, 8, 1)).at[:, 4:].set(1.0)
replaced, _ = sx.inpaint(unconditional, "euler", digits_shown, keep_right, key=jax.random.key(2), steps=STEPS)
repainted, info = sx.inpaint(unconditional, "euler", digits_shown, keep_right, key=jax.random.key(2),
                             steps=STEPS // 2, resample=4)
print(f"RePaint: {int(info.nfe)} NFE; accuracy replacement {label_accuracy(replaced, test.labels[:SHOWN]):.2f}, "
      f"RePaint {label_accuracy(repainted, test.labels[:SHOWN]):.2f}")
show([("truth", digits_shown), ("known half", digits_shown * keep_right - (1 - keep_right)),
      ("replacement", replaced), ("RePaint r=4", repainted)], "left half regenerated")

# %% [markdown]
# ## 4. Super-resolution: DPS against FlowChef
#
# Each digit is observed as 2x2 box averages with noise of std 0.05.
# `samplax.posterior_guidance` adds the gradient of the observation's log-likelihood to
# the score; DPS differentiates through the network, FlowChef skips that gradient (one
# plain evaluation per step).

# %%


def box_down(images):
    return images.reshape(images.shape[0], 4, 2, 4, 2, 1).mean(axis=(2, 4))


truth = jnp.asarray(test.images[:SHOWN])
observed = box_down(truth) + 0.05 * jax.random.normal(jax.random.key(3), (SHOWN, 4, 4, 1))
likelihood = sx.gaussian_observation(box_down, observed, 0.05, inflate=0.25)
rows = [("truth", truth), ("observed", jnp.repeat(jnp.repeat(observed, 2, 1), 2, 2))]
for name, through_network in (("DPS", True), ("FlowChef", False)):
    restorer = sx.posterior_guidance(unconditional, likelihood, 4.0, through_network=through_network)
    restored, _ = sx.sample(restorer, "euler", noise, steps=STEPS)
    rows.append((name, restored))
    print(f"{name:8s} RMS to truth {float(jnp.sqrt(jnp.mean((restored - truth) ** 2))):.3f}, "
          f"accuracy {label_accuracy(restored, test.labels[:SHOWN]):.2f}")
show(rows, "4x4 -> 8x8")

# %% [markdown]
# ## 5. Noisy digits: SDEdit and CODE
#
# Gaussian noise of std 0.5. SDEdit noises the input further and regenerates; CODE
# inverts it along the ODE, takes Langevin steps there with confidence-interval clipping,
# and regenerates (`samplax.code`). On digits SDEdit gives the better realism at equal
# fidelity (docs/benchmarks.md); the pictures show both.

# %%
noisy = jnp.clip(truth + 0.5 * jax.random.normal(jax.random.key(4), truth.shape), -1, 1)
sdedited, _ = sx.sdedit(unconditional, "euler", noisy, strength=0.5, key=jax.random.key(5), steps=2 * STEPS)
coded, info = sx.code(unconditional, "euler", noisy, key=jax.random.key(6), level=0.5, steps=STEPS // 4,
                      langevin_steps=STEPS // 2)
print(f"{int(info.nfe)} NFE each; accuracy SDEdit {label_accuracy(sdedited, test.labels[:SHOWN]):.2f}, "
      f"CODE {label_accuracy(coded, test.labels[:SHOWN]):.2f}")
show([("truth", truth), ("noisy input", noisy), ("SDEdit 0.5", sdedited), ("CODE 0.5", coded)],
     "noise std 0.5")

# %% [markdown]
# The command line runs the same workflows (docs/cli.md):
#
# ```bash
# samplax-sample --model digits-flow --init-image digits:3:0-7 --strength 0.6 --label 8 --outdir img2img
# samplax-sample --model digits-flow --init-image digits:3:0-7 --mask left --resample 2 --outdir inpainted
# samplax-sample --model digits-flow --restore low/*.png --downsample 2 --steps 20 --outdir restored
# samplax-sample --model digits-flow --restore noisy/*.png --method code --strength 0.5 --outdir code
# ```
