"""The --init-image runner: each input noised part of the way and sampled back (SDEdit,
`samplax.sdedit`), or with --mask its masked region regenerated around the rest
(`samplax.inpaint`, with RePaint's --resample and --jump)."""

from __future__ import annotations

import jax.numpy as jnp

import samplax
from samplax.cli.config import RunConfig
from samplax.cli.masks import known_region
from samplax.cli.model import Model
from samplax.cli.outdir import Folder
from samplax.cli.transform import check_guided, input_keys, input_labels, over_inputs, read, write_results
from samplax.samplers.img2img import begin_index

__all__ = ["run_img2img"]


def run_img2img(config: RunConfig, model: Model, solver, folder: Folder) -> tuple[dict, str]:
    """Regenerate every input (all of it from --strength, or the region --mask names) and
    write the results.

    Args:
        config: the final run configuration (mode "img2img").
        model: the loaded model.
        solver: the fixed-grid solver `config.solver` names (ODE or SDE).
        folder: the claimed output folder.

    Returns:
        (the run's part of run.json, what was written, for the closing line).
    """
    inputs = read(config, model)
    labels = input_labels("--label", config.label, inputs, model)
    check_guided(config, labels, model)
    keys = input_keys(len(inputs.names))
    known = None if config.mask is None else known_region(config.mask, model.image_shape)
    options = {"steps": config.steps, "grid": config.grid, "t_end": config.t_end}
    if solver.stochastic:
        options["noise_source"] = config.noise_source

    def step(index):
        denoiser = model.denoiser(None if labels is None else labels[index], config.guidance_scale)
        images = jnp.asarray(inputs.images[index])
        if known is None:
            results, info = samplax.sdedit(denoiser, solver, images, strength=config.strength, key=keys[index],
                                           **options)
        else:
            results, info = samplax.inpaint(denoiser, solver, images, known, key=keys[index], resample=config.resample,
                                            jump=config.jump, **options)
        return int(info.nfe), {"images": results}

    nfe, outputs, wall = over_inputs(config, inputs, step)
    record = write_results(config, model, folder, inputs, outputs["images"], wall)
    record.update(nfe=nfe, solver=config.solver, labels=None if labels is None else labels.tolist(),
                  begin_index=None if known is not None else begin_index(config.steps, config.strength))
    return record, f"{len(inputs.names)} {'inpainted' if known is not None else 'img2img'} images"
