"""Data-parallel sampling over the local devices.

Fixed-grid solvers take the same steps for every sample, so sampling is embarrassingly
parallel over the batch: place the batch (noise and per-sample conditions) on a
one-axis mesh of the local devices with `NamedSharding`, and the jitted sampler is
partitioned by XLA with no code change.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["batch_sharding", "shard_batch"]

AXIS = "batch"


def batch_sharding(devices=None) -> NamedSharding:
    """A sharding that splits the leading (batch) axis over `devices` (default: all local
    devices) and replicates the other axes."""
    if devices is not None and (isinstance(devices, str) or not all(isinstance(d, jax.Device) for d in devices)):
        raise TypeError(f"devices must be a list of jax devices (such as jax.local_devices()), got {devices!r}")
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must not be empty")
    return NamedSharding(Mesh(devices, (AXIS,)), PartitionSpec(AXIS))


def shard_batch(tree, devices=None):
    """Place every array of a pytree on the devices, split along its leading axis.

    Raises a ValueError when a leading axis does not divide evenly over the devices.
    """
    sharding = batch_sharding(devices)
    count = sharding.mesh.size

    def place(value):
        if not isinstance(value, (jax.Array, np.ndarray)):
            raise TypeError(f"shard_batch places arrays; got a {type(value).__name__} (convert it with jnp.asarray)")
        if jax.numpy.ndim(value) == 0:
            raise ValueError("shard_batch needs arrays with a leading batch axis, got a scalar")
        if value.shape[0] % count:
            raise ValueError(
                f"batch size {value.shape[0]} does not divide over the {count} local devices; "
                f"use a batch size that is a multiple of {count}"
            )
        return jax.device_put(value, sharding)

    return jax.tree.map(place, tree)
