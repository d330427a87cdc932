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
# # Solver accuracy on an exact problem
#
# A mixture of isotropic Gaussians has an exact denoiser at every noise level, so the
# probability-flow ODE, and therefore every solver's error, is known exactly. This notebook
# measures error against NFE (number of network evaluations) for the main solvers, then
# learns a time grid by differentiating through the sampler and checks it on held-out noise.
#
# Set `SAMPLAX_FAST=1` to run a reduced version (fewer samples, solvers and fit iterations).

# %%
import os

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import samplax as sx

FAST = os.environ.get("SAMPLAX_FAST") == "1"
SAMPLES = 64 if FAST else 500
NFES = [6] if FAST else [5, 6, 8, 10, 15, 20]  # NFE 6 of dpm++2m is reused below
# One solver of each family in the full run (sx.solvers.names() lists every variant;
# docs/benchmarks.md measures them all).
SOLVERS = ["ddim", "dpm++2m", "dpm++3m-taylor"] if FAST else [
    "ddim", "dpm-solver-3s", "dpm++2s", "dpm++3s", "dpm++2m", "dpm++3m", "dpm++3m-taylor",
    "deis-tab3", "deis-rhoab3", "deis-rhork2", "ipndm", "unipc-bh1-3", "unipc-bh2-3",
]

# %% [markdown]
# The problem: 64 dimensions, 8 components with standard deviations between 0.05 and 0.25
# (sharp modes), under the DDPM schedule (betas linear from 1e-4 to 0.02 over 1000 steps).
# The reference is the exact ODE endpoint at sigma = 0, computed by diffrax (Dopri8,
# float64, tolerance 1e-10).

# %%
mixture = sx.GaussianMixture.random(seed=0, dimension=64, components=8, std_range=(0.05, 0.25))
schedule = sx.schedules.VPDiscrete.ddpm_linear()
model = mixture.denoiser(schedule, prediction="noise")
noise = jax.random.normal(jax.random.PRNGKey(1), (SAMPLES, 64))
reference = mixture.flow_to_data(schedule.sigma(1.0) * noise, schedule, 1.0)


def rms_error(x):
    return float(np.sqrt(np.mean((np.asarray(x, np.float64) - reference) ** 2)))


# %% [markdown]
# Every run finishes with one denoising evaluation at the schedule's last time
# (`denoise_to_zero=True`), so NFE = steps + 1 for solvers with one evaluation per step;
# `solver.evaluations(steps, denoise_to_zero)` tells the NFE of any solver and
# `solver.steps_for(nfe, denoise_to_zero)` the number of steps that spends a given NFE
# (None for NFEs a multi-stage solver cannot hit exactly, which are skipped).

# %%
errors = {}
for name in SOLVERS:
    errors[name] = {}
    for nfe in NFES:
        steps = sx.solvers.get(name).steps_for(nfe, denoise_to_zero=True)
        if steps is None:
            continue
        x, info = sx.sample(model, name, noise, steps=steps, grid="logsnr", denoise_to_zero=True)
        assert int(info.nfe) == nfe
        errors[name][nfe] = rms_error(x)
    print(f"{name:16s}", " ".join(f"NFE {n}: {e:.2e}" for n, e in errors[name].items()))

# %% [markdown]
# The adaptive DPM-Solver-23 chooses its own steps per sample (here at its default
# tolerances); its NFE is the mean over samples.

# %%
x_adaptive, adaptive_info = sx.sample(model, "dpm-solver-adaptive", noise)
adaptive = (float(np.mean(adaptive_info.nfe)), rms_error(x_adaptive))
print(f"dpm-solver-adaptive: mean NFE {adaptive[0]:.1f}, error {adaptive[1]:.2e}")

# %% [markdown]
# ## A learned time grid
#
# `sx.tune_grid` fits the grid of one solver at one NFE by gradient descent on the distance
# between its few-step samples and an accurate solve from the same (training) noise. It
# holds out a quarter of its noise pool for validation and returns the grid with the
# lowest validation loss; we then measure it on the held-out noise above.

# %%
nfe = 6
tuned_times, tune_info = sx.tune_grid(
    model,
    "dpm++2m",
    steps=nfe - 1,
    key=jax.random.PRNGKey(7),
    shape=(64,),
    samples=64 if FAST else 2048,
    iterations=10 if FAST else 300,
)
x_uniform, _ = sx.sample(model, "dpm++2m", noise, steps=nfe - 1, grid="logsnr", denoise_to_zero=True)
x_tuned, _ = sx.sample(model, "dpm++2m", noise, grid=tuned_times, denoise_to_zero=True)
print(f"dpm++2m at NFE {nfe}: logSNR grid {rms_error(x_uniform):.2e}, learned grid {rms_error(x_tuned):.2e}")
print(f"fit: training RMS {float(tune_info.training_rms):.2e}, validation RMS {float(tune_info.validation_rms):.2e}")
print("learned times:", np.round(np.asarray(tuned_times), 4))

# %%
figure, axis = plt.subplots(figsize=(6, 4))
for name, values in errors.items():
    axis.loglog(list(values), list(values.values()), marker="o", label=name)
axis.loglog([adaptive[0]], [adaptive[1]], marker="s", linestyle="none", label="dpm-solver-adaptive")
axis.loglog([nfe], [rms_error(x_tuned)], marker="*", markersize=14, linestyle="none", label="dpm++2m, learned grid")
axis.set_xlabel("NFE")
axis.set_ylabel("RMS error against the exact ODE")
axis.set_title("Sharp 64-D Gaussian mixture, DDPM schedule")
axis.legend(fontsize=8)
figure.tight_layout()
