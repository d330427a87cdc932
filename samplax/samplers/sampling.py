"""`sample` and `invert`: the one entry point every solver goes through.

Both are jitted once per (solver, shapes, static options); the grid's end points and an
explicit grid are traced arguments, so changing them never recompiles, and the whole
computation can be differentiated with respect to the noise, the model parameters and the
time grid.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from samplax.checks import check_flag
from samplax.samplers import reversible
from samplax.samplers.denoiser import Denoiser
from samplax.samplers.gradients import Backpropagation, GradientMethod, as_gradient_method
from samplax.samplers.guidance import CFG
from samplax.samplers.info import Info
from samplax.samplers.inputs import as_solver, check_batch, check_model, end_points, noise_keys, resolve_grid
from samplax.solvers.engine import run_plan
from samplax.solvers.grids import check_finite_lambda, time_grid

__all__ = ["check_plan", "sample", "invert"]


@functools.partial(
    jax.jit,
    static_argnames=(
        "solver", "kind", "steps", "denoise_to_zero", "return_trajectory", "reverse", "noise_source", "adjoint",
    ),
)
def _run_fixed(model, solver, state, times, t_start, t_end, kind, steps, denoise_to_zero, return_trajectory, reverse,
               keys, noise_source, adjoint):
    """One compiled call: the grid (from its kind, or as given), the plan, the scan (run
    by the gradient method `adjoint`), the scaling between noise and the state at t_start,
    and finiteness flags (input, grid, coefficients, output) that the caller reads with a
    single transfer. A stochastic solver draws its noise from `noise_source` with the
    per-sample `keys`."""
    schedule = model.schedule
    if kind is not None:
        times = time_grid(schedule, steps, kind, t_start, t_end)
    sigma_start = schedule.sigma(times[0]).astype(state.dtype)
    run_times = times[::-1] if reverse else times
    x = state if reverse else sigma_start * state
    draw = None if keys is None else noise_source.checked_drawer(keys, schedule, jax.ShapeDtypeStruct(x.shape, x.dtype))
    result, trajectory, plan = adjoint.integrate(model, solver, run_times, x, denoise_to_zero, return_trajectory, draw)
    coefficients_finite = _plan_finite(plan)
    if reverse:
        result = result / sigma_start
    checks = jnp.stack([
        jnp.all(jnp.isfinite(state)),
        jnp.all(jnp.isfinite(times)),
        coefficients_finite,
        jnp.all(jnp.isfinite(result)),
    ])
    return result, trajectory, run_times, checks


def _raise_on_checks(checks, solver, kind, name, what, model, start, times):
    if isinstance(checks, jax.core.Tracer):
        return
    input_finite, grid_finite, coefficients_finite, output_finite = np.asarray(checks)
    if not input_finite:
        raise ValueError(f"{name} contains NaN or inf values")
    if not grid_finite:  # a grid spaced in lambda between end points where lambda is infinite
        check_finite_lambda(kind, np.inf, np.inf)
    check_coefficients(coefficients_finite, solver, model.schedule, times)
    if not output_finite:
        _check_output(jnp.asarray(np.nan), what, model, start)


def _plan_finite(plan):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(plan)]))


def check_plan(schedule, solver, times, denoise_to_zero: bool = False) -> None:
    """Raise `check_coefficients`' error before any model evaluation when `solver` cannot
    step the concrete grid `times` (decreasing to sample, increasing to invert) on
    `schedule`. `sample` finds this out in its compiled call, after the network has run;
    callers that must refuse up front (the command line, `tune_grid`) check their grids
    here. Solvers without a plan (adaptive, reversible) have nothing to check."""
    if solver.adaptive or solver.reversible:
        return
    times = jnp.asarray(times)
    check_coefficients(_plan_finite(solver.plan(schedule, times, denoise_to_zero)), solver, schedule, times)


def check_coefficients(finite, solver, schedule, times):
    """A solver's coefficients are not finite where its step is undefined on the grid
    `times`: an exponential integrator stepping from or to a point where lambda =
    log(alpha / sigma) is infinite (t = 1 and t = 0 on rectified flow), or hyperparameters
    so large that the coefficients overflow."""
    if any(isinstance(value, jax.core.Tracer) for value in (finite, times)) or bool(finite):
        return
    ends = (float(times[0]), float(times[-1]))
    infinite = [t for t in ends if not np.isfinite(float(schedule.lambda_(jnp.asarray(t))))]
    if infinite:
        raise ValueError(
            f"{solver!r} has non-finite coefficients on this grid: it steps in lambda = log(alpha / sigma), which "
            f"is infinite at t = {' and '.join(f'{t:g}' for t in infinite)} on {type(schedule).__name__}: use "
            "end points where lambda is finite (on rectified flow t_start < 1 and t_end > 0, e.g. t_end=1e-3 with "
            "denoise_to_zero=True), or a flow solver"
        )
    raise ValueError(
        f"{solver!r} has non-finite coefficients on the grid from t = {ends[0]:g} to t = {ends[1]:g}, where "
        "lambda = log(alpha / sigma) is finite: its hyperparameters make them overflow; choose smaller values"
    )


def _check_denoise_to_zero(schedule, t_end, denoise_to_zero: bool) -> None:
    """denoise_to_zero's last evaluation would return the state itself where sigma(t_end) = 0."""
    if not denoise_to_zero:
        return
    sigma = schedule.sigma(t_end)
    if not isinstance(sigma, jax.core.Tracer) and float(sigma) == 0.0:
        raise ValueError(f"denoise_to_zero applies where the solve ends at noise (sigma > 0); it ends at t = "
                         f"{float(t_end):g}, where sigma = 0 and the state is already data (it would cost an "
                         "evaluation and change nothing)")


def _check_prediction_at_start(model, t_start) -> None:
    """A noise or score prediction says nothing of the data where alpha = 0 (a flow's
    t = 1: the state is all noise), so no solver can start there from one."""
    if model.prediction not in ("noise", "score"):
        return
    alpha = model.schedule.alpha(t_start)
    if not isinstance(alpha, jax.core.Tracer) and float(alpha) == 0.0:
        raise ValueError(
            f"prediction={model.prediction!r} is undefined at t_start = {float(t_start):g}, where alpha = 0 "
            f"({type(model.schedule).__name__}): the data prediction divides by alpha; start below it "
            "(t_start < 1 on a flow), or use a network predicting 'velocity' or 'data'"
        )


def _check_guidance_interval(model, ends) -> None:
    """A guidance rule limited to an interval of noise levels that the grid, from ends[0]
    to ends[1], never reaches would silently not guide at all."""
    if model.unconditional is None or model.guidance.interval is None:
        return
    levels = [model.schedule.sigma(t) / model.schedule.alpha(t) for t in ends]
    if any(isinstance(level, jax.core.Tracer) for level in levels):  # a schedule traced under the caller's jit
        return
    levels = [float(level) for level in levels]
    low, high = model.guidance.interval
    if high < min(levels) or low > max(levels):
        raise ValueError(
            f"the guidance rule's interval {model.guidance.interval} of noise levels sigma / alpha lies outside the "
            f"grid's, {min(levels):.4g} to {max(levels):.4g}: guidance would never act; widen the interval"
        )


@functools.partial(jax.jit, static_argnames=("solver",))
def _run_adaptive(model, solver, x, t_start, t_end):
    return solver.solve(model.predict(solver.prediction), model.schedule, x, t_start, t_end)


def _check_reached(reached, solver):
    """An adaptive solve that ran out of steps or attempts has not reached t_end: its
    result is not a sample, so it is an error, not a returned value."""
    if isinstance(reached, jax.core.Tracer) or bool(jnp.all(reached)):
        return
    short = int(jnp.sum(~reached))
    raise RuntimeError(
        f"{solver!r} stopped before t_end on {short} of {reached.shape[0]} samples: it ran out of steps "
        "or attempts (raise max_steps / max_attempts, or loosen rtol and atol)"
    )


def _non_finite_part(model) -> str | None:
    """The first part of the model (network parameters, condition) holding NaN or inf, if
    any: looked for only once a run has failed, so a successful run pays nothing."""
    parts = (("the network's parameters", model.network), ("the condition", model.condition),
             ("the unconditional condition", model.unconditional))
    for name, tree in parts:
        for leaf in jax.tree.leaves(tree):
            if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact) and not bool(jnp.all(jnp.isfinite(leaf))):
                return name
    return None


def _check_output(result, what, model, start=None):
    """Raise a FloatingPointError naming the likely cause when `result` is not finite: NaN
    in the model, a network that returns NaN at the first evaluation (`start`, the
    (state, time) the solve began from), or else the solve itself."""
    if isinstance(result, jax.core.Tracer) or bool(jnp.all(jnp.isfinite(result))):
        return
    part = _non_finite_part(model)
    if part is not None:
        raise FloatingPointError(f"{what} produced NaN or inf values because {part} of the model contain NaN or inf")
    if start is not None:
        x, t = start
        if not bool(jnp.all(jnp.isfinite(model.output(x, t)))):
            rule, plain = model.guidance, dataclasses.replace(model, guidance=CFG())
            if rule != CFG() and bool(jnp.all(jnp.isfinite(plain.output(x, t)))):
                raise FloatingPointError(
                    f"{what} produced NaN or inf values because the guidance rule {rule!r} did at the first "
                    f"evaluation (t={float(t):g}) while plain guidance is finite there: a rule in {rule.space!r} "
                    "space converts the output to that prediction and back, which needs alpha and sigma > 0 "
                    "(a flow has alpha = 0 at t=1); use space='output' there"
                )
            raise FloatingPointError(
                f"{what} produced NaN or inf values because the network returned NaN or inf at the first "
                f"evaluation (t={float(t):g}, on finite input): the network is at fault, not the solver"
            )
    if model.posterior is not None:
        raise FloatingPointError(
            f"{what} produced NaN or inf values under posterior guidance: check that its log_likelihood and its "
            "gradient are finite on the data predictions, lower its scale, or give more steps"
        )
    if model.guidance.space != "output":
        raise FloatingPointError(
            f"{what} produced NaN or inf values under the guidance rule {model.guidance!r}: a rule in "
            f"{model.guidance.space!r} space divides by sigma or alpha, so it must not be active where one is 0 "
            "(a flow's t=0 or t=1): give it an interval, or use space='output'"
        )
    raise FloatingPointError(
        f"{what} produced NaN or inf values; try more steps, a lower-order solver, "
        "lower_order_final=True, or a t_end further from 0"
    )


def sample(
    model: Denoiser,
    solver,
    noise: jax.Array,
    *,
    steps: int | None = None,
    grid=None,
    t_start=None,
    t_end=None,
    denoise_to_zero: bool = False,
    return_trajectory: bool = False,
    share_compilation: bool = False,
    key=None,
    noise_source=None,
    adjoint: GradientMethod | None = None,
):
    """Solve the probability-flow ODE, or with a stochastic solver the reverse SDE, from
    noise at t_start to t_end.

    Args:
        model: the `Denoiser`.
        solver: a solver object or a registry name (`samplax.solvers.names()`).
        noise: standard normal noise, batch first; the initial state is
            sigma(t_start) * noise.
        steps: number of grid intervals (fixed-grid solvers; adaptive solvers refuse it).
        grid: a grid kind ("logsnr", "uniform", "quadratic", "karras", "shifted") or an
            explicit decreasing array of times from t_start to t_end. Default: the
            schedule's `default_grid` ("logsnr" for diffusion, "uniform" for flows).
        t_start, t_end: end points of a grid kind (default: the schedule's t_max and t_min).
        denoise_to_zero: finish with one more evaluation at t_end that returns the data
            prediction there (the step to sigma = 0).
        return_trajectory: keep the state after every evaluation in `info.trajectory`.
        share_compilation: compute the grid and the solver's coefficients before the
            compiled program instead of inside it, so that every solver, grid and number
            of steps whose plans have the same shape (stages and history size) runs one
            compiled scan. For sweeps over many configurations; each call then costs a
            few milliseconds more. Deterministic fixed-grid plan solvers only.
        key: required by stochastic solvers (`solver.stochastic`), refused by the others:
            one key, from which sample i's key is fold_in(key, i), or an array of one key
            per sample. Sample i's noise depends on its own key only, never on the batch.
        noise_source: where a stochastic solver's noise comes from: "independent"
            (default; fresh normals at every draw) or "brownian" (one Brownian path per
            sample, the same whatever the grid, so that samples stay close as the number
            of steps changes), or a `samplax.IndependentNoise` / `BrownianNoise` object.
        adjoint: how the solve is differentiated (the forward result is the same):
            `samplax.Backpropagation()` (default, None; memory grows with the steps),
            `Checkpointed()` (each stage recomputed backwards), `ExponentialAdjoint(order)`
            (the adjoint ODE solved backwards, constant memory; AdjointDPM/AdjointDEIS) or,
            for reversible Heun, `ReversibleAdjoint()` (exact, constant memory).

    Returns:
        (samples, Info).
    """
    solver = as_solver(solver, "sample")
    for name, flag in (("denoise_to_zero", denoise_to_zero), ("return_trajectory", return_trajectory),
                       ("share_compilation", share_compilation)):
        check_flag(name, flag)
    check_batch(noise, "noise", finite=solver.adaptive or solver.reversible)
    check_model(model, "sample", noise, "noise")
    keys, source = noise_keys(solver, key, noise_source, noise.shape[0])
    adjoint = as_gradient_method(adjoint, solver, return_trajectory=return_trajectory,
                                 share_compilation=share_compilation)
    if share_compilation and (solver.adaptive or solver.reversible or solver.stochastic):
        raise ValueError(f"share_compilation applies to deterministic solvers that run a plan, not to {solver}")
    if solver.adaptive:
        given = [name for name, value in (("steps=", steps), ("grid=", grid)) if value is not None]
        if given or return_trajectory:
            given = given[0] if given else "return_trajectory=True"
            raise ValueError(f"{solver!r} chooses its own steps: {given} applies to fixed-grid solvers only")
        return _sample_adaptive(model, solver, noise, t_start, t_end, denoise_to_zero)
    request = resolve_grid(model.schedule, solver, steps, grid, t_start, t_end)
    adjoint.check_end(model.schedule, request.ends[1])
    if not any(isinstance(t, jax.core.Tracer) for t in request.ends):
        solver.check_end_points(model.schedule, *request.ends)
        _check_guidance_interval(model, request.ends)
        _check_denoise_to_zero(model.schedule, request.ends[1], denoise_to_zero)
        _check_prediction_at_start(model, request.ends[0])
    if solver.reversible:
        return _sample_reversible(model, solver, noise, request, denoise_to_zero, return_trajectory, adjoint)
    if share_compilation:
        return _sample_shared(model, solver, noise, request, denoise_to_zero, return_trajectory)
    result, trajectory, times, checks = _run_fixed(
        model, solver, noise, request.times, request.t_start, request.t_end, request.kind, request.steps,
        denoise_to_zero, return_trajectory, False, keys, source, adjoint,
    )
    start = (model.schedule.sigma(times[0]).astype(noise.dtype) * noise, times[0])
    if keys is not None and not isinstance(checks, jax.core.Tracer) and not bool(checks[3]):
        source.check_finite_draw(keys, model.schedule, noise, times)
    _raise_on_checks(checks, solver, request.kind, "noise", "sampling", model, start, times)
    nfe = jnp.asarray(solver.evaluations(request.steps, denoise_to_zero))
    return result, Info(nfe=nfe, times=times, trajectory=trajectory)


def _sample_adaptive(model, solver, noise, t_start, t_end, denoise_to_zero):
    t_start, t_end = end_points(model.schedule, t_start, t_end)
    if not isinstance(t_start, jax.core.Tracer) and not isinstance(t_end, jax.core.Tracer):
        solver.check_end_points(model.schedule, t_start, t_end)
    _check_denoise_to_zero(model.schedule, t_end, denoise_to_zero)
    x = model.schedule.sigma(t_start.astype(noise.dtype)).astype(noise.dtype) * noise
    result, nfe, reached = _run_adaptive(model, solver, x, t_start, t_end)
    _check_reached(reached, solver)
    # Inside a caller's jit the check cannot raise: a sample that stopped short is NaN.
    result = jnp.where(reached.reshape((-1,) + (1,) * (result.ndim - 1)), result, jnp.nan)
    if denoise_to_zero:
        result = model.data(result, t_end.astype(noise.dtype))
        nfe = nfe + 1
    _check_output(result, "sampling", model, (x, t_start))
    return result, Info(nfe=nfe, times=None)


def _sample_reversible(model, solver, noise, request, denoise_to_zero, return_trajectory, adjoint):
    result, info = reversible.solve_forward(model, solver, noise, request, return_trajectory, adjoint)
    if denoise_to_zero:
        result = model.data(result, info.times[-1].astype(result.dtype))
        _check_output(result, "sampling", model)
        info = dataclasses.replace(info, nfe=jnp.asarray(solver.evaluations(request.steps, denoise_to_zero)))
    return result, info


@functools.partial(jax.jit, static_argnames=("prediction", "return_trajectory"))
def _run_shared(model, prediction, plan, x, return_trajectory):
    result, trajectory = run_plan(plan, model.predict(prediction), x, return_trajectory)
    checks = jnp.stack([jnp.all(jnp.isfinite(x)), jnp.all(jnp.isfinite(result))])
    return result, trajectory, checks


def _sample_shared(model, solver, noise, request, denoise_to_zero, return_trajectory):
    """sample() with the grid and plan computed eagerly: the compiled part depends only on
    the plan's shape."""
    schedule = model.schedule
    times = request.concrete(schedule)
    plan = solver.plan(schedule, times, denoise_to_zero)
    x = schedule.sigma(times[0]).astype(noise.dtype) * noise
    result, trajectory, flags = _run_shared(model, solver.prediction, plan, x, return_trajectory)
    input_finite, output_finite = np.asarray(flags)
    checks = [bool(input_finite), bool(jnp.all(jnp.isfinite(times))), bool(_plan_finite(plan)), bool(output_finite)]
    _raise_on_checks(checks, solver, request.kind, "noise", "sampling", model, (x, times[0]), times)
    nfe = jnp.asarray(solver.evaluations(request.steps, denoise_to_zero))
    return result, Info(nfe=nfe, times=times, trajectory=trajectory)


def invert(model: Denoiser, solver, data: jax.Array, *, steps: int | None = None, grid=None, t_start=None, t_end=None,
           return_trajectory: bool = False):
    """Run the probability-flow ODE backwards, from data at t_end to noise at t_start, with
    the same solver over the reversed grid. Returns (noise, Info) where noise is scaled so
    that `sample(model, solver, noise, ...)` with the same grid maps it back to `data`."""
    solver = as_solver(solver, "invert")
    check_flag("return_trajectory", return_trajectory)
    check_batch(data, "data", finite=False)
    check_model(model, "invert", data, "data")
    if solver.adaptive:
        raise ValueError("invert() needs a fixed-grid solver; adaptive solvers only sample")
    if solver.stochastic:
        raise ValueError(f"invert() runs the probability-flow ODE backwards; {solver!r} is stochastic")
    if solver.reversible:
        raise ValueError(
            f"{solver!r} inverts exactly only together with its companion state: use "
            "samplax.reversible_invert, which returns both"
        )
    request = resolve_grid(model.schedule, solver, steps, grid, t_start, t_end)
    noise, trajectory, reversed_times, checks = _run_fixed(
        model, solver, data, request.times, request.t_start, request.t_end, request.kind, request.steps,
        False, return_trajectory, True, None, None, Backpropagation(),
    )
    _raise_on_checks(checks, solver, request.kind, "data", "inversion", model, (data, reversed_times[0]),
                     reversed_times)
    return noise, Info(nfe=jnp.asarray(solver.evaluations(request.steps)), times=reversed_times, trajectory=trajectory)
