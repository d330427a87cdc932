"""The --invert runner: each input to noise and back with the chosen solver, or exactly
with a reversible one (which also keeps its companion state)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import samplax
from samplax.cli.config import RunConfig
from samplax.cli.model import Model
from samplax.cli.outdir import Folder
from samplax.cli.records import write_noise
from samplax.cli.transform import input_labels, over_inputs, read, write_results

__all__ = ["run_invert"]


def run_invert(config: RunConfig, model: Model, solver, folder: Folder) -> tuple[dict, str]:
    """Invert every input to noise and sample it back; write the round trips and noise.npz.

    Args:
        config: the final run configuration (mode "invert").
        model: the loaded model.
        solver: the solver `config.solver` names; a reversible one runs
            `samplax.reversible_invert` and `samplax.reversible_sample`.
        folder: the claimed output folder.

    Returns:
        (the run's part of run.json, what was written, for the closing line).
    """
    inputs = read(config, model)
    labels = input_labels("--label", config.label, inputs, model)
    grid = {"steps": config.steps, "grid": config.grid, "t_end": config.t_end}

    def step(index):
        denoiser = model.denoiser(None if labels is None else labels[index], config.guidance_scale)
        images = jnp.asarray(inputs.images[index])
        if solver.reversible:
            state, info = samplax.reversible_invert(denoiser, images, **grid)
            back, _ = samplax.reversible_sample(denoiser, state, **grid)
            return int(info.nfe), {"images": back, "noise": state.x, "companion": state.x_hat}
        noise, info = samplax.invert(denoiser, solver, images, **grid)
        back, _ = samplax.sample(denoiser, solver, noise, **grid)
        return int(info.nfe), {"images": back, "noise": noise}

    nfe, outputs, wall = over_inputs(config, inputs, step)
    record = write_results(config, model, folder, inputs, outputs["images"], wall)
    write_noise(folder.path / "noise.npz", inputs.names, outputs["noise"], outputs.get("companion"))
    errors = np.abs(outputs["images"] - inputs.images).max(axis=(1, 2, 3))
    record.update(
        nfe_per_direction=nfe,
        solver=config.solver,
        labels=None if labels is None else labels.tolist(),
        round_trip_max_error={name: float(e) for name, e in zip(inputs.names, errors, strict=True)},
    )
    return record, f"{len(inputs.names)} round trips, noise.npz"
