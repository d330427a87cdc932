"""`samplax-sample`: write images from a shipped or saved model, invert images to noise,
or edit them.

    samplax-sample                                    # 64 digits into ./samples
    samplax-sample --model digits-flow --solver heun --steps 8 --outdir flow
    samplax-sample --label 3 --seeds 0-15 --guidance-scale 3 --outdir threes
    samplax-sample --model outputs/my-model.msgpack --seeds 0,5,10-20 --outdir mine
    samplax-sample --edit digits:3:0-5 --label 8 --outdir three-to-eight
    samplax-sample --model digits-flow --invert threes/000003.png --label 3 --reversible --outdir inverted

Sampling: each sample's noise comes from its own seed (`fold_in(PRNGKey(0), seed)`), so
sample `i` is the same whatever the batch size, device count or process count. The batch
is sharded over all local devices; with --distributed, JAX's multi-process runtime is
initialised and each process samples its share of the seeds (seeds[rank::processes]).
Writes OUTDIR/{seed:06d}.png, OUTDIR/grid.png (upscaled for viewing) and OUTDIR/run.json.

Inversion (--invert INPUT...) runs the probability-flow ODE from each image to noise and
back: OUTDIR/noise.npz, OUTDIR/{name}.png (the round trip), grid.png and run.json (with
the round-trip errors). Editing (--edit INPUT... --label TARGET) inverts each image under
its source class and regenerates it under the target class, sharing attention values
(RF-Edit, `samplax.edit`): OUTDIR/{name}.png, grid.png (sources beside results), run.json.
An INPUT is an image file, a .npy array in [-1, 1], or digits:LABEL[:INDICES] (held-out
scikit-learn digits of one class).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import pathlib
import platform
import sys
import time
from importlib import metadata

import numpy as np

from samplax.cli_inputs import read_inputs, to_pixels

__all__ = ["main", "parse_seeds", "parser"]

MODELS = ("digits-diffusion", "digits-flow", "digits-flow-attention")
DEFAULTS = {"steps": 15, "sample_guidance_scale": 2.0, "seeds": "0-63", "batch_size": 64}
BASE_SEED = 0
IMAGE_SHAPE = (8, 8, 1)  # the shipped models' images


def default_solver(schedule: str, mode: str = "sample") -> str:
    """DPM-Solver++ 2M for diffusion models. For flows, whose log-SNR is infinite at both
    ends of the path (exponential integrators need t inside (0, 1)): Euler for sampling,
    RF-Solver-2 (second order, as RF-Edit uses) for inversion and editing."""
    if schedule == "rectified-flow":
        return "euler" if mode == "sample" else "rf-solver-2"
    return "dpm++2m"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class UsageError(ValueError):
    """A bad argument found after parsing; reported as one line with exit status 2."""


def parse_seeds(text: str) -> list[int]:
    """Seeds such as "0-63", "7" or "0,4,10-19" (ranges inclusive), in the given order."""
    seeds = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                low, high = part.split("-", 1) if not part.startswith("-") else (part, "")
                low, high = int(low), int(high)
                if high < low:
                    raise ValueError
                seeds.extend(range(low, high + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid seeds {text!r}: use a list like 0-63 or 0,4,10-19") from None
    if min(seeds) < 0 or max(seeds) >= 2**31:
        raise argparse.ArgumentTypeError(f"seeds must lie in [0, 2^31), got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds must not repeat, got {text!r}")
    return seeds


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


UNCONDITIONAL = "none"


def _label(text: str):
    if text == UNCONDITIONAL:
        return UNCONDITIONAL
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a class index or 'none', got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    """The argument parser of samplax-sample (every option is described in docs/cli.md)."""
    p = _Parser(prog="samplax-sample", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--invert", nargs="+", metavar="INPUT",
                      help="invert these images to noise and sample them back (image files, .npy arrays, digits:LABEL[:INDICES])")
    mode.add_argument("--edit", nargs="+", metavar="INPUT",
                      help="edit these images from --source-label to --label (RF-Edit; needs a class-conditional flow model)")
    p.add_argument("--model",
                   help=f"{', '.join(MODELS)}, or a checkpoint path (.msgpack) (default: digits-flow-attention with --edit, else digits-diffusion)")
    p.add_argument("--solver", help="solver registry name, see samplax.solvers.names() "
                   "(default: dpm++2m for diffusion; for flows euler, or rf-solver-2 with --invert/--edit)")
    p.add_argument("--steps", type=_positive, default=DEFAULTS["steps"], help="grid intervals (default: %(default)s)")
    p.add_argument("--grid", help="time grid: logsnr, uniform, quadratic, karras, shifted (default: logsnr for diffusion, uniform for flow)")
    p.add_argument("--t-end", type=float, default=None,
                   help="final time (default: the schedule's t_min)")
    p.add_argument("--guidance-scale", type=float, default=None,
                   help=f"classifier-free guidance weight, 1 for none (default: {DEFAULTS['sample_guidance_scale']} "
                   "for sampling, 1 with --invert/--edit)")
    p.add_argument("--label", type=_label, default=None,
                   help="sampling: class of every sample, or 'none' (default: seed mod 10); --edit: the target class; "
                   "--invert: the class to invert under (default: the input's digits:LABEL, else none)")
    p.add_argument("--source-label", type=_label, default=None,
                   help="--edit: the class of the inputs (default: LABEL of digits:LABEL inputs)")
    p.add_argument("--inject", type=_non_negative, default=None,
                   help="--edit: steps whose attention values are shared, 0 to --steps (default: --steps)")
    p.add_argument("--reversible", action="store_true",
                   help="--invert: use reversible Heun, whose round trip is exact to rounding (noise.npz then also holds its companion state)")
    p.add_argument("--dark-ink", action="store_true",
                   help="--invert/--edit: input images have dark strokes on a light background (scans); outputs are written the same way")
    p.add_argument("--seeds", type=parse_seeds, default=None, help=f"sampling: seeds such as 0-63 or 0,4,10-19 (default: {DEFAULTS['seeds']})")
    p.add_argument("--batch-size", type=_positive, default=None,
                   help=f"images per batch, a multiple of the local device count (default: {DEFAULTS['batch_size']})")
    p.add_argument("--outdir", default="samples", help="output folder; must not exist unless --force (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="write into an existing output folder, replacing files")
    p.add_argument("--distributed", action="store_true", help="sampling: initialise jax.distributed; each process samples seeds[rank::processes]")
    p.add_argument("--coordinator-address", help="with --distributed: host:port of process 0 (default: auto-detect)")
    p.add_argument("--num-processes", type=_positive, help="with --distributed: number of processes (default: auto-detect)")
    p.add_argument("--process-id", type=int, help="with --distributed: this process's rank (default: auto-detect)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _mode(args) -> str:
    return "edit" if args.edit else "invert" if args.invert else "sample"


def _check_arguments(args) -> None:
    """Checks that need no JAX computation (so they run before jax.distributed starts).
    Fills in the defaults that depend on the mode."""
    from samplax import solvers
    from samplax.models import pretrained
    from samplax.solvers.grids import GRIDS

    mode = _mode(args)
    misplaced = [
        ("--source-label", args.source_label is not None, mode != "edit", "--edit"),
        ("--inject", args.inject is not None, mode != "edit", "--edit"),
        ("--reversible", args.reversible, mode != "invert", "--invert"),
        ("--dark-ink", args.dark_ink, mode == "sample", "--invert and --edit"),
        ("--seeds", args.seeds is not None, mode != "sample", "sampling, not --" + mode),
        ("--distributed", args.distributed, mode != "sample", "sampling, not --" + mode),
    ]
    for option, given, wrong_mode, allowed in misplaced:
        if given and wrong_mode:
            raise UsageError(f"{option} applies to {allowed} only")
    args.model = args.model or ("digits-flow-attention" if mode == "edit" else "digits-diffusion")
    if mode == "sample":
        args.seeds = args.seeds or parse_seeds(DEFAULTS["seeds"])
    args.batch_size = args.batch_size or DEFAULTS["batch_size"]
    if args.guidance_scale is None:
        args.guidance_scale = DEFAULTS["sample_guidance_scale"] if mode == "sample" else 1.0
    if args.solver is not None and args.solver not in solvers.names():
        raise UsageError(f"unknown --solver {args.solver!r}; choose one of {', '.join(solvers.names())}")
    if args.grid is not None and args.grid not in GRIDS:
        raise UsageError(f"unknown --grid {args.grid!r}; choose one of {', '.join(GRIDS)}")
    if args.model not in MODELS:
        if args.model in pretrained.NAMES:
            raise UsageError(f"--model {args.model!r} is not a generative model; choose {', '.join(MODELS)} or a path")
        if not pathlib.Path(args.model).is_file():
            raise UsageError(f"--model {args.model!r} is not one of {', '.join(MODELS)} nor an existing checkpoint file")
    if args.guidance_scale < 0:
        raise UsageError(f"--guidance-scale must be >= 0, got {args.guidance_scale}")
    for option, label in (("--label", args.label), ("--source-label", args.source_label)):
        if label not in (None, UNCONDITIONAL) and label < 0:
            raise UsageError(f"{option} must be a class index >= 0 or 'none', got {label}")
    if mode == "edit" and args.label in (None, UNCONDITIONAL):
        raise UsageError("--edit needs --label, the target class")
    if mode == "edit" and args.inject is not None and args.inject > args.steps:
        raise UsageError(f"--inject must lie in 0-{args.steps} (--steps), got {args.inject}")
    if args.reversible and args.solver is not None:
        raise UsageError("--reversible chooses its own solver (reversible Heun); drop --solver")
    if not args.distributed and any(v is not None for v in (args.coordinator_address, args.num_processes, args.process_id)):
        raise UsageError("--coordinator-address, --num-processes and --process-id need --distributed")
    outdir = pathlib.Path(args.outdir)
    if outdir.exists() and not args.force:
        raise UsageError(f"output folder {str(outdir)!r} already exists; pass --force to write into it or choose another --outdir")
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"--outdir {str(outdir)!r} exists and is not a folder")


def _write_png(path: pathlib.Path, pixels: np.ndarray) -> None:
    from PIL import Image

    from samplax.models.checkpoints import write_atomic

    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())


def _grid(tiles: list[np.ndarray], columns: int | None = None, scale: int = 8, padding: int = 1) -> np.ndarray:
    """Tiles (h, w, 1) uint8 in rows of `columns` (default: a near-square grid), each
    upscaled by `scale` (nearest)."""
    columns = columns or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    height, width = tiles[0].shape[0] * scale, tiles[0].shape[1] * scale
    step_y, step_x = height + padding, width + padding
    canvas = np.full((rows * step_y + padding, columns * step_x + padding, 1), 255, np.uint8)
    for k, tile in enumerate(tiles):
        y, x = padding + (k // columns) * step_y, padding + (k % columns) * step_x
        canvas[y : y + height, x : x + width] = np.kron(tile, np.ones((scale, scale, 1), np.uint8))
    return canvas


def _pairs_grid(sources: np.ndarray, results: np.ndarray) -> np.ndarray:
    """Each source beside its result, pairs in rows of a near-square grid."""
    pairs = math.ceil(math.sqrt(len(sources)))
    tiles = [tile for pair in zip(sources, results) for tile in pair]
    return _grid(tiles, columns=2 * pairs)


def _versions() -> dict:
    versions = {"python": platform.python_version()}
    for package in ("samplax", "jax", "jaxlib", "flax", "optax", "numpy", "pillow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _load_model(args, mode: str):
    """The module, its config and schedule, and the solver (None for --reversible), checked
    against the arguments; fills in the default solver and grid."""
    import samplax
    from samplax.models import pretrained
    from samplax.solvers.grids import default_grid

    module, config = pretrained.load(args.model)
    if "schedule" not in config:
        raise UsageError(f"--model {args.model!r} is not a generative model (no schedule in its config)")
    args.solver = args.solver or (None if args.reversible else default_solver(config["schedule"], mode))
    solver = None if args.solver is None else samplax.solvers.get(args.solver)
    if solver is not None:
        if solver.adaptive and mode != "sample":
            raise UsageError(f"--solver {args.solver} is adaptive; --invert and --edit need a fixed-grid solver")
        if not solver.adaptive and args.steps < solver.min_steps():
            raise UsageError(f"--solver {args.solver} needs --steps >= {solver.min_steps()}, got {args.steps}")
    conditional = config.get("null_label") is not None
    for option, label in (("--label", args.label), ("--source-label", args.source_label)):
        if label not in (None, UNCONDITIONAL) and (not conditional or label >= config["null_label"]):
            raise UsageError(
                f"{option} {label} is not a class of this model"
                + (f" (classes 0-{config['null_label'] - 1})" if conditional else " (it is unconditional; use --label none)")
            )
    schedule = samplax.schedules.get(config["schedule"])
    args.grid = args.grid or default_grid(schedule)
    try:
        schedule.check_times(args.t_end)
    except ValueError as error:
        raise UsageError(f"--t-end: {error}") from None
    return module, config, schedule, solver


def _run(args) -> dict:
    import jax
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    if args.distributed:
        options = {
            "coordinator_address": args.coordinator_address,
            "num_processes": args.num_processes,
            "process_id": args.process_id,
        }
        jax.distributed.initialize(**{k: v for k, v in options.items() if v is not None})

    import samplax
    from samplax.models import pretrained
    from samplax.samplers.sharding import shard_batch

    rank, processes = jax.process_index(), jax.process_count()
    devices = jax.local_device_count()
    if args.batch_size % devices:
        raise UsageError(f"--batch-size {args.batch_size} does not divide over the {devices} local devices; use a multiple of {devices}")
    module, config, schedule, solver = _load_model(args, "sample")
    conditional = config.get("null_label") is not None

    outdir = pathlib.Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    seeds = args.seeds[rank::processes]
    base = jax.random.PRNGKey(BASE_SEED)
    labelled = conditional and args.label != UNCONDITIONAL
    guided = labelled and args.guidance_scale != 1.0

    @jax.jit
    def noise_for(seed_batch):
        return jax.vmap(lambda s: jax.random.normal(jax.random.fold_in(base, s), IMAGE_SHAPE))(seed_batch)

    def model_for(seed_batch):
        """The Denoiser for one batch; labels are sharded like the noise."""
        options = {}
        if labelled:
            labels = seed_batch % 10 if args.label is None else np.full(seed_batch.shape, args.label)
            options["condition"] = {"label": shard_batch(jnp.asarray(labels, jnp.int32))}
            if guided:
                null = jnp.full(seed_batch.shape, config["null_label"], jnp.int32)
                options.update(unconditional={"label": shard_batch(null)}, guidance_scale=args.guidance_scale)
        return pretrained.as_denoiser(module, schedule, config["prediction"], config["time_input"], **options)

    started = time.perf_counter()
    tiles, nfe, first_batch_s = {}, [], None
    # No bigger than needed for few seeds, and a multiple of the device count.
    size = min(args.batch_size, -(-len(seeds) // devices) * devices)
    batches = list(_in_batches(len(seeds), size))
    description = f"sampling (process {rank})" if processes > 1 else "sampling"
    for index, real in tqdm(batches, disable=args.no_progress or not batches, unit="batch", desc=description):
        padded = np.asarray(seeds, np.int32)[index]
        batch = seeds[index[0] : index[0] + real]
        noise = shard_batch(noise_for(jnp.asarray(padded)))
        try:
            images, info = samplax.sample(model_for(padded), solver, noise, steps=args.steps, grid=args.grid, t_end=args.t_end)
        except FloatingPointError as error:
            raise RuntimeError(f"{error}; nothing was written for these seeds") from None
        pixels = to_pixels(jax.device_get(images))[: len(batch)]
        for seed, tile in zip(batch, pixels):
            _write_png(outdir / f"{seed:06d}.png", tile)
            tiles[seed] = tile
        # One number for fixed grids; one per sample for adaptive solvers.
        nfe += np.broadcast_to(np.asarray(info.nfe), (size,))[: len(batch)].tolist()
        if first_batch_s is None:
            first_batch_s = time.perf_counter() - started
    wall = time.perf_counter() - started
    return {
        "rank": rank,
        "processes": processes,
        "local_devices": devices,
        "tiles": tiles,
        "nfe": max(nfe, default=None),
        "nfe_mean": float(np.mean(nfe)) if nfe else None,
        "network_passes_per_sample": max(nfe) * (2 if guided else 1) if nfe else None,
        "wall_time_s": round(wall, 3),
        "first_batch_s": None if first_batch_s is None else round(first_batch_s, 3),
        "model_config": _model_record(config),
        "t_end": args.t_end,
    }


def _model_record(config: dict) -> dict:
    return {k: config.get(k) for k in ("command", "seed", "schedule", "prediction", "time_input")}


def _labels_for(option: str, given, inputs, config) -> np.ndarray:
    """One class per input: the option's value, else the class of digits:LABEL inputs,
    else the null label (unconditional) where the model has one."""
    null = config.get("null_label")
    if given == UNCONDITIONAL or null is None:
        return None if null is None else np.full(len(inputs.names), null, np.int32)
    if given is not None:
        return np.full(len(inputs.names), given, np.int32)
    if option == "--source-label" and any(label is None for label in inputs.labels):
        raise UsageError("--edit needs --source-label, the class of the input images (only digits:LABEL inputs carry one)")
    return np.asarray([null if label is None else label for label in inputs.labels], np.int32)


def _in_batches(count: int, size: int):
    """Index arrays of `size` (the last padded with its last index) covering 0..count-1,
    so every batch has one compiled shape; and how many of each are real. None when
    count is 0 (a process with no seeds of its own)."""
    for start in range(0, count, max(size, 1)):
        real = min(size, count - start)
        yield np.minimum(np.arange(start, start + size), start + real - 1), real


def _run_images(args) -> dict:
    """--invert and --edit: read the inputs, run them in batches, write the results."""
    import jax
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    import samplax
    from samplax.models import pretrained

    mode = _mode(args)
    module, config, schedule, solver = _load_model(args, mode)
    try:
        inputs = read_inputs(args.edit or args.invert, IMAGE_SHAPE, parse_seeds, dark_ink=args.dark_ink)
    except (ValueError, argparse.ArgumentTypeError) as error:
        raise UsageError(str(error)) from None
    null = config.get("null_label")
    if mode == "edit":
        if config["prediction"] != "velocity" or null is None:
            raise UsageError(f"--edit needs a class-conditional flow model (velocity prediction), e.g. --model digits-flow; "
                             f"{args.model!r} predicts {config['prediction']!r}" + ("" if null is not None else " and is unconditional"))
        source = _labels_for("--source-label", args.source_label, inputs, config)
        target = np.full(len(inputs.names), args.label, np.int32)
        args.inject = args.steps if args.inject is None else args.inject
    else:
        source = _labels_for("--label", args.label, inputs, config)
    guided = null is not None and args.guidance_scale != 1.0

    def model_for(labels):
        options = {}
        if labels is not None:
            options["condition"] = {"label": jnp.asarray(labels)}
            if guided:
                options.update(unconditional={"label": jnp.full(labels.shape, null, jnp.int32)}, guidance_scale=args.guidance_scale)
        return pretrained.as_denoiser(module, schedule, config["prediction"], config["time_input"], **options)

    grid = {"steps": args.steps, "grid": args.grid, "t_end": args.t_end}
    started = time.perf_counter()
    size = min(args.batch_size, len(inputs.names))
    results, noises, companions, nfe = [], [], [], None
    for index, real in tqdm(list(_in_batches(len(inputs.names), size)), disable=args.no_progress, unit="batch", desc=mode):
        images = jnp.asarray(inputs.images[index])
        model = model_for(None if source is None else source[index])
        try:
            if mode == "edit":
                out, info = samplax.edit(model, solver, images, model.condition, {"label": jnp.asarray(target[index])},
                                         args.steps, args.inject, grid=args.grid, t_end=args.t_end)
                nfe = int(info.nfe)
            elif args.reversible:
                state, info = samplax.reversible_invert(model, images, **grid)
                out, _ = samplax.reversible_sample(model, state, **grid)
                noise, nfe = state.x, int(info.nfe)
                companions.append(np.asarray(state.x_hat)[:real])
            else:
                noise, info = samplax.invert(model, solver, images, **grid)
                out, _ = samplax.sample(model, solver, noise, **grid)
                nfe = int(info.nfe)
        except FloatingPointError as error:
            raise RuntimeError(f"{error}; nothing was written") from None
        results.append(np.asarray(jax.device_get(out))[:real])
        if mode == "invert":
            noises.append(np.asarray(noise)[:real])
    wall = time.perf_counter() - started
    results = np.concatenate(results)

    outdir = pathlib.Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    pixels = to_pixels(results, args.dark_ink)
    for name, tile in zip(inputs.names, pixels):
        _write_png(outdir / f"{name}.png", tile)
    _write_png(outdir / "grid.png", _pairs_grid(to_pixels(inputs.images, args.dark_ink), pixels))
    record = {"inputs": list(inputs.names), "resized_inputs": list(inputs.resized), "wall_time_s": round(wall, 3),
              "model_config": _model_record(config), "t_end": args.t_end}
    if mode == "edit":
        record.update(nfe=nfe, source_labels=source.tolist(), target_label=args.label, inject=args.inject)
    else:
        _write_noise(outdir / "noise.npz", inputs.names, np.concatenate(noises), companions)
        errors = np.abs(results - inputs.images).max(axis=(1, 2, 3))
        record.update(
            nfe_per_direction=nfe,
            solver=args.solver or "reversible-heun",
            labels=None if source is None else source.tolist(),
            round_trip_max_error={name: float(e) for name, e in zip(inputs.names, errors)},
        )
    return record


def _write_noise(path: pathlib.Path, names, noise: np.ndarray, companions: list) -> None:
    """noise.npz: the inverted noise (N, H, W, 1) and the input names in order; with
    --reversible also `companion`, the second half of the reversible state
    (`samplax.ReversibleState(noise, companion)` samples back exactly)."""
    from samplax.models.checkpoints import write_atomic

    arrays = {"noise": noise, "names": np.asarray(names)}
    if companions:
        arrays["companion"] = np.concatenate(companions)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, buffer.getvalue())


def main(argv=None) -> int:
    """Run samplax-sample with `argv` (default: the process's arguments); returns the exit
    status: 0 done, 2 a bad argument (one line on stderr, nothing written), 1 a failure
    while computing."""
    args = parser().parse_args(argv)
    prog = "samplax-sample"
    mode = _mode(args)
    try:
        _check_arguments(args)
        result = _run(args) if mode == "sample" else _run_images(args)
    except UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError, ValueError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    outdir = pathlib.Path(args.outdir)
    if mode == "sample":
        tiles = result.pop("tiles")
        if result["processes"] > 1:
            _gather_other_processes(outdir, args.seeds, tiles, result["rank"])
        if result["rank"] != 0:
            return 0
        ordered = [tiles[s] for s in args.seeds if s in tiles]
        if ordered:
            _write_png(outdir / "grid.png", _grid(ordered))
        result["images"] = len(args.seeds)
        written = f"{len(args.seeds)} samples"
    else:
        written = f"{len(result['inputs'])} " + ("edited images" if mode == "edit" else "round trips, noise.npz")
    from samplax.models.checkpoints import write_atomic

    record = {"arguments": vars(args), "versions": _versions(), **result}
    write_atomic(outdir / "run.json", (json.dumps(record, indent=2) + "\n").encode())
    print(f"wrote {written}, grid.png and run.json to {outdir}/")
    return 0


def _gather_other_processes(outdir: pathlib.Path, seeds, tiles: dict, rank: int) -> None:
    """Wait until every process has written its PNGs (a barrier over the distributed
    runtime); process 0 then reads the others' files into the grid."""
    from jax.experimental import multihost_utils
    from PIL import Image

    multihost_utils.sync_global_devices("samplax-sample: samples written")
    if rank == 0:
        for seed in seeds:
            if seed not in tiles:
                tiles[seed] = np.asarray(Image.open(outdir / f"{seed:06d}.png"))[..., None]
