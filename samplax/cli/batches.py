"""Batches of one compiled shape, shared by every mode: index arrays padded with their
last index, and the progress bar over them."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["in_batches", "progress"]


def in_batches(count: int, size: int) -> Iterator[tuple[np.ndarray, int]]:
    """Index arrays of `size` covering 0..count-1, the last padded with its last index, so
    every batch has one compiled shape.

    Args:
        count: how many items (0 for a process with no seeds of its own: no batch).
        size: items per batch.

    Returns:
        An iterator of (indices, how many of them are real).
    """
    for start in range(0, count, max(size, 1)):
        real = min(size, count - start)
        yield np.minimum(np.arange(start, start + size), start + real - 1), real


def progress(batches: list, hidden: bool, description: str):
    """The batches wrapped in a progress bar (none when `hidden` or when there are none)."""
    from tqdm.auto import tqdm

    return tqdm(batches, disable=hidden or not batches, unit="batch", desc=description)
