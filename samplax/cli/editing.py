"""The --edit runner: each input from its source class to the target class (RF-Edit,
`samplax.edit`), sharing the attention values of the first --inject steps."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import samplax
from samplax.cli.config import RunConfig
from samplax.cli.model import Model
from samplax.cli.outdir import Folder
from samplax.cli.transform import input_labels, over_inputs, read, write_results

__all__ = ["run_edit"]


def run_edit(config: RunConfig, model: Model, solver, folder: Folder) -> tuple[dict, str]:
    """Edit every input from --source-label to --label and write the results.

    Args:
        config: the final run configuration (mode "edit", `inject` resolved).
        model: the loaded model, a class-conditional flow (checked by `with_model`).
        solver: the fixed-grid flow solver `config.solver` names.
        folder: the claimed output folder.

    Returns:
        (the run's part of run.json, what was written, for the closing line).
    """
    inputs = read(config, model)
    source = input_labels("--source-label", config.source_label, inputs, model)
    target = np.full(len(inputs.names), config.label, np.int32)

    def step(index):
        denoiser = model.denoiser(source[index], config.guidance_scale)
        images = jnp.asarray(inputs.images[index])
        edited, info = samplax.edit(denoiser, solver, images, denoiser.condition, {"label": jnp.asarray(target[index])},
                                    config.steps, config.inject, grid=config.grid, t_end=config.t_end)
        return int(info.nfe), {"images": edited}

    nfe, outputs, wall = over_inputs(config, inputs, step)
    record = write_results(config, model, folder, inputs, outputs["images"], wall)
    record.update(nfe=nfe, source_labels=source.tolist(), target_label=config.label, inject=config.inject)
    return record, f"{len(inputs.names)} edited images"
