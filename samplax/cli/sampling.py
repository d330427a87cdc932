"""The sampling runner: each seed's noise from its own key, batches sharded over the local
devices, one PNG per seed (the seeds an interrupted run finished are skipped with
--resume), and (on process 0, after every process has written) grid.png."""

from __future__ import annotations

import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import samplax
from samplax.cli.batches import in_batches, progress
from samplax.cli.config import RunConfig
from samplax.cli.images import mosaic, read_png, to_pixels, write_png
from samplax.cli.model import Model
from samplax.cli.options import UNCONDITIONAL, UsageError
from samplax.cli.outdir import Folder
from samplax.samplers.sharding import shard_batch

__all__ = ["BASE_SEED", "SOLVER_NOISE_SEED", "run_sample"]

BASE_SEED = 0  # sample i's noise is normal(fold_in(PRNGKey(BASE_SEED), seed_i))
SOLVER_NOISE_SEED = 1  # a stochastic solver's key for seed i is fold_in(key(SOLVER_NOISE_SEED), seed_i)


def _labelled(config: RunConfig, model: Model) -> bool:
    """Whether the samples have a class (not with --label none or an unconditional model)."""
    return model.conditional and config.label != UNCONDITIONAL


def _labels(config: RunConfig, model: Model, seeds: np.ndarray) -> np.ndarray | None:
    """The class of each seed's sample: --label, else seed mod the number of classes; the
    null label with --label none; None for an unconditional model."""
    if not model.conditional:
        return None
    if config.label == UNCONDITIONAL:
        return np.full(seeds.shape, model.null_label)
    return seeds % model.classes if config.label is None else np.full(seeds.shape, config.label)


def _sample_seeds(config: RunConfig, model: Model, solver, seeds: list[int], devices: int, folder: Folder) -> dict:
    """Sample and write this process's seeds, recording each batch in the manifest.

    Args:
        config: the final run configuration.
        model: the loaded model.
        solver: the solver `config.solver` names.
        seeds: the seeds this process has to sample.
        devices: the local device count; every batch is a multiple of it.
        folder: the claimed output folder.

    Returns:
        {"tiles": {seed: pixels}, "nfe": one per sample, "first_batch_s": seconds or None}.
    """
    base = jax.random.PRNGKey(BASE_SEED)
    noise_for = jax.jit(jax.vmap(lambda s: jax.random.normal(jax.random.fold_in(base, s), model.sample_shape)))
    solver_keys = jax.jit(jax.vmap(lambda s: jax.random.fold_in(jax.random.key(SOLVER_NOISE_SEED), s)))
    started = time.perf_counter()
    tiles, nfe, first_batch_s = {}, [], None
    # No bigger than needed for few seeds, and a multiple of the device count.
    size = min(config.batch_size, -(-len(seeds) // devices) * devices)
    description = f"sampling (process {jax.process_index()})" if jax.process_count() > 1 else "sampling"
    for index, real in progress(list(in_batches(len(seeds), size)), config.no_progress, description):
        padded = np.asarray(seeds, np.int32)[index]
        batch = seeds[index[0] : index[0] + real]
        noise = shard_batch(noise_for(jnp.asarray(padded)))
        denoiser = model.denoiser(_labels(config, model, padded), config.guidance_scale, place=shard_batch)
        stochastic = {"key": solver_keys(jnp.asarray(padded)), "noise_source": config.noise_source}
        try:
            images, info = samplax.sample(denoiser, solver, noise, steps=config.steps, grid=config.grid,
                                          t_end=config.t_end, **(stochastic if solver.stochastic else {}))
        except FloatingPointError as error:
            raise RuntimeError(f"{error}; nothing was written for these seeds") from None
        pixels = to_pixels(jax.device_get(model.decode(images)))[: len(batch)]
        folder.begin()
        for seed, tile in zip(batch, pixels, strict=True):
            write_png(folder.path / f"{seed:06d}.png", tile)
            tiles[seed] = tile
        folder.record(batch)
        # One number for fixed grids; one per sample for adaptive solvers.
        nfe += np.broadcast_to(np.asarray(info.nfe), (size,))[: len(batch)].tolist()
        if first_batch_s is None:
            first_batch_s = time.perf_counter() - started
    return {"tiles": tiles, "nfe": nfe, "first_batch_s": first_batch_s}


def _read_missing_tiles(outdir: pathlib.Path, seeds, tiles: dict, rank: int, processes: int) -> None:
    """Wait until every process has written its PNGs (a barrier over the distributed
    runtime); process 0 then reads the images it did not sample itself (the other
    processes', and with --resume those of the interrupted run) into `tiles`."""
    if processes > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("samplax-sample: samples written")
    if rank == 0:
        for seed in seeds:
            if seed not in tiles:
                tiles[seed] = read_png(outdir / f"{seed:06d}.png")


def run_sample(config: RunConfig, model: Model, solver, folder: Folder) -> tuple[dict, str] | None:
    """Sample this process's share of the seeds (less those done before a --resume);
    process 0 also writes grid.png.

    Args:
        config: the final run configuration (mode "sample").
        model: the loaded model.
        solver: the solver `config.solver` names.
        folder: the claimed output folder.

    Returns:
        On process 0, (the run's part of run.json, what was written, for the closing
        line); None on the other processes, which write no record.
    """
    rank, processes, devices = jax.process_index(), jax.process_count(), jax.local_device_count()
    if config.batch_size % devices:
        raise UsageError(f"--batch-size {config.batch_size} does not divide over the {devices} local devices; "
                         f"use a multiple of {devices}")
    done = set(folder.done)
    seeds = [seed for seed in config.seeds[rank::processes] if seed not in done]
    started = time.perf_counter()
    sampled = _sample_seeds(config, model, solver, seeds, devices, folder)
    wall = time.perf_counter() - started
    nfe, tiles, first_batch_s = sampled["nfe"], sampled["tiles"], sampled["first_batch_s"]
    guided = _labelled(config, model) and config.guidance_scale != 1.0
    _read_missing_tiles(folder.path, config.seeds, tiles, rank, processes)
    if rank != 0:
        return None
    write_png(folder.path / "grid.png", mosaic([tiles[s] for s in config.seeds]))
    record = {
        "rank": rank,
        "processes": processes,
        "local_devices": devices,
        "nfe": max(nfe, default=None),
        "nfe_mean": float(np.mean(nfe)) if nfe else None,
        "network_passes_per_sample": max(nfe) * (2 if guided else 1) if nfe else None,
        "wall_time_s": round(wall, 3),
        "first_batch_s": None if first_batch_s is None else round(first_batch_s, 3),
        "model_config": model.record(),
        "t_end": config.t_end,
        "solver_settings": repr(solver),
        "noise_source": (config.noise_source or "independent") if solver.stochastic else None,
        "solver_noise_keys": f"fold_in(key({SOLVER_NOISE_SEED}), seed)" if solver.stochastic else None,
        "images": len(config.seeds),
        "resumed_images": len(done),  # written by the interrupted run; NFE and times are this run's
    }
    return record, f"{len(seeds)} samples" + (f" (and {len(done)} before --resume)" if done else "")
