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

import functools

import jax
import jax.numpy as jnp

from samplax.samplers.denoiser import Denoiser
from samplax.samplers.sampling import Info
from samplax.solvers.base import FixedGridSolver
from samplax.solvers.base import get as get_solver
from samplax.solvers.engine import Plan
from samplax.solvers.grids import check_grid, time_grid

__all__ = ["edit"]


def _velocity_and_values(model: Denoiser, x, t, condition, values):
    """The velocity under `condition` (classifier-free guided with the model's
    unconditional input and scale, if it has one), with the given attention values, and the
    values the conditional branch used."""
    batch = x.shape[0]
    network_t = model.network_time(jnp.broadcast_to(jnp.asarray(t, x.dtype), (batch,)))
    sign = -1.0 if model.time_input == "reversed" else 1.0
    if model.unconditional is None:
        out, used = model.network(x, network_t, **condition, values=values, return_values=True)
        return sign * out, used
    both = {
        key: jnp.concatenate([jnp.asarray(model.unconditional[key]), jnp.asarray(value)])
        for key, value in condition.items()
    }
    doubled = None if values is None else {name: jnp.concatenate([v, v]) for name, v in values.items()}
    out, used = model.network(
        jnp.concatenate([x, x]), jnp.concatenate([network_t, network_t]), **both, values=doubled, return_values=True
    )
    guided = out[:batch] + model.guidance_scale * (out[batch:] - out[:batch])
    return sign * guided, {name: v[batch:] for name, v in used.items()}


def _rows(plan: Plan, start: int, stop: int):
    return (
        plan.times[start:stop],
        plan.input_state[start:stop],
        plan.input_history[start:stop],
        plan.update_state[start:stop],
        plan.update_history[start:stop],
    )


def _combine(scale, weights, state, history):
    return scale.astype(state.dtype) * state + jnp.tensordot(weights.astype(state.dtype), history, axes=1)


def _run_stages(rows, carry, evaluate, injected):
    """The engine's stage loop (samplax.solvers.engine.run_plan) over some rows of a plan,
    where `evaluate(z, t, values) -> (velocity, values used)` and `injected` holds one set
    of values per row (or is None). Returns the carry and the values used at every row."""

    if rows[0].shape[0] == 0:  # nothing to run: skip tracing the network at all
        return carry, None

    def stage(carry, inputs):
        (time, input_state, input_history, update_state, update_history), values = inputs
        state, history = carry
        point = _combine(input_state, input_history, state, history)
        velocity, used = evaluate(point, time, values)
        history = jnp.concatenate([velocity.astype(state.dtype)[None], history[:-1]])
        state = _combine(update_state, update_history, state, history)
        return (state, history), used

    return jax.lax.scan(stage, carry, (rows, injected))


@functools.partial(jax.jit, static_argnames=("solver", "steps", "inject", "blocks"))
def _edit(model, solver, image, source_condition, target_condition, times, steps, inject, blocks):
    per_step = solver.evaluations(steps) // steps
    split = (steps - inject) * per_step

    def evaluate_with(condition, keep):
        def evaluate(z, t, values):
            velocity, used = _velocity_and_values(model, z, t, condition, values)
            unknown = set(blocks or ()) - set(used)
            if unknown:
                raise ValueError(f"unknown attention blocks {sorted(unknown)}; the network has {sorted(used)}")
            return velocity, ({name: used[name] for name in (blocks or sorted(used))} if keep else None)

        return evaluate

    # Inversion over the reversed grid; record the values of the last `inject` steps.
    inversion = solver.plan(model.schedule, times[::-1])
    history = jnp.zeros((inversion.input_history.shape[1],) + image.shape, image.dtype)
    carry, _ = _run_stages(_rows(inversion, 0, split), (image, history), evaluate_with(source_condition, False), None)
    carry, recorded = _run_stages(
        _rows(inversion, split, inversion.num_evaluations), carry, evaluate_with(source_condition, True), None
    )
    state, history = carry
    noise = _combine(inversion.output_state, inversion.output_history, state, history)

    # Regeneration: step n of the first `inject` uses inversion step steps - 1 - n, stage by stage.
    def reorder(values):
        values = values.reshape((inject, per_step) + values.shape[1:])
        return values[::-1].reshape((inject * per_step,) + values.shape[2:])

    injected = None if recorded is None else jax.tree.map(reorder, recorded)
    sampling = solver.plan(model.schedule, times)
    history = jnp.zeros_like(history)
    evaluate = evaluate_with(target_condition, False)
    carry, _ = _run_stages(_rows(sampling, 0, inject * per_step), (noise, history), evaluate, injected)
    carry, _ = _run_stages(
        _rows(sampling, inject * per_step, sampling.num_evaluations),
        carry,
        lambda z, t, values: evaluate(z, t, None),
        None,
    )
    state, history = carry
    return _combine(sampling.output_state, sampling.output_history, state, history), noise


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
    solver = get_solver(solver) if isinstance(solver, str) else solver
    if not isinstance(model, Denoiser):
        raise TypeError(f"model must be a samplax Denoiser, got {type(model).__name__}")
    if model.prediction != "velocity":
        raise ValueError(f"edit() needs a flow model with prediction='velocity', got {model.prediction!r}")
    if not isinstance(solver, FixedGridSolver) or solver.prediction != "velocity":
        raise ValueError("edit() needs a fixed-grid flow solver (prediction 'velocity'), e.g. 'rf-solver-2'")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if solver.evaluations(steps) % steps or solver.evaluations(2 * steps) != 2 * solver.evaluations(steps):
        raise ValueError(
            f"edit() needs a solver with a fixed number of evaluations per step; {type(solver).__name__} "
            "shares evaluations between steps"
        )
    if not isinstance(inject, int) or not 0 <= inject <= steps:
        raise ValueError(f"inject must be an integer in [0, steps={steps}], got {inject!r}")
    image = jnp.asarray(image)
    if image.ndim < 2 or not bool(jnp.all(jnp.isfinite(image))):
        raise ValueError(f"image must be a finite array with a leading batch axis, got shape {image.shape}")
    if isinstance(grid, str):
        times = time_grid(model.schedule, steps, grid, t_start, t_end)
    else:
        check_grid(model.schedule, grid)
        times = jnp.asarray(grid, jnp.result_type(float))
        if times.shape[0] != steps + 1:
            raise ValueError(f"steps={steps} disagrees with a grid of {times.shape[0]} times")
    blocks = None if blocks is None else tuple(blocks)
    conditions = dict(source_condition), dict(target_condition)
    edited, _ = _edit(model, solver, image, *conditions, times, steps, inject, blocks)
    if not bool(jnp.all(jnp.isfinite(edited))):
        raise FloatingPointError("editing produced NaN or inf values; try more steps")
    return edited, Info(nfe=jnp.asarray(2 * solver.evaluations(steps)), times=times)
