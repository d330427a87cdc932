"""Would Hutch++ pay for the likelihood of the digits models? The spread of the trace
estimates per matrix-vector budget, on the exact Jacobians of the probability-flow
vector field.

Hutch++ (Meyer et al. 2021, "Hutch++: Optimal Stochastic Trace Estimation") spends a third
of its m products on a sketch of the range, takes that part's trace exactly and Hutchinson's
estimate of the rest; it beats Hutchinson when a few eigenvalues carry the Jacobian's
Frobenius norm. Here the Jacobian of dx/du (u = -lambda) of the shipped digits-diffusion
model is formed exactly (64 forward-mode products) at held-out digits noised to several
levels, and both estimators are sampled many times at equal budgets m. The ratio of their
standard deviations says whether Hutch++ would pay; in a likelihood solve it would also
need a QR factorisation at every evaluation.

    python benchmarks/hutchinson_variance.py
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from problems import markdown_table, write_json, write_text

from samplax.models import data, pretrained

RESULTS = os.path.join(os.path.dirname(__file__), "results")
BUDGETS = (3, 6, 12, 24)
LEVELS = (-4.0, -1.0, 0.0, 2.0, 4.0)  # lambda of the noised digits
TRIALS = 2000


def jacobians(model, images, lambdas):
    """Exact Jacobians (n, 64, 64) of dx/du at the digits noised to each lambda."""
    schedule = model.schedule

    def field(x, lambda_value):
        (alpha, sigma), (d_alpha, d_sigma) = jax.jvp(schedule.alpha_sigma_from_lambda, (lambda_value,), (-1.0,))
        image = x.reshape(1, 8, 8, 1)
        prediction = model.data(image, schedule.inverse_lambda(lambda_value)).reshape(-1)
        return d_alpha * prediction + d_sigma * (x - alpha * prediction) / sigma

    rows = []
    for lambda_value in lambdas:
        alpha, sigma = schedule.alpha_sigma_from_lambda(lambda_value)
        noise = jax.random.normal(jax.random.key(0), images.shape)
        points = alpha * images + sigma * noise
        rows.append(jax.vmap(jax.jacfwd(field), in_axes=(0, None))(points, lambda_value))
    return np.asarray(jnp.concatenate(rows))


def hutchinson(matrix, budget, rng):
    probes = rng.choice([-1.0, 1.0], size=(matrix.shape[0], budget))
    return np.einsum("ik,ij,jk->", probes, matrix, probes) / budget


def hutch_plus_plus(matrix, budget, rng):
    third = budget // 3
    sketch = rng.choice([-1.0, 1.0], size=(matrix.shape[0], third))
    probes = rng.choice([-1.0, 1.0], size=(matrix.shape[0], budget - 2 * third))
    basis, _ = np.linalg.qr(matrix @ sketch)
    projected = probes - basis @ (basis.T @ probes)
    return np.trace(basis.T @ matrix @ basis) + np.einsum("ik,ij,jk->", projected, matrix, projected) / probes.shape[1]


def main():
    model = pretrained.denoiser("digits-diffusion")
    images = jnp.asarray(data.digits("test").images[:8].reshape(8, -1))
    matrices = jacobians(model, images, LEVELS)
    rng = np.random.default_rng(0)
    rows, report = [], {"budgets": BUDGETS, "levels": LEVELS, "ratios": {}}
    for budget in BUDGETS:
        ratios = []
        for matrix in matrices:
            plain = np.std([hutchinson(matrix, budget, rng) for _ in range(TRIALS)])
            plus = np.std([hutch_plus_plus(matrix, budget, rng) for _ in range(TRIALS)])
            ratios.append(plus / plain)
        ratios = np.array(ratios)
        report["ratios"][budget] = ratios.tolist()
        rows.append([str(budget), f"{np.median(ratios):.2f}", f"{ratios.min():.2f}", f"{ratios.max():.2f}"])
    header = ["products per evaluation", "median std(Hutch++)/std(Hutchinson)", "min", "max"]
    text = "\n".join([
        "# Hutch++ against Hutchinson on the digits-diffusion Jacobians",
        "",
        "Command: `python benchmarks/hutchinson_variance.py`. "
        f"{len(matrices)} Jacobians (8 held-out digits at lambda {LEVELS}), {TRIALS} trials each.",
        "",
        *markdown_table(header, rows),
    ]) + "\n"
    print(text)
    write_json(os.path.join(RESULTS, "hutchinson_variance.json"), report)
    write_text(os.path.join(RESULTS, "hutchinson_variance.md"), text)


if __name__ == "__main__":
    main()
