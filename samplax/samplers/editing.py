"""Image editing by inversion and feature sharing, in the manner of RF-Edit (Wang et al.
2024, "Taming rectified flow for inversion and editing").

The image is inverted to noise under the source condition; during the last `inject`
inversion steps (nearest the noise) the self-attention value tensors of chosen network
blocks are recorded at every stage. The noise is then sampled back under the target
condition, and during the first `inject` steps each stage uses the values recorded at the
same stage of the inversion step that covered the same time interval. Sharing the values
keeps the layout of the source (stroke width and slant of a digit, say) while the
condition changes the content.

The network must take `values` and `return_values` keyword arguments like
`samplax.models.networks.UNet`: `network(x, t, **condition, values=..., return_values=True)
-> (output, {block name: values used})`, where given values replace a block's own.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from samplax.samplers.denoiser import Denoiser
from samplax.samplers.info import Info
from samplax.samplers.inputs import as_solver, check_batch, check_model, resolve_grid
from samplax.solvers.engine import Predictor, final_state, initial_carry, run_stages

__all__ = ["check_solver", "edit"]

_RECORD = {"return_values": True}  # the network returns (output, values used)


def check_solver(solver) -> None:
    """Raise a ValueError unless `solver` can edit: a fixed-grid flow solver (prediction
    'velocity') with the same number of evaluations in every step, since the values of
    inversion stage k are injected at the matching stage of the regeneration."""
    if solver.adaptive or solver.reversible or solver.stochastic or solver.prediction != "velocity":
        raise ValueError(
            f"edit() needs a fixed-grid flow solver (velocity, deterministic), such as rf-solver-2, not {solver}"
        )
    if solver.evaluations_per_step is None:
        raise ValueError(
            f"edit() needs a solver with a fixed number of evaluations per step; {type(solver).__name__} "
            "shares evaluations between steps"
        )


def _injecting(predictor: Predictor) -> Predictor:
    """The auxiliary predictor with the given values as stage input, its output dropped."""

    def evaluate(x, prepared, values):
        return predictor.evaluate(x, prepared, {"values": values})[0], None

    return Predictor(prepare=predictor.prepare, evaluate=evaluate, auxiliary=True)


def _chosen(recorded, blocks):
    """The recorded values of the chosen attention blocks (all of them by default); None
    when nothing is injected (inject = 0)."""
    if recorded is None:
        return None
    if not recorded:
        raise ValueError(
            "edit(): the network recorded no attention values, so there is nothing to share: it needs "
            "self-attention blocks that return their values (a UNet with attention, such as digits-flow-attention)"
        )
    if blocks is not None and not blocks:
        raise ValueError("blocks=() names no attention block, so nothing would be shared; give block names, or "
                         "inject=0 for no sharing")
    if blocks is None:
        return recorded
    unknown = set(blocks) - set(recorded)
    if unknown:
        raise ValueError(f"unknown attention blocks {sorted(unknown)}; the network has {sorted(recorded)}")
    return {name: recorded[name] for name in blocks}


@functools.partial(jax.jit, static_argnames=("solver", "steps", "inject", "blocks"))
def _edit(model, solver, image, source_condition, target_condition, times, steps, inject, blocks):
    per_step = solver.evaluations_per_step
    source = dataclasses.replace(model, condition=source_condition)
    target = dataclasses.replace(model, condition=target_condition)

    # Inversion over the reversed grid; record the values of the last `inject` steps.
    inversion = solver.plan(model.schedule, times[::-1])
    split = slice(0, (steps - inject) * per_step), slice((steps - inject) * per_step, None)
    carry = initial_carry(inversion, image)
    carry, _ = run_stages(inversion, source.predict("velocity"), carry, split[0])
    recording = source.predict("velocity", network_options=_RECORD, auxiliary=True)
    carry, (_, recorded) = run_stages(inversion, recording, carry, split[1])
    noise = final_state(inversion, carry)

    # Regeneration: step n of the first `inject` uses inversion step steps - 1 - n, stage by stage.
    def reorder(values):
        values = values.reshape((inject, per_step) + values.shape[1:])
        return values[::-1].reshape((inject * per_step,) + values.shape[2:])

    injected = jax.tree.map(reorder, _chosen(recorded, blocks))
    sampling = solver.plan(model.schedule, times)
    injecting = _injecting(target.predict("velocity", network_options=_RECORD, auxiliary=True))
    carry = initial_carry(sampling, noise)
    carry, _ = run_stages(sampling, injecting, carry, slice(0, inject * per_step), stage_inputs=injected)
    carry, _ = run_stages(sampling, target.predict("velocity"), carry, slice(inject * per_step, None))
    return final_state(sampling, carry), noise


def edit(
    model: Denoiser,
    solver,
    image,
    source_condition: dict,
    target_condition: dict,
    steps: int,
    inject: int,
    *,
    blocks: tuple[str, ...] | None = None,
    grid="uniform",
    t_start=None,
    t_end=None,
):
    """Edit `image` from `source_condition` to `target_condition` (RF-Edit).

    Args:
        model: a `Denoiser` of a flow model (prediction="velocity") whose network exposes
            attention values (see the module docs). Its own `condition` is ignored; its
            `unconditional` and `guidance_scale`, if set, guide both passes.
        solver: a flow solver with the same number of evaluations in every step ("euler",
            "heun", "midpoint", "rk4", "rf-solver-2", "rf-solver-3"), or its name.
        image: the images to edit, batch first.
        source_condition, target_condition: network keyword arguments, e.g.
            {"label": jnp.array([3])} and {"label": jnp.array([8])}.
        steps: grid intervals of the inversion and of the regeneration.
        inject: the number of steps (0 <= inject <= steps) whose attention values are shared.
        blocks: names of the attention blocks to share (default: all of them).
        grid, t_start, t_end: the time grid, as for `samplax.sample`.

    Returns:
        (edited images, Info) with Info.nfe counting both passes and Info.trajectory None.
    """
    solver = as_solver(solver, "edit")
    check_model(model, "edit")
    if model.prediction != "velocity":
        raise ValueError(f"edit() needs a flow model with prediction='velocity', got {model.prediction!r}")
    check_solver(solver)
    request = resolve_grid(model.schedule, solver, steps, grid, t_start, t_end)
    steps = request.steps
    if isinstance(inject, bool) or not isinstance(inject, (int, np.integer)) or not 0 <= inject <= steps:
        raise ValueError(f"inject must be an integer in [0, steps={steps}], got {inject!r}")
    check_batch(image, "image")
    conditions = []
    for name, condition in (("source_condition", source_condition), ("target_condition", target_condition)):
        if not isinstance(condition, Mapping):
            raise TypeError(f"edit(): {name} must be a dict of network keyword arguments, got {condition!r}")
        check_model(dataclasses.replace(model, condition=dict(condition)), "edit", image, "image")
        conditions.append(dict(condition))
    times = request.concrete(model.schedule)
    if isinstance(blocks, str):
        raise TypeError(f"blocks must be a tuple of attention block names such as ({blocks!r},), got the string "
                        f"{blocks!r}")
    blocks = None if blocks is None else tuple(blocks)
    edited, _ = _edit(model, solver, image, *conditions, times, steps, int(inject), blocks)
    if not bool(jnp.all(jnp.isfinite(edited))):
        raise FloatingPointError("editing produced NaN or inf values; try more steps")
    return edited, Info(nfe=jnp.asarray(2 * solver.evaluations(steps)), times=times)
