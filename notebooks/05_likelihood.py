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
# # Likelihoods, and the gap between a model's ODE and its SDE
#
# A diffusion or flow model is a density: the probability-flow ODE carries the data to
# noise, and the change of variables along it gives log p(x) exactly
# (`samplax.log_likelihood`). This notebook checks that against the Gaussian mixture's
# closed-form density, computes the bits per dimension of the shipped digits models, and
# then trains a 2-D toy model with and without the Fokker-Planck penalty, which pulls the
# model's ODE and SDE samples together (Deveney et al. 2023).
# `SAMPLAX_FAST=1` uses a few digits, one digits model and short training.

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import samplax as sx
from samplax import metrics
from samplax.models import data, losses, networks, pretrained, training

FAST = os.environ.get("SAMPLAX_FAST") == "1"

# %% [markdown]
# ## The exact density of a Gaussian mixture
#
# The mixture's marginal at every noise level is a mixture of Gaussians, and its exact
# denoiser's ODE transports one marginal onto the next. With the marginal at t = 1 as the
# prior, the computed log p of points at t_min matches the closed form to the solver's
# tolerance; with the default prior N(0, sigma(1)^2 I) it is off by the small signal
# alpha(1) x_0 left at t = 1.

# %%
mixture = sx.GaussianMixture.random(0, 4, 3)
schedule = sx.schedules.VPLinear()
model = mixture.denoiser(schedule, "noise")
evaluated = 16 if FAST else 64
x0 = mixture.sample(jax.random.key(0), evaluated)
alpha_end, sigma_end = schedule.alpha(schedule.t_min), schedule.sigma(schedule.t_min)
x = alpha_end * x0 + sigma_end * jax.random.normal(jax.random.key(1), x0.shape)
exact = mixture.log_density(x, alpha_end, sigma_end)
alpha_1, sigma_1 = schedule.alpha(1.0), schedule.sigma(1.0)


def marginal_at_noise(z):
    return mixture.log_density(z[None], alpha_1, sigma_1)[0]


log_p, info = sx.log_likelihood(model, x, prior=marginal_at_noise)
default_prior, _ = sx.log_likelihood(model, x)
error = float(jnp.max(jnp.abs(log_p - exact))) / 4
print(f"exact prior:   max error {error:.1e} nats/dim, mean NFE {info.nfe.mean():.0f}")
print(f"default prior: max error {float(jnp.max(jnp.abs(default_prior - exact))) / 4:.1e} nats/dim")
estimate, _ = sx.log_likelihood(model, x, divergence=sx.Hutchinson(4), key=jax.random.key(2))
print(f"Hutchinson, 4 probes: mean error {float(jnp.mean(estimate - log_p)):+.3f} nats over {evaluated} points "
      "(unbiased)")

# %% [markdown]
# ## Bits per dimension of the shipped digits models
#
# The digits have 17 grey levels; `bits_per_dim(levels=17)` dequantises them uniformly, so
# a model no better than uniform scores log2(17) = 4.09 bits per pixel. The full numbers
# (all 359 held-out digits, three passes) are in docs/benchmarks.md
# (`python scripts/likelihood.py digits-diffusion --repeats 3`).

# %%
count = 4 if FAST else 359
tolerance = 1e-2 if FAST else 1e-5
test = data.digits("test").images[:count]
levels = np.rint((test + 1.0) * 8.0).astype(np.int32)
for name in ("digits-flow",) if FAST else ("digits-diffusion", "digits-flow"):
    bits, info = sx.bits_per_dim(
        pretrained.denoiser(name), levels, key=jax.random.key(3), levels=17, divergence=sx.Hutchinson(1),
        rtol=tolerance, atol=tolerance,
    )
    print(f"{name}: {float(bits.mean()):.3f} bits/dim on {count} digits, mean NFE {info.nfe.mean():.0f}")

# %% [markdown]
# ## The ODE-SDE gap, with and without the Fokker-Planck penalty
#
# One model has two samplers: its probability-flow ODE and its reverse SDE. They agree
# only if the learned score is the score of a family of marginals, that is, if it obeys
# the Fokker-Planck equation. `denoising_loss(fokker_planck_weight=...)` penalises the
# residual. Below, the same checkerboard model is trained with weight 0 and 1, and the
# sliced Wasserstein distance between ODE and SDE samples from the same noise is
# measured. `benchmarks/fokker_planck_gap.py` repeats this over seeds, weights, a second
# toy and the digits (docs/benchmarks.md). In the fast mode the models train for 20 steps
# only, far too few to mean anything: run the notebook without `SAMPLAX_FAST` for numbers.

# %%
points = data.toy("checkerboard", 20_000, seed=0)
steps = 20 if FAST else 2000
samples = 300 if FAST else 20_000
noise = jax.random.normal(jax.random.key(4), (samples, 2))
results = {}
for weight in (0.0, 1.0):
    network = networks.build("MLP", {"dimension": 2, "width": 128, "depth": 3}, seed=0)
    loss = losses.denoising_loss(
        schedule, "noise", fokker_planck_weight=weight, fokker_planck_samples=8 if FAST else 32
    )
    config = training.TrainConfig(steps=steps, batch_size=256, warmup_steps=steps // 10, ema_decay=0.995,
                                  checkpoint_every=0)
    trained = training.train(network, loss, {"x": points}, config, progress=False)
    toy_model = pretrained.as_denoiser(trained.ema, schedule, "noise")
    ode, _ = sx.sample(toy_model, "dpm++2m", noise, steps=100)
    sde, _ = sx.sample(toy_model, "dpm++2m-sde", noise, steps=200, key=jax.random.key(5))
    gap = metrics.sliced_wasserstein(np.asarray(ode), np.asarray(sde))
    results[weight] = (np.asarray(ode), np.asarray(sde))
    print(f"weight {weight:g}: ODE-SDE gap {gap:.4f} (sliced W2), trained in {trained.seconds:.0f} s")

figure, axes = plt.subplots(2, 2, figsize=(7, 7), sharex=True, sharey=True)
for row, (weight, (ode, sde)) in enumerate(results.items()):
    for column, (name, values) in enumerate((("ODE", ode), ("SDE", sde))):
        axes[row, column].scatter(values[:, 0], values[:, 1], s=1, alpha=0.3)
        axes[row, column].set_title(f"weight {weight:g}: {name}")
figure.tight_layout()
plt.show()
