"""Shared by the DEIS and UniPC tests: a smooth Gaussian-mixture problem with its exact
flow map, and errors of many (solver, steps) cases computed in one vmapped engine call."""

import jax
import jax.numpy as jnp
import pytest

import samplax as sx
from samplax.solvers.engine import run_plan

T_END = 1e-2


@pytest.fixture(scope="module")
def problem():
    """A smooth 4-D mixture under VPLinear, and its exact flow map from t = 1 to T_END."""
    with jax.enable_x64(True):
        mixture = sx.GaussianMixture.random(0, 4, 3, std_range=(0.5, 1.0))
        schedule = sx.schedules.VPLinear()
        noise = jax.random.normal(jax.random.PRNGKey(0), (8, 4), jnp.float64)
        reference = mixture.flow_map(schedule.sigma(1.0) * noise, schedule, 1.0, T_END)
        return mixture.denoiser(schedule, "noise"), noise, reference


# Fast compilation: these programs are small and run once.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _pad_front(plan, stages, width):
    """The same solve with identity stages in front (evaluate at the initial state, keep
    it) and zero history columns: every plan here only reads predictions made in its own
    steps, so the padding changes nothing, and plans of different lengths can be stacked."""
    extra, columns = stages - plan.num_evaluations, width - plan.input_history.shape[1]

    def rows(array, value):
        padded = jnp.concatenate([jnp.full((extra,) + array.shape[1:], value, array.dtype), array])
        return jnp.pad(padded, ((0, 0), (0, columns))) if array.ndim == 2 else padded

    return sx.solvers.Plan(
        times=rows(plan.times, plan.times[0]),
        input_state=rows(plan.input_state, 1.0),
        input_history=rows(plan.input_history, 0.0),
        update_state=rows(plan.update_state, 1.0),
        update_history=rows(plan.update_history, 0.0),
        output_state=plan.output_state,
        output_history=jnp.pad(plan.output_history, (0, columns)),
    )


def errors(problem, cases):
    """{(solver, steps): RMS error at T_END} for (solver, step counts) cases; the plans of
    each solver compile together, and all solves run as one vmapped engine call
    (sample() itself is exercised in test_first_order_sample_matches_ddim)."""
    model, noise, reference = problem
    schedule = model.schedule
    with jax.enable_x64(True):
        keys, plans = [], []
        for solver, step_counts in cases:
            grids = [sx.solvers.time_grid(schedule, n, "logsnr", t_end=T_END) for n in step_counts]
            built = jax.jit(lambda g, s=solver: [s.plan(schedule, t) for t in g], compiler_options=FAST_COMPILE)(grids)
            for steps, plan in zip(step_counts, built, strict=True):
                assert plan.num_evaluations == solver.evaluations(steps)
                keys.append((solver, steps))
                plans.append(plan)
        stages = max(p.num_evaluations for p in plans)
        width = max(p.input_history.shape[1] for p in plans)
        results = {}
        for prediction in sorted({solver.prediction for solver, _ in keys}):
            chosen = [i for i, (solver, _) in enumerate(keys) if solver.prediction == prediction]
            stacked = jax.tree.map(lambda *a: jnp.stack(a), *[_pad_front(plans[i], stages, width) for i in chosen])
            predict = model.predict(prediction)
            run = jax.vmap(lambda plan, x, predict=predict: run_plan(plan, predict, x)[0], (0, None))
            x = jax.jit(run, compiler_options=FAST_COMPILE)(stacked, schedule.sigma(1.0) * noise)
            rms = jnp.sqrt(jnp.mean((x - reference[None]) ** 2, axis=(1, 2)))
            results.update({keys[i]: float(r) for i, r in zip(chosen, rms, strict=True)})
        return results
