"""Divergences of vector fields, div f = trace of the Jacobian, for one sample at a time:
exact, or Hutchinson's unbiased estimate. The probability-flow likelihood integrates them
along the ODE; the Fokker-Planck penalty differentiates through them.

An estimator is called as `estimator(field, x, probes) -> (field(x), div field(x))`, with
`probes` from `estimator.probes(key, x)` when it `needs_key`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from samplax.checks import check_count

__all__ = ["ExactDivergence", "Hutchinson"]


@dataclasses.dataclass(frozen=True)
class ExactDivergence:
    """The exact trace of the Jacobian of the ODE's vector field: one forward-mode product
    per dimension of a sample, `chunk_size` of them at a time (memory grows with the chunk,
    not with the dimension)."""

    chunk_size: int = 16
    needs_key: ClassVar[bool] = False

    def __post_init__(self):
        check_count("chunk_size", self.chunk_size)

    def __call__(self, field, x, probes):
        """(field(x), div field(x)) for one sample x."""
        value, linear = jax.linearize(field, x)
        size = x.size
        chunk = min(self.chunk_size, size)
        count = -(-size // chunk)
        indices = jnp.arange(count * chunk).reshape(count, chunk)

        def diagonal(rows):  # the Jacobian's diagonal entries at `rows` (padding rows give 0)
            valid = rows < size
            basis = jax.nn.one_hot(jnp.where(valid, rows, 0), size, dtype=x.dtype) * valid[:, None]
            products = jax.vmap(linear)(basis.reshape((chunk,) + x.shape)).reshape(chunk, size)
            return jnp.sum(products * basis, axis=1)

        if count == 1:  # no loop for a small dimension (cheaper to differentiate through)
            return value, jnp.sum(diagonal(indices[0]))
        return value, jnp.sum(jax.lax.map(diagonal, indices))


@dataclasses.dataclass(frozen=True)
class Hutchinson:
    """Hutchinson's unbiased trace estimate E[u^T J u] (Hutchinson 1989; used for
    likelihoods by FFJORD, Grathwohl et al. 2019), averaged over `probes` vectors u per
    sample with independent Rademacher or standard normal entries. The probes are drawn
    once per sample and held fixed along its trajectory, so the integrand stays smooth for
    the adaptive solver; the log-likelihood is then unbiased and its variance falls as
    1 / probes. Rademacher probes have the smaller variance (Hutchinson 1989)."""

    probes_per_sample: int = 1
    distribution: str = "rademacher"
    needs_key: ClassVar[bool] = True

    def __post_init__(self):
        check_count("probes_per_sample", self.probes_per_sample)
        if self.distribution not in ("rademacher", "gaussian"):
            raise ValueError(f"distribution must be 'rademacher' or 'gaussian', got {self.distribution!r}")

    def probes(self, key, like):
        """(probes_per_sample, *like.shape) probe vectors for one sample."""
        shape = (self.probes_per_sample,) + like.shape
        if self.distribution == "rademacher":
            return jax.random.rademacher(key, shape, like.dtype)
        return jax.random.normal(key, shape, like.dtype)

    def __call__(self, field, x, probes):
        """(field(x), the estimate of div field(x)) for one sample x."""
        value, linear = jax.linearize(field, x)
        products = jax.vmap(linear)(probes)
        return value, jnp.mean(jnp.sum((probes * products).reshape(probes.shape[0], -1), axis=1))
