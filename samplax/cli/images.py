"""Writing images: [-1, 1] arrays to 8-bit pixels, PNG files (atomically), and the mosaics
written as grid.png (tiles upscaled with nearest-neighbour for viewing)."""

from __future__ import annotations

import io
import math
import pathlib

import numpy as np

from samplax.models.checkpoints import write_atomic

__all__ = ["mosaic", "pairs_mosaic", "read_png", "to_pixels", "write_png"]


def to_pixels(images, dark_ink: bool = False) -> np.ndarray:
    """Images in [-1, 1] as uint8 pixels (the inverse of reading an input).

    Args:
        images: float images, any shape.
        dark_ink: flip to dark strokes on a light background.

    Returns:
        uint8 pixels of the same shape: -1 is 0 and +1 is 255 (flipped for dark ink).
    """
    images = np.asarray(images, np.float64)
    pixels = np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return 255 - pixels if dark_ink else pixels


def write_png(path: pathlib.Path, pixels: np.ndarray) -> None:
    """Write (H, W, 1) or (H, W, 3) uint8 pixels as a PNG, atomically (temporary name, rename)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())


def read_png(path: pathlib.Path) -> np.ndarray:
    """A grey PNG written by `write_png`, as (H, W, 1) uint8 pixels."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image)[..., None]


def mosaic(tiles: list[np.ndarray], columns: int | None = None, scale: int | None = None,
           padding: int = 1) -> np.ndarray:
    """Tiles side by side in rows, on a white background, for viewing.

    Args:
        tiles: (h, w, channels) uint8 images of one shape, in reading order.
        columns: tiles per row (default: a near-square mosaic).
        scale: each tile is upscaled this many times (nearest-neighbour); by default to
            about 64 pixels high (8 times for 8x8 digits, once from 64 pixels up).
        padding: white pixels between and around the tiles.

    Returns:
        The mosaic as (H, W, channels) uint8 pixels.
    """
    columns = columns or math.ceil(math.sqrt(len(tiles)))
    scale = scale or max(1, 64 // tiles[0].shape[0])
    rows = math.ceil(len(tiles) / columns)
    height, width = tiles[0].shape[0] * scale, tiles[0].shape[1] * scale
    step_y, step_x = height + padding, width + padding
    canvas = np.full((rows * step_y + padding, columns * step_x + padding, tiles[0].shape[-1]), 255, np.uint8)
    for k, tile in enumerate(tiles):
        y, x = padding + (k // columns) * step_y, padding + (k % columns) * step_x
        canvas[y : y + height, x : x + width] = np.kron(tile, np.ones((scale, scale, 1), np.uint8))
    return canvas


def pairs_mosaic(sources: np.ndarray, results: np.ndarray) -> np.ndarray:
    """Each source beside its result, the pairs in rows of a near-square mosaic.

    Args:
        sources, results: (N, h, w, 1) uint8 pixels, in the same order.

    Returns:
        The mosaic as (H, W, 1) uint8 pixels.
    """
    pairs = math.ceil(math.sqrt(len(sources)))
    tiles = [tile for pair in zip(sources, results, strict=True) for tile in pair]
    return mosaic(tiles, columns=2 * pairs)
