"""Regularization methods as small frozen dataclasses, and the one solve they share.

`integrate` solves dy/dt = vector_field(t, y, params) with Tsit5 and a PIDController and
returns the states at the save times, the method's penalty and the number of
vector-field evaluations. Parameters go through `args`, so every adjoint sees them.
"""

from dataclasses import dataclass
from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from samplax.neural_ode import baselines
from samplax.neural_ode.local import ReservoirSolver, local_penalty, unbiased_time
from samplax.neural_ode.regularizers import (
    AGGREGATIONS,
    RegularizedSolver,
    _ZERO_GRADIENT_ADJOINTS,
    adaptive_solve,
    penalties,
)

_KINDS = ("error", "stiffness")


@dataclass(frozen=True)
class NoRegularization:
    """Plain maximum-likelihood training."""


@dataclass(frozen=True)
class Steer:
    """STEER (Ghosh et al. 2020): save times jittered by U(-b, b) times their gap."""

    b: float = 0.5

    def __post_init__(self):
        if not 0 < self.b < 1:
            raise ValueError(f"b must lie in (0, 1), got {self.b!r}.")


@dataclass(frozen=True)
class GlobalRegularization:
    """ERNODE (kind='error') or SRNODE (kind='stiffness') of Pal et al. (ICML 2021)."""

    kind: Literal["error", "stiffness"] = "error"
    aggregation: Literal["sum", "mean", "max"] = "mean"

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}.")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(
                f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}."
            )


@dataclass(frozen=True)
class LocalRegularization:
    """Local ERNODE/SRNODE of Pal et al. (ICML 2023), unbiased or biased time sampling."""

    kind: Literal["error", "stiffness"] = "error"
    sampling: Literal["unbiased", "biased"] = "unbiased"

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}.")
        if self.sampling not in ("unbiased", "biased"):
            raise ValueError(
                f"sampling must be 'unbiased' or 'biased', got {self.sampling!r}."
            )


@dataclass(frozen=True)
class KineticJacobian:
    """RNODE (Finlay et al. 2020): kinetic energy + Hutchinson Jacobian Frobenius norm."""


@dataclass(frozen=True)
class Taylor:
    """TayNODE (Kelly et al. 2020) with the second total derivative."""


Method = (
    NoRegularization | Steer | GlobalRegularization | LocalRegularization
    | KineticJacobian | Taylor
)


class Output(eqx.Module):
    """One solve of a method: the saved states, the regularization penalty (zero for methods
    without one: unregularized and STEER) and the number of vector-field evaluations."""

    ys: jax.Array
    penalty: jax.Array
    nfe: jax.Array


def integrate(
    method: Method,
    vector_field,
    params,
    y0,
    t0,
    ts,
    *,
    key=None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    adjoint: diffrax.AbstractAdjoint | None = None,
    max_steps: int = 1024,
) -> Output:
    """Solves from `t0` and saves at the increasing times `ts` (shape (n,)).

    `ys` has shape (n, *y0.shape); `penalty` is 0 for `NoRegularization` and `Steer`.
    `key` is needed by Steer, LocalRegularization and KineticJacobian.
    """
    ts = jnp.asarray(ts)
    if ts.ndim != 1 or ts.shape[0] < 1:
        raise ValueError(f"ts must be a non-empty 1-D array of times, got shape {ts.shape}.")
    needs_key = (Steer, LocalRegularization, KineticJacobian)
    if isinstance(method, needs_key) and key is None:
        raise ValueError(f"key is required for {type(method).__name__}.")
    solver = RegularizedSolver(
        rtol=rtol,
        atol=atol,
        stiffness=isinstance(method, GlobalRegularization) and method.kind == "stiffness",
    )
    common = dict(rtol=rtol, atol=atol, adjoint=adjoint, max_steps=max_steps)
    zero = jnp.zeros((), jnp.result_type(*jtu.tree_leaves(y0)))

    def run(field, y_init, save_ts, wrapped=solver):
        return adaptive_solve(
            diffrax.ODETerm(field), wrapped, t0, save_ts[-1], y_init, params,
            saveat=diffrax.SaveAt(ts=save_ts), **common,
        )

    if isinstance(method, NoRegularization):
        sol = run(vector_field, y0, ts)
        return Output(sol.ys, zero, penalties(solver, sol, sol.solver_state[1]).num_evaluations)
    if isinstance(method, Steer):
        sol = run(vector_field, y0, baselines.steer_times(key, t0, ts, method.b))
        return Output(sol.ys, zero, penalties(solver, sol, sol.solver_state[1]).num_evaluations)
    if isinstance(method, GlobalRegularization):
        if isinstance(adjoint, _ZERO_GRADIENT_ADJOINTS):
            raise ValueError(
                f"adjoint={type(adjoint).__name__}() gives a global penalty zero gradient "
                "in diffrax; use RecursiveCheckpointAdjoint or DirectAdjoint, or "
                "LocalRegularization."
            )
        sol = run(vector_field, y0, ts)
        pen = penalties(solver, sol, sol.solver_state[1], method.aggregation)
        value = pen.error if method.kind == "error" else pen.stiffness
        return Output(sol.ys, value, pen.num_evaluations)
    if isinstance(method, LocalRegularization):
        key_time, key_pick = jax.random.split(key)
        if method.sampling == "unbiased":
            t_reg, dt_reg = unbiased_time(key_time, t0, ts[-1]), None
            all_ts = jnp.concatenate([ts, t_reg[None]])
            order = jnp.argsort(all_ts)
            sol = run(vector_field, y0, all_ts[order])
            ys = jtu.tree_map(lambda a: a[jnp.argsort(order)], sol.ys)
            ys, y_reg = jtu.tree_map(lambda a: a[:-1], ys), jtu.tree_map(lambda a: a[-1], ys)
            nfe = penalties(solver, sol, sol.solver_state[1]).num_evaluations
        else:
            sol = run(vector_field, y0, ts, ReservoirSolver(solver, key_pick))
            (_, state), sample = sol.solver_state
            ys, t_reg, dt_reg, y_reg = sol.ys, sample.t, sample.dt, sample.y
            nfe = penalties(solver, sol, state).num_evaluations
        local = local_penalty(
            diffrax.ODETerm(vector_field), params, t_reg, y_reg, ts[-1], rtol=rtol,
            atol=atol, dt=dt_reg,
        )
        value = local.error if method.kind == "error" else local.stiffness
        return Output(ys, value, nfe)
    if isinstance(method, KineticJacobian):
        eps = jax.random.normal(key, jnp.shape(y0), jnp.result_type(y0))
        field = baselines.kinetic_jacobian_field(vector_field, eps)
        sol = run(field, (y0, zero, zero), ts)
        ys, kinetic, frobenius = sol.ys
        nfe = penalties(solver, sol, sol.solver_state[1]).num_evaluations
        return Output(ys, kinetic[-1] + frobenius[-1], nfe)
    if isinstance(method, Taylor):
        sol = run(baselines.taylor_field(vector_field), (y0, zero), ts)
        ys, r = sol.ys
        nfe = penalties(solver, sol, sol.solver_state[1]).num_evaluations
        return Output(ys, r[-1], nfe)
    raise TypeError(f"method must be one of the samplax.neural_ode methods, got {method!r}.")
