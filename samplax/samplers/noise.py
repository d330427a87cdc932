"""Where a stochastic solver's noise comes from: one key per sample, and a noise source
that turns the keys into the plan's standard normal draws.

Sample i's draws depend only on its own key, so a sample's noise never depends on the
batch it is in. Two sources:

- `IndependentNoise`: draw k of sample i is `normal(fold_in(key_i, k))`, fresh at every
  draw (cheapest).
- `BrownianNoise`: draw k is the normalised increment (W(b) - W(a)) / sqrt(b - a) of a
  Brownian path W over the draw's interval [a, b] of schedule time, one diffrax
  `VirtualBrownianTree` per sample (and per stream of the plan). The path does not depend
  on the grid, so one key sampled with 10 and with 20 steps follows the same Brownian
  motion and gives nearby samples (as k-diffusion's BrownianTreeNoiseSampler, whose clock is
  sigma / alpha; ours is t, which is finite on every schedule).
"""

from __future__ import annotations

import abc
import dataclasses

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from samplax.checks import check_fields
from samplax.schedules import Schedule

__all__ = [
    "BrownianNoise", "IndependentNoise", "NOISE_SOURCES", "NoiseSource", "as_noise_source", "sample_keys",
]


def _is_typed_key(key) -> bool:
    return jnp.issubdtype(jnp.result_type(key), jax.dtypes.prng_key)


def sample_keys(key, batch: int) -> jax.Array:
    """One typed key per sample from `key`: a single key (typed, or raw uint32 of shape
    (2,)), from which sample i's key is `fold_in(key, i)`, or an array of `batch`
    per-sample keys, used as they are."""
    if not isinstance(key, (jax.Array, np.ndarray)):
        raise TypeError(f"key must be a jax.random key (jax.random.key(seed)) or an array of them, got {key!r:.60}")
    if not _is_typed_key(key):
        if jnp.result_type(key) != jnp.uint32 or jnp.shape(key)[-1:] != (2,):
            raise TypeError(
                f"key must be a jax.random key (jax.random.key(seed) or PRNGKey(seed)), or an array of them, "
                f"got dtype {jnp.result_type(key)} and shape {jnp.shape(key)}"
            )
        key = jax.random.wrap_key_data(key)
    if key.shape == ():
        return jax.vmap(lambda index: jax.random.fold_in(key, index))(jnp.arange(batch))
    if key.shape != (batch,):
        raise ValueError(f"give one key or one key per sample ({batch}), got keys of shape {key.shape}")
    return key


class NoiseSource(abc.ABC):
    """Settings of where the noise comes from; `drawer` binds them to the keys."""

    @abc.abstractmethod
    def drawer(self, keys: jax.Array, schedule: Schedule, like: jax.ShapeDtypeStruct):
        """`draw(index, interval, stream)`: the standard normal draw `index` of the solve,
        over `interval` (two times) on path `stream`, for every sample, shaped like
        `like` (batch first), as the engine asks for it (`engine.NoisePlan`)."""

    def checked_drawer(self, keys: jax.Array, schedule: Schedule, like: jax.ShapeDtypeStruct):
        """`drawer` whose draws are checked, when traced, to have `like`'s shape and
        dtype, so a noise source of one's own that draws otherwise is named."""
        draw = self.drawer(keys, schedule, like)

        def checked(index, interval, stream):
            xi = draw(index, interval, stream)
            if jnp.shape(xi) != like.shape or jnp.result_type(xi) != like.dtype:
                raise ValueError(
                    f"noise source {self!r} drew an array of shape {jnp.shape(xi)} and dtype {jnp.result_type(xi)}; "
                    f"each draw must be shaped like the state, {like.shape} of {like.dtype}"
                )
            return xi

        return checked

    def check_finite_draw(self, keys: jax.Array, schedule: Schedule, like, times) -> None:
        """Raise a FloatingPointError if this source's first draw over the grid `times`
        holds NaN or inf: looked at only once a solve has failed, so that a noise source
        of one's own at fault is named instead of the solver."""
        interval = jnp.stack([times[0], times[1]])
        xi = self.checked_drawer(keys, schedule, jax.ShapeDtypeStruct(like.shape, like.dtype))(0, interval, 0)
        if not bool(jnp.all(jnp.isfinite(xi))):
            raise FloatingPointError(f"sampling produced NaN or inf values because noise source {self!r} drew "
                                     "NaN or inf: the noise source is at fault, not the solver")


@dataclasses.dataclass(frozen=True)
class IndependentNoise(NoiseSource):
    """Independent standard normals at every draw, from each sample's key and the draw's
    index."""

    def drawer(self, keys: jax.Array, schedule: Schedule, like: jax.ShapeDtypeStruct):
        del schedule

        def normal(key, index):
            return jax.random.normal(jax.random.fold_in(key, index), like.shape[1:], like.dtype)

        def draw(index, interval, stream):
            del interval, stream
            return jax.vmap(normal, in_axes=(0, None))(keys, index)

        return draw


@dataclasses.dataclass(frozen=True)
class BrownianNoise(NoiseSource):
    """Normalised increments of one Brownian path per sample over schedule time, on
    diffrax's VirtualBrownianTree over [0, schedule.t_max], resolved to `tolerance`
    times that range (every step of the grid must be much longer than that)."""

    tolerance: float = 2.0**-22

    def __post_init__(self):
        check_fields(self)
        if not 0 < self.tolerance < 1:
            raise ValueError(f"BrownianNoise tolerance is relative to the time range, in (0, 1); got {self.tolerance}")

    def drawer(self, keys: jax.Array, schedule: Schedule, like: jax.ShapeDtypeStruct):
        end = float(schedule.t_max)
        shape = jax.ShapeDtypeStruct(like.shape[1:], like.dtype)

        def increment(key, low, high):
            path = diffrax.VirtualBrownianTree(0.0, end, self.tolerance * end, shape, key)
            return path.evaluate(low, high) / jnp.sqrt(high - low).astype(like.dtype)

        def draw(index, interval, stream):
            del index
            low, high = jnp.min(interval), jnp.max(interval)
            return jax.vmap(lambda key: increment(jax.random.fold_in(key, stream), low, high))(keys)

        return draw


NOISE_SOURCES = {"independent": IndependentNoise(), "brownian": BrownianNoise()}


def as_noise_source(source):
    """A noise source object from itself or its name ("independent", "brownian")."""
    if isinstance(source, str):
        if source not in NOISE_SOURCES:
            raise ValueError(f"unknown noise source {source!r}; choose one of {tuple(NOISE_SOURCES)}")
        return NOISE_SOURCES[source]
    if not isinstance(source, NoiseSource):
        raise TypeError(f"noise_source must be 'independent', 'brownian' or a noise source object, got {source!r}")
    return source
