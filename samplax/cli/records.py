"""The files that record a run: run.json (the resolved options, package versions and what
the run measured) and, for --invert, noise.npz. Both are written atomically."""

from __future__ import annotations

import io
import json
import pathlib
import platform
from importlib import metadata

import numpy as np

from samplax.cli.config import RunConfig
from samplax.models.checkpoints import write_atomic

__all__ = ["versions", "write_noise", "write_run_record"]


def versions() -> dict:
    """The Python version and the versions of the packages a run depends on (None if absent)."""
    found = {"python": platform.python_version()}
    for package in ("samplax", "jax", "jaxlib", "flax", "optax", "numpy", "pillow"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def write_run_record(config: RunConfig, result: dict) -> pathlib.Path:
    """Write OUTDIR/run.json.

    Args:
        config: the final run configuration; its options are recorded as "arguments".
        result: what the mode's runner measured (NFE, wall time, labels, ...).

    Returns:
        The path written.
    """
    record = {"arguments": config.arguments(), "versions": versions(), **result}
    path = pathlib.Path(config.outdir) / "run.json"
    write_atomic(path, (json.dumps(record, indent=2) + "\n").encode())
    return path


def write_noise(path: pathlib.Path, names, noise: np.ndarray, companion: np.ndarray | None = None) -> None:
    """Write noise.npz: the inverted noise and the input names in order.

    Args:
        path: the file to write.
        names: the input names, one per image.
        noise: (N, H, W, 1), scaled like the noise `samplax.sample` starts from.
        companion: with --reversible, the second half of the reversible state
            (`samplax.ReversibleState(noise, companion)` samples back exactly), else None.
    """
    arrays = {"noise": noise, "names": np.asarray(names)}
    if companion is not None:
        arrays["companion"] = companion
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, buffer.getvalue())
