"""`Info`: what a run of any workflow did, returned beside its arrays."""

from __future__ import annotations

import dataclasses

import jax

__all__ = ["Info"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Info:
    """What a run did: model evaluations (a scalar, or one per sample for adaptive
    solvers), the time grid it used (None for adaptive solvers), and the state after each
    evaluation when a trajectory was asked for."""

    nfe: jax.Array
    times: jax.Array | None
    trajectory: jax.Array | None = None
