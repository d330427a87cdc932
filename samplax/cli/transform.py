"""What the modes with INPUTs share: reading the inputs, one class and one key per input,
running a step over the inputs in batches, and writing one PNG per input and the pairs
mosaic."""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from samplax.cli.batches import in_batches, progress
from samplax.cli.config import RunConfig
from samplax.cli.images import pairs_mosaic, to_pixels, write_png
from samplax.cli.inputs import Inputs, read_inputs
from samplax.cli.model import Model
from samplax.cli.options import UNCONDITIONAL, UsageError
from samplax.cli.outdir import Folder

__all__ = ["INPUT_SEED", "check_guided", "input_keys", "input_labels", "over_inputs", "read", "write_results"]

INPUT_SEED = 0  # input i draws its noise from fold_in(key(INPUT_SEED), i)


def read(config: RunConfig, model: Model) -> Inputs:
    """The run's INPUTs as images of the model's shape; a bad input, or an input file inside
    --outdir (whose files the run replaces), is a `UsageError`."""
    outdir = pathlib.Path(config.outdir).resolve()
    for spec in config.inputs:
        path = pathlib.Path(spec)
        if path.is_file() and path.resolve().parent == outdir:
            raise UsageError(f"input {spec!r} lies in --outdir {config.outdir!r}, whose files this run replaces; "
                             "move it or choose another --outdir")
    try:
        return read_inputs(config.inputs, model.image_shape, dark_ink=config.dark_ink)
    except ValueError as error:
        raise UsageError(str(error)) from None


def input_labels(option: str, given, inputs: Inputs, model: Model) -> np.ndarray | None:
    """One class per input.

    Args:
        option: the option that gives the class ("--label" or "--source-label"), for errors.
        given: its value: a class, "none", or None when not given.
        inputs: the inputs (digits:LABEL inputs carry their class).
        model: the model (its null label means "no class").

    Returns:
        None for an unconditional model; else int32 labels: the option's value, else the
        class of digits:LABEL inputs, else the null label. With --source-label not given,
        every input must carry its class.
    """
    null = model.null_label
    if given == UNCONDITIONAL or null is None:
        return None if null is None else np.full(len(inputs.names), null, np.int32)
    if given is not None:
        return np.full(len(inputs.names), given, np.int32)
    if option == "--source-label" and any(label is None for label in inputs.labels):
        raise UsageError(
            "--edit needs --source-label, the class of the input images (only digits:LABEL inputs carry one)"
        )
    return np.asarray([null if label is None else label for label in inputs.labels], np.int32)


def input_keys(count: int) -> jax.Array:
    """One key per input, `fold_in(key(INPUT_SEED), i)` for input i: the noise of
    --init-image and --restore, the same for an input whatever the batch size."""
    return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(INPUT_SEED), i))(jnp.arange(count))


def check_guided(config: RunConfig, labels: np.ndarray | None, model: Model) -> None:
    """Classifier-free guidance needs a class to guide towards: with every input at the
    null label, both branches are the same and --guidance-scale would only cost time."""
    if config.guidance_scale != 1.0 and (labels is None or bool(np.all(labels == model.null_label))):
        raise UsageError(f"--guidance-scale {config.guidance_scale:g} guides towards a class, and these inputs have "
                         "none: give --label (or digits:LABEL inputs with --init-image)")


def over_inputs(config: RunConfig, inputs: Inputs, step: Callable):
    """Run `step` over the inputs in batches of one compiled shape.

    Args:
        config: the run configuration (batch size, progress bar, mode).
        inputs: the inputs.
        step: `step(indices) -> (nfe, {name: array})` for one padded batch of input indices.

    Returns:
        (the NFE of the last batch, {name: the arrays of every input, in order}, wall time
        in seconds). A NaN or inf is a `RuntimeError` and nothing is written.
    """
    started = time.perf_counter()
    size = min(config.batch_size, len(inputs.names))
    nfe, outputs = None, {}
    for index, real in progress(list(in_batches(len(inputs.names), size)), config.no_progress, config.mode):
        try:
            nfe, arrays = step(index)
        except FloatingPointError as error:
            raise RuntimeError(f"{error}; nothing was written") from None
        for name, array in arrays.items():
            outputs.setdefault(name, []).append(np.asarray(jax.device_get(array))[:real])
    wall = time.perf_counter() - started
    return nfe, {name: np.concatenate(arrays) for name, arrays in outputs.items()}, wall


def write_results(config: RunConfig, model: Model, folder: Folder, inputs: Inputs, results: np.ndarray,
                  wall: float) -> dict:
    """Write OUTDIR/{name}.png per input and OUTDIR/grid.png (each input beside its result).

    Args:
        config: the run configuration (dark ink, t_end).
        model: the model, for the record.
        folder: the claimed output folder.
        inputs: the inputs, in the order of `results`.
        results: (N, H, W, 1) in [-1, 1], one per input.
        wall: seconds spent computing the results.

    Returns:
        The part of run.json that both modes write.
    """
    folder.begin()
    pixels = to_pixels(results, config.dark_ink)
    for name, tile in zip(inputs.names, pixels, strict=True):
        write_png(folder.path / f"{name}.png", tile)
    write_png(folder.path / "grid.png", pairs_mosaic(to_pixels(inputs.images, config.dark_ink), pixels))
    return {
        "inputs": list(inputs.names),
        "resized_inputs": list(inputs.resized),
        "wall_time_s": round(wall, 3),
        "model_config": model.record(),
        "t_end": config.t_end,
    }
