"""The --restore runner: each input taken as a degraded observation and restored.

flowchef and dps guide the solve by the gradient of the observation's log-likelihood
(`samplax.posterior_guidance` with `samplax.gaussian_observation`, its variance inflated
by the uncertainty of the data prediction, which keeps few-step solves stable): the
pixels outside --mask, --downsample's box averages, or the whole image (denoising), with
Gaussian noise of std --noise-std. dps differentiates through the network (Chung et al.
2023); flowchef skips that gradient (Patel et al. 2024), one plain evaluation per stage.
code knows nothing of the degradation: it inverts the input to the level --strength
names, takes --langevin-steps there and regenerates (`samplax.code`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import samplax
from samplax.cli.config import RunConfig
from samplax.cli.masks import box_average, known_region
from samplax.cli.model import Model
from samplax.cli.options import UNCONDITIONAL
from samplax.cli.outdir import Folder
from samplax.cli.transform import check_guided, input_keys, input_labels, over_inputs, read, write_results
from samplax.samplers.img2img import begin_index
from samplax.samplers.inputs import resolve_grid

__all__ = ["DIVERGED", "run_restore"]

# Data lie in [-1, 1]: a restoration beyond this has diverged (too strong a likelihood
# gradient for the steps), and is an error rather than images clipped to look plausible.
DIVERGED = 10.0


def _identity(images):
    return images


def observation(config: RunConfig, model: Model) -> tuple[jax.tree_util.Partial, float, str]:
    """(the operator the inputs are observed through, its A A^T, a description for run.json)."""
    if config.mask is not None:
        known = known_region(config.mask, model.image_shape)
        return jax.tree_util.Partial(jnp.multiply, known), 1.0, f"the pixels outside --mask {config.mask}"
    if config.downsample is not None:
        factor = config.downsample
        return (jax.tree_util.Partial(box_average, factor), 1.0 / factor**2,
                f"{factor}x{factor} box averages")
    return jax.tree_util.Partial(_identity), 1.0, "every pixel (denoising)"


def _code_level(config: RunConfig, model: Model, solver) -> tuple[jax.Array, int]:
    """(the time CODE inverts to, the grid intervals each way): where --strength begins an
    img2img solve on the whole grid, so that one strength means one noise level in both."""
    request = resolve_grid(model.schedule, solver, config.steps, config.grid, None, config.t_end)
    begin = begin_index(request.steps, config.strength)
    return request.concrete(model.schedule)[begin], request.steps - begin


def run_restore(config: RunConfig, model: Model, solver, folder: Folder) -> tuple[dict, str]:
    """Restore every input with --method and write the results.

    Args:
        config: the final run configuration (mode "restore").
        model: the loaded model.
        solver: the fixed-grid solver `config.solver` names (deterministic for code).
        folder: the claimed output folder.

    Returns:
        (the run's part of run.json, what was written, for the closing line).
    """
    inputs = read(config, model)
    # A restoration does not know the class unless --label says it.
    labels = input_labels("--label", UNCONDITIONAL if config.label is None else config.label, inputs, model)
    check_guided(config, labels, model)
    keys = input_keys(len(inputs.names))
    operator, gram, observed_as = observation(config, model)
    grid = {"grid": config.grid, "t_end": config.t_end}
    if config.method == "code":
        level, steps = _code_level(config, model, solver)

    def step(index):
        denoiser = model.denoiser(None if labels is None else labels[index], config.guidance_scale)
        images = jnp.asarray(inputs.images[index])
        if config.method == "code":
            restored, info = samplax.code(denoiser, solver, images, key=keys[index], level=level, steps=steps,
                                          langevin_steps=config.langevin_steps, **grid)
            return int(info.nfe), {"images": restored}
        likelihood = samplax.gaussian_observation(operator, operator(images), config.noise_std, inflate=gram)
        guided = samplax.posterior_guidance(denoiser, likelihood, config.likelihood_scale,
                                            through_network=config.method == "dps")
        noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 0), model.image_shape))(keys[index])
        stochastic = {}
        if solver.stochastic:
            stochastic = {"key": jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys[index]),
                          "noise_source": config.noise_source}
        restored, info = samplax.sample(guided, solver, noise, steps=config.steps, **grid, **stochastic)
        largest = float(jnp.max(jnp.abs(restored)))
        if largest > DIVERGED:
            raise FloatingPointError(f"--method {config.method} diverged (restorations reach {largest:.3g}, data lie "
                                     "in [-1, 1]): lower --likelihood-scale or give more --steps")
        return int(info.nfe), {"images": restored}

    nfe, outputs, wall = over_inputs(config, inputs, step)
    record = write_results(config, model, folder, inputs, outputs["images"], wall)
    record.update(nfe=nfe, solver=config.solver, method=config.method,
                  labels=None if labels is None else labels.tolist())
    if config.method == "code":
        record.update(level=float(level), steps_each_way=steps)
    else:
        mismatch = operator(jnp.asarray(outputs["images"])) - operator(jnp.asarray(inputs.images))
        record.update(observed=observed_as, observation_rms=float(np.sqrt(np.mean(np.square(mismatch)))))
    return record, f"{len(inputs.names)} restored images"
