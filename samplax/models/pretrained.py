"""The models shipped inside the package, and the bridge from a trained network to a
`samplax.Denoiser`.

Shipped files live in `samplax/models/pretrained/` (no network access is needed):
"digits-diffusion" (VP diffusion, noise prediction, DDPM discrete schedule),
"digits-flow" (rectified flow, velocity), "digits-flow-attention" (the same with
self-attention at 8x8 and 4x4 as well, whose attention values RF-Edit shares; the default
of `samplax-sample --edit`) and "digits-classifier" (for the metrics). Each
config records the command and seed that trained it (see scripts/train.py).
"""

from __future__ import annotations

import importlib.resources
import pathlib

import flax.nnx as nnx
import jax.numpy as jnp

from samplax import schedules
from samplax.models.checkpoints import load_model
from samplax.models.networks import network_function
from samplax.samplers.denoiser import Denoiser

__all__ = [
    "DEFAULT_EDITING",
    "DEFAULT_GENERATIVE",
    "GENERATIVE",
    "IMAGE_SHAPE",
    "NAMES",
    "as_denoiser",
    "denoiser",
    "load",
    "path",
]

NAMES = ("digits-diffusion", "digits-flow", "digits-flow-attention", "digits-classifier")
# The shipped generative models (the others in NAMES are not generative).
GENERATIVE = ("digits-diffusion", "digits-flow", "digits-flow-attention")
# The model samplax-sample samples and inverts by default, and the one it edits with:
# digits-flow-attention attends at 8x8 and 4x4, whose values RF-Edit shares.
DEFAULT_GENERATIVE = "digits-diffusion"
DEFAULT_EDITING = "digits-flow-attention"
# The images every shipped model reads and writes: 8x8 grey digits. The number of classes
# of a class-conditional model is its config's "null_label" (classes 0 to null_label - 1).
IMAGE_SHAPE = (8, 8, 1)


def path(name: str) -> pathlib.Path:
    """The file of a shipped model."""
    if name not in NAMES:
        raise ValueError(f"unknown pretrained model {name!r}; choose one of {NAMES}")
    return pathlib.Path(str(importlib.resources.files("samplax.models") / "pretrained" / f"{name}.msgpack"))


def load(name_or_path) -> tuple[nnx.Module, dict]:
    """A shipped model by name, or any model or training checkpoint by path: (module, config)."""
    if not isinstance(name_or_path, (str, pathlib.PurePath)):
        raise TypeError(f"give a shipped model name {NAMES} or a checkpoint path, got {name_or_path!r} "
                        f"({type(name_or_path).__name__})")
    file = path(name_or_path) if name_or_path in NAMES else pathlib.Path(name_or_path)
    if not file.is_file():
        raise FileNotFoundError(f"{str(name_or_path)!r} is neither a shipped model ({', '.join(NAMES)}) nor an "
                                "existing checkpoint file")
    return load_model(file)


def as_denoiser(module: nnx.Module, schedule, prediction: str, time_input: str = "continuous", **options) -> Denoiser:
    """A `Denoiser` around an NNX network called as `module(x, t, **condition)`.

    The module is split (`nnx.split`) into its structure and state, and the state is bound
    in a `jax.tree_util.Partial`, so parameters stay traced arguments of the jitted
    sampler (no retracing or constant folding when the weights change). `options` go to
    `Denoiser` (condition, unconditional, guidance_scale, threshold_ratio).
    """
    return Denoiser(network_function(module), schedule, prediction, time_input, **options)


def denoiser(name_or_path, labels=None, guidance_scale: float = 1.0) -> Denoiser:
    """The `Denoiser` of a shipped or saved generative model, conditioned on `labels`
    (int array, one per sample; None for unconditional samples) with classifier-free
    guidance at `guidance_scale` (1 means no guidance). The Denoiser declares the sample
    shape (IMAGE_SHAPE) and the number of classes, so the workflows refuse noise of
    another shape and labels outside 0..classes - 1."""
    module, config = load(name_or_path)
    for key in ("schedule", "prediction", "time_input"):
        if key not in config:
            raise ValueError(f"{name_or_path!r} is not a generative model (its config has no {key!r})")
    null_label = config.get("null_label")
    declared = {"sample_shape": IMAGE_SHAPE, "classes": null_label}
    if labels is None and guidance_scale != 1.0:
        raise ValueError(f"guidance_scale={guidance_scale} guides towards labels; pass labels= (or guidance_scale=1)")
    if labels is None:  # a class-conditional network called without a label uses its null label
        return as_denoiser(module, schedules.get(config["schedule"]), config["prediction"], config["time_input"],
                           **declared)
    if null_label is None:
        raise ValueError(f"{name_or_path!r} is not class-conditional; pass labels=None")
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integer class labels, got dtype {labels.dtype}")
    labels = labels.astype(jnp.int32)
    options = {"condition": {"label": labels}, **declared}
    if guidance_scale != 1.0:
        options.update(unconditional={"label": jnp.full_like(labels, null_label)}, guidance_scale=guidance_scale)
    return as_denoiser(module, schedules.get(config["schedule"]), config["prediction"], config["time_input"], **options)
