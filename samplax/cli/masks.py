"""The regions and observations of `samplax-sample --init-image/--restore`: the --mask
value as an array, and the operators a restoration observes its input through.

A --mask names the region that is regenerated, as a mask image does in diffusers (white
is repainted, black kept): `left`, `right`, `top` or `bottom` (that half of the image),
`random:FRACTION` (that fraction of the pixels, drawn once with seed 0, the same for
every input), or an image file or `.npy` array of the model's size (a file of another
size is resized with nearest-neighbour), regenerated where it is at least half white
(pixel >= 128, or value >= 0.5).
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["HALVES", "box_average", "known_region", "regenerated_region"]

HALVES = ("left", "right", "top", "bottom")


def _half(name: str, height: int, width: int) -> np.ndarray:
    region = np.zeros((height, width), bool)
    rows, columns = slice(None), slice(None)
    if name in ("left", "right"):
        columns = slice(0, width // 2) if name == "left" else slice(width // 2, width)
    else:
        rows = slice(0, height // 2) if name == "top" else slice(height // 2, height)
    region[rows, columns] = True
    return region


def _random(spec: str, height: int, width: int) -> np.ndarray:
    try:
        fraction = float(spec.split(":", 1)[1])
    except ValueError:
        fraction = float("nan")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"--mask {spec!r}: write random:FRACTION with a fraction strictly between 0 and 1")
    return np.random.default_rng(0).random((height, width)) < fraction


def _from_file(spec: str, height: int, width: int) -> np.ndarray:
    path = pathlib.Path(spec)
    if not path.is_file():
        raise ValueError(f"--mask {spec!r} is not a file nor one of {', '.join(HALVES)}, random:FRACTION")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise ValueError(f"--mask {spec!r} is not a readable .npy array: {error}") from None
        if array.shape not in ((height, width), (height, width, 1)):
            raise ValueError(f"--mask {spec!r} has shape {array.shape}; expected ({height}, {width}[, 1])")
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or not np.all(np.isfinite(array)):
            raise ValueError(f"--mask {spec!r} must hold finite numbers (1 where regenerated, 0 where kept)")
        return array.reshape(height, width) >= 0.5
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            image = opened.convert("L")
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"--mask {spec!r} is not an image Pillow can read: {error}") from None
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(image) >= 128


def regenerated_region(spec: str, shape: tuple[int, int, int]) -> np.ndarray:
    """The --mask value as float32 (H, W, 1): 1 where the image is regenerated, 0 where kept.

    Raises ValueError naming the mask when it cannot be read, or when it regenerates
    nothing (the result would be the input) or everything (that is plain sampling).
    """
    height, width = shape[:2]
    if spec in HALVES:
        region = _half(spec, height, width)
    elif spec.startswith("random:"):
        region = _random(spec, height, width)
    else:
        region = _from_file(spec, height, width)
    if not region.any():
        raise ValueError(f"--mask {spec!r} regenerates no pixel (white or 1 marks what is regenerated)")
    if region.all():
        raise ValueError(f"--mask {spec!r} regenerates every pixel; without --mask the whole image is regenerated")
    return region.astype(np.float32)[..., None]


def known_region(spec: str, shape: tuple[int, int, int]) -> jax.Array:
    """1 where the image is kept (known), 0 where --mask regenerates it: the mask of `samplax.inpaint`."""
    return jnp.asarray(1.0 - regenerated_region(spec, shape))


def box_average(factor: int, images: jax.Array) -> jax.Array:
    """Averages over factor x factor blocks: (B, H, W, C) -> (B, H / factor, W / factor, C)."""
    batch, height, width, channels = images.shape
    blocks = images.reshape(batch, height // factor, factor, width // factor, factor, channels)
    return blocks.mean(axis=(2, 4))
