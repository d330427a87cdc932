"""Tiny class-conditional UNet checkpoints with random weights, for command-line tests:
cheap to compile, and saved like a trained model."""

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.models import checkpoints, networks

TINY = {"channels": 1, "widths": [8, 16], "groups": 4, "time_features": 8, "time_scale": 1.0, "num_classes": 10}
KINDS = {
    "diffusion": {"schedule": "ddpm", "prediction": "noise", "time_input": "discrete"},
    "flow": {"schedule": "rectified-flow", "prediction": "velocity", "time_input": "continuous"},
}


def random_network(seed: int):
    """A tiny UNet with small random weights, built abstractly and filled from one normal
    draw cut into the weights' shapes (eager initialisation compiles every initialiser
    separately, and one draw per weight in a jitted function takes some 40 s to compile on
    CPU)."""
    model = nnx.eval_shape(lambda: networks.UNet(**TINY, rngs=nnx.Rngs(0)))
    leaves, treedef = jax.tree.flatten(nnx.state(model, nnx.Param))
    sizes = [leaf.size for leaf in leaves]
    flat = 0.05 * np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (sum(sizes),)))
    pieces = np.split(flat, np.cumsum(sizes)[:-1])
    weights = [jnp.asarray(piece.reshape(leaf.shape), leaf.dtype) for piece, leaf in zip(pieces, leaves, strict=True)]
    nnx.update(model, jax.tree.unflatten(treedef, weights))
    return model


def save_tiny(path, kind: str = "diffusion", seed: int = 1) -> str:
    """Save a tiny model of `kind` ("diffusion" or "flow") to `path`; returns the path."""
    config = {"network": "UNet", "network_kwargs": TINY, **KINDS[kind], "null_label": 10}
    return str(checkpoints.save_model(path, random_network(seed), config))
