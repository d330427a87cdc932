"""Reading the images given to `samplax-sample --invert/--edit`: files, arrays, or
held-out digits.

An input is one of
- an image file Pillow reads (PNG, JPEG, ...): converted to grey and, if its size differs
  from the model's, resized with a box filter;
- a `.npy` array of one image (H, W[, 1]) or a stack (N, H, W[, 1]) with values in [-1, 1];
- `digits:LABEL` or `digits:LABEL:INDICES`: the held-out scikit-learn test digits of one
  class (all of them, or the given positions among them, e.g. `digits:3:0-5`), so that the
  editing demo needs no file of its own.

Pixel convention: the model's, as the images samplax-sample writes: light strokes (+1,
255) on a dark background (-1, 0). Scans with dark ink on white paper are flipped with
`dark_ink=True` (`samplax.cli.images.to_pixels` is the inverse of reading).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib

import numpy as np

from samplax.cli.options import parse_seeds

__all__ = ["EIGHT_BIT_MODES", "Inputs", "read_inputs"]

# Pillow modes whose conversion to grey keeps every level (16-bit "I;16" and float "F"
# would be clipped at 255 and read as a saturated or black image).
EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr")


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Images (N, H, W, 1) float32 in [-1, 1], a unique name per image (for the output
    files), the class of each image where the input says it (digits:LABEL) or None, and
    the names of the inputs that were resized."""

    images: np.ndarray
    names: tuple[str, ...]
    labels: tuple[int | None, ...]
    resized: tuple[str, ...]


def _read_digits(spec: str) -> tuple[np.ndarray, list[str], list[int]]:
    """digits:LABEL[:INDICES]: (images, names, labels) of held-out test digits."""
    from samplax.models.data import digits

    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[1].isdigit():
        raise ValueError(f"input {spec!r}: write digits:LABEL or digits:LABEL:INDICES, e.g. digits:3:0-5")
    label = int(parts[1])
    test = digits("test")
    if label not in set(test.labels.tolist()):
        raise ValueError(f"input {spec!r}: the digits have classes 0-9, not {label}")
    images = test.images[test.labels == label]
    try:
        indices = list(range(len(images))) if len(parts) == 2 else parse_seeds(parts[2])
    except argparse.ArgumentTypeError as error:
        raise ValueError(f"input {spec!r}: {error}") from None
    if max(indices) >= len(images):
        raise ValueError(
            f"input {spec!r}: there are {len(images)} test digits of class {label} (indices 0-{len(images) - 1})"
        )
    return images[indices], [f"digit{label}-{i:03d}" for i in indices], [label] * len(indices)


def _read_array(path: pathlib.Path, shape) -> tuple[np.ndarray, list[str]]:
    """A .npy image or stack in [-1, 1], reshaped to (N, H, W, 1), and a name per image."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ValueError(f"input {str(path)!r} is not a readable .npy array: {error}") from None
    height, width = shape[:2]
    expected = f"({height}, {width}[, 1]) or (N, {height}, {width}[, 1])"
    if array.shape in ((height, width), (height, width, 1)):
        array = array.reshape(1, height, width, 1)
    elif array.ndim in (3, 4) and array.shape[1:3] == (height, width) and array.shape[3:] in ((), (1,)):
        array = array.reshape(-1, height, width, 1)
    else:
        raise ValueError(f"input {str(path)!r} has shape {array.shape}; expected {expected}")
    if array.size == 0:
        raise ValueError(f"input {str(path)!r} holds no image (shape {array.shape})")
    if not np.issubdtype(array.dtype, np.floating) or not np.all(np.isfinite(array)) or np.abs(array).max() > 1.0:
        raise ValueError(f"input {str(path)!r} must hold finite floats in [-1, 1]")
    names = [path.stem] if len(array) == 1 else [f"{path.stem}-{k:03d}" for k in range(len(array))]
    return array.astype(np.float32), names


def _read_image(path: pathlib.Path, shape, dark_ink: bool) -> tuple[np.ndarray, bool]:
    """An image file as (H, W, 1) in [-1, 1], and whether it had to be resized."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            if opened.mode not in EIGHT_BIT_MODES:
                raise ValueError(f"input {str(path)!r} is a {opened.mode!r} image (16-bit or floating point); "
                                 "write it as an 8-bit image, or as a .npy array in [-1, 1]")
            image = opened.convert("L")
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"input {str(path)!r} is not an image Pillow can read: {error}") from None
    height, width = shape[:2]
    resized = image.size != (width, height)
    if resized:
        image = image.resize((width, height), Image.Resampling.BOX)
    pixels = np.asarray(image, np.float32)
    if dark_ink:
        pixels = 255.0 - pixels
    return (pixels / 127.5 - 1.0)[..., None], resized


def read_inputs(specs, shape: tuple[int, int, int], dark_ink: bool = False) -> Inputs:
    """Read every input (see the module docs).

    Args:
        specs: the INPUTs: image files, .npy files, digits:LABEL[:INDICES].
        shape: (H, W, 1) of the model's images.
        dark_ink: the image files have dark strokes on a light background.

    Returns:
        The `Inputs`; raises ValueError naming the input that cannot be used, or the
        names that two inputs would both write.
    """
    images, names, labels, resized = [], [], [], []
    for spec in specs:
        if spec.startswith("digits:"):
            batch, batch_names, batch_labels = _read_digits(spec)
            images.append(batch)
            names += batch_names
            labels += batch_labels
            continue
        path = pathlib.Path(spec)
        if not path.is_file():
            raise ValueError(f"input {spec!r} is not a file (nor digits:LABEL[:INDICES])")
        if path.suffix.lower() == ".npy":
            batch, batch_names = _read_array(path, shape)
        else:
            image, was_resized = _read_image(path, shape, dark_ink)
            batch, batch_names = image[None], [path.stem]
            resized += [spec] if was_resized else []
        images.append(batch)
        names += batch_names
        labels += [None] * len(batch)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"inputs would write to the same output names {repeated}; rename or give them once")
    return Inputs(np.concatenate(images).astype(np.float32), tuple(names), tuple(labels), tuple(resized))
