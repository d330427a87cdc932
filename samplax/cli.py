"""`samplax-sample`: write images from a shipped or saved model.

    samplax-sample                                    # 64 digits into ./samples
    samplax-sample --model digits-flow --solver heun --steps 8 --outdir flow
    samplax-sample --label 3 --seeds 0-15 --guidance-scale 3 --outdir threes
    samplax-sample --model outputs/my-model.msgpack --seeds 0,5,10-20 --outdir mine

Each sample's noise comes from its own seed (`fold_in(PRNGKey(0), seed)`), so sample
`i` is the same whatever the batch size, device count or process count. The batch is
sharded over all local devices; with --distributed, JAX's multi-process runtime is
initialised and each process samples its share of the seeds (seeds[rank::processes]).
Writes OUTDIR/{seed:06d}.png, OUTDIR/grid.png (upscaled for viewing) and OUTDIR/run.json.
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

__all__ = ["main", "parse_seeds", "parser"]

MODELS = ("digits-diffusion", "digits-flow")
DEFAULTS = {"steps": 15, "guidance_scale": 2.0}
BASE_SEED = 0


def default_solver(model: str, schedule: str | None = None) -> str:
    """DPM-Solver++ 2M for diffusion models; Euler for flows, whose log-SNR is infinite at
    both ends of the path (exponential integrators need t inside (0, 1))."""
    return "euler" if "rectified-flow" in (model, schedule) or model == "digits-flow" else "dpm++2m"


def default_grid(schedule: str) -> str:
    """Uniform in t for flows (the log-SNR grid is infinite at their end points)."""
    return "uniform" if schedule == "rectified-flow" else "logsnr"


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


UNCONDITIONAL = "none"


def _label(text: str):
    if text == UNCONDITIONAL:
        return UNCONDITIONAL
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a class index or 'none', got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="samplax-sample", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits-diffusion",
                   help=f"{' or '.join(MODELS)}, or a checkpoint path (.msgpack) (default: %(default)s)")
    p.add_argument("--solver", help="solver registry name, see samplax.solvers.names() (default: dpm++2m for diffusion, euler for flow)")
    p.add_argument("--steps", type=_positive, default=DEFAULTS["steps"], help="grid intervals (default: %(default)s)")
    p.add_argument("--grid", help="time grid: logsnr, uniform, quadratic, karras (default: logsnr for diffusion, uniform for flow)")
    p.add_argument("--t-end", type=float, default=None,
                   help="final time (default: the schedule's t_min)")
    p.add_argument("--guidance-scale", type=float, default=DEFAULTS["guidance_scale"],
                   help="classifier-free guidance weight, 1 for none (default: %(default)s)")
    p.add_argument("--label", type=_label, default=None,
                   help="class of every sample, or 'none' for unconditional (default: seed mod 10)")
    p.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-63"), help="seeds such as 0-63 or 0,4,10-19 (default: 0-63)")
    p.add_argument("--batch-size", type=_positive, default=64, help="samples per batch, a multiple of the local device count (default: %(default)s)")
    p.add_argument("--outdir", default="samples", help="output folder; must not exist unless --force (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="write into an existing output folder, replacing files")
    p.add_argument("--distributed", action="store_true", help="initialise jax.distributed; each process samples seeds[rank::processes]")
    p.add_argument("--coordinator-address", help="with --distributed: host:port of process 0 (default: auto-detect)")
    p.add_argument("--num-processes", type=_positive, help="with --distributed: number of processes (default: auto-detect)")
    p.add_argument("--process-id", type=int, help="with --distributed: this process's rank (default: auto-detect)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _check_arguments(args) -> None:
    """Checks that need no JAX computation (so they run before jax.distributed starts)."""
    from samplax import solvers
    from samplax.models import pretrained
    from samplax.solvers.grids import GRIDS

    if args.solver is not None and args.solver not in solvers.names():
        raise UsageError(f"unknown --solver {args.solver!r}; choose one of {', '.join(solvers.names())}")
    if args.grid is not None and args.grid not in GRIDS:
        raise UsageError(f"unknown --grid {args.grid!r}; choose one of {', '.join(GRIDS)}")
    if args.model not in MODELS:
        if args.model in pretrained.NAMES:
            raise UsageError(f"--model {args.model!r} is not a generative model; choose {' or '.join(MODELS)} or a path")
        if not pathlib.Path(args.model).is_file():
            raise UsageError(f"--model {args.model!r} is neither {' nor '.join(MODELS)} nor an existing checkpoint file")
    if args.guidance_scale < 0:
        raise UsageError(f"--guidance-scale must be >= 0, got {args.guidance_scale}")
    if args.label not in (None, UNCONDITIONAL) and args.label < 0:
        raise UsageError(f"--label must be a class index >= 0 or 'none', got {args.label}")
    if not args.distributed and any(v is not None for v in (args.coordinator_address, args.num_processes, args.process_id)):
        raise UsageError("--coordinator-address, --num-processes and --process-id need --distributed")
    outdir = pathlib.Path(args.outdir)
    if outdir.exists() and not args.force:
        raise UsageError(f"output folder {str(outdir)!r} already exists; pass --force to write into it or choose another --outdir")
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"--outdir {str(outdir)!r} exists and is not a folder")


def _to_uint8(images) -> np.ndarray:
    return np.clip(np.round((np.asarray(images, np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _write_png(path: pathlib.Path, pixels: np.ndarray) -> None:
    from PIL import Image

    from samplax.models.checkpoints import write_atomic

    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())


def _grid(tiles: list[np.ndarray], scale: int = 8, padding: int = 1) -> np.ndarray:
    """Tiles (h, w, 1) uint8 in a near-square grid, each upscaled by `scale` (nearest)."""
    columns = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    height, width = tiles[0].shape[0] * scale, tiles[0].shape[1] * scale
    step_y, step_x = height + padding, width + padding
    canvas = np.full((rows * step_y + padding, columns * step_x + padding, 1), 255, np.uint8)
    for k, tile in enumerate(tiles):
        y, x = padding + (k // columns) * step_y, padding + (k % columns) * step_x
        canvas[y : y + height, x : x + width] = np.kron(tile, np.ones((scale, scale, 1), np.uint8))
    return canvas


def _versions() -> dict:
    versions = {"python": platform.python_version()}
    for package in ("samplax", "jax", "jaxlib", "flax", "optax", "numpy", "pillow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


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
    module, config = pretrained.load(args.model)
    if "schedule" not in config:
        raise UsageError(f"--model {args.model!r} is not a generative model (no schedule in its config)")
    args.solver = args.solver or default_solver(args.model, config["schedule"])
    args.grid = args.grid or default_grid(config["schedule"])
    solver = samplax.solvers.get(args.solver)
    if args.steps < solver.min_steps():
        raise UsageError(f"--solver {args.solver} needs --steps >= {solver.min_steps()}, got {args.steps}")
    conditional = config.get("null_label") is not None
    if args.label not in (None, UNCONDITIONAL) and (not conditional or args.label >= config["null_label"]):
        raise UsageError(
            f"--label {args.label} is not a class of this model"
            + (f" (classes 0-{config['null_label'] - 1})" if conditional else " (it is unconditional; use --label none)")
        )
    schedule = samplax.schedules.get(config["schedule"])
    t_end = args.t_end
    try:
        schedule.check_times(t_end)
    except ValueError as error:
        raise UsageError(f"--t-end: {error}") from None

    outdir = pathlib.Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    seeds = args.seeds[rank::processes]
    base = jax.random.PRNGKey(BASE_SEED)
    labelled = conditional and args.label != UNCONDITIONAL
    guided = labelled and args.guidance_scale != 1.0

    @jax.jit
    def noise_for(seed_batch):
        return jax.vmap(lambda s: jax.random.normal(jax.random.fold_in(base, s), (8, 8, 1)))(seed_batch)

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
    tiles, nfe, first_batch_s = {}, None, None
    # No bigger than needed for few seeds, and a multiple of the device count.
    size = min(args.batch_size, -(-len(seeds) // devices) * devices)
    batches = [seeds[i : i + size] for i in range(0, len(seeds), size)]
    description = f"sampling (process {rank})" if processes > 1 else "sampling"
    for batch in tqdm(batches, disable=args.no_progress or not batches, unit="batch", desc=description):
        # Pad the last batch with copies of its last seed: one compiled shape for all batches.
        padded = np.asarray(batch + [batch[-1]] * (size - len(batch)), np.int32)
        noise = shard_batch(noise_for(jnp.asarray(padded)))
        try:
            images, info = samplax.sample(model_for(padded), solver, noise, steps=args.steps, grid=args.grid, t_end=t_end)
        except FloatingPointError as error:
            raise RuntimeError(f"{error}; nothing was written for these seeds") from None
        pixels = _to_uint8(jax.device_get(images))[: len(batch)]
        for seed, tile in zip(batch, pixels):
            _write_png(outdir / f"{seed:06d}.png", tile)
            tiles[seed] = tile
        nfe = int(info.nfe)
        if first_batch_s is None:
            first_batch_s = time.perf_counter() - started
    wall = time.perf_counter() - started
    return {
        "rank": rank,
        "processes": processes,
        "local_devices": devices,
        "tiles": tiles,
        "nfe": nfe,
        "network_passes_per_sample": None if nfe is None else nfe * (2 if guided else 1),
        "wall_time_s": round(wall, 3),
        "first_batch_s": None if first_batch_s is None else round(first_batch_s, 3),
        "model_config": {k: config.get(k) for k in ("command", "seed", "schedule", "prediction", "time_input")},
        "t_end": t_end,
    }


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    prog = "samplax-sample"
    try:
        _check_arguments(args)
        result = _run(args)
    except UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError, ValueError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    outdir = pathlib.Path(args.outdir)
    tiles = result.pop("tiles")
    if result["processes"] > 1:
        _gather_other_processes(outdir, args.seeds, tiles, result["rank"])
    if result["rank"] == 0:
        ordered = [tiles[s] for s in args.seeds if s in tiles]
        if ordered:
            _write_png(outdir / "grid.png", _grid(ordered))
        record = {
            "arguments": {k: v for k, v in vars(args).items()},
            "versions": _versions(),
            **result,
            "images": len(args.seeds),
        }
        from samplax.models.checkpoints import write_atomic

        write_atomic(outdir / "run.json", (json.dumps(record, indent=2) + "\n").encode())
        print(f"wrote {len(args.seeds)} samples, grid.png and run.json to {outdir}/")
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
