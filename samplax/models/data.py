"""Small data sets that need no download: scikit-learn's 8x8 digits and 2-D toy
distributions (moons, checkerboard, eight Gaussians, swiss roll)."""

from __future__ import annotations

import dataclasses

import numpy as np

from samplax.checks import check_count

__all__ = ["Digits", "TOYS", "digits", "toy"]

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class Digits:
    """Images (n, 8, 8, 1) float32 in [-1, 1] and labels (n,) int32 in 0..9."""

    images: np.ndarray
    labels: np.ndarray


def digits(split: str = "train") -> Digits:
    """scikit-learn's digits (1,797 images, 0-16 grey levels) scaled to [-1, 1].

    The split is fixed: a stratified 80/20 train/test split with seed 0, so the held-out
    digits used by the metrics never change.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 8.0 - 1.0)[..., None]
    labels = bunch.target.astype(np.int32)
    if split == "all":
        return Digits(images, labels)
    train_index, test_index = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=labels
    )
    index = train_index if split == "train" else test_index
    return Digits(images[index], labels[index])


def _moons(rng, n):
    from sklearn.datasets import make_moons

    x, _ = make_moons(n, noise=0.05, random_state=rng.integers(2**31))
    return (x - np.array([0.5, 0.25])) * 1.5


def _checkerboard(rng, n):
    # Eight unit squares of a 4x4 board on [-2, 2]^2, alternating colours.
    x = rng.uniform(-2.0, 2.0, size=n)
    y = rng.uniform(0.0, 1.0, size=n) + rng.integers(0, 2, size=n) * 2.0 - 2.0
    y = y + (np.floor(x) % 2)
    return np.stack([x, y], axis=1)


def _eight_gaussians(rng, n):
    angles = 2 * np.pi * rng.integers(0, 8, size=n) / 8
    centres = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return centres + 0.1 * rng.standard_normal((n, 2))


def _swiss_roll(rng, n):
    from sklearn.datasets import make_swiss_roll

    x, _ = make_swiss_roll(n, noise=0.5, random_state=rng.integers(2**31))
    return x[:, [0, 2]] / 5.0


TOYS = {"moons": _moons, "checkerboard": _checkerboard, "eight-gaussians": _eight_gaussians, "swiss-roll": _swiss_roll}


def toy(name: str, n: int, seed: int = 0) -> np.ndarray:
    """n points (n, 2) float32 of a 2-D toy distribution, roughly within [-2.5, 2.5]^2."""
    if name not in TOYS:
        raise ValueError(f"unknown toy data set {name!r}; choose one of {sorted(TOYS)}")
    check_count("n", n)
    return TOYS[name](np.random.default_rng(seed), n).astype(np.float32)
