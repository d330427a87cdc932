"""DEIS (Zhang & Chen, ICLR 2023, "Fast Sampling of Diffusion Models with Exponential
Integrator") and iPNDM: integrators of the noise-prediction diffusion ODE.

With v = x / alpha and rho = sigma / alpha (= exp(-lambda)) the probability-flow ODE is
dv / drho = eps(x, t): the linear part is solved exactly and only the noise prediction is
approximated. Over a step from t_i to t_{i+1},

    x_{i+1} = (alpha_{i+1} / alpha_i) x_i + alpha_{i+1} * integral_{rho_i}^{rho_{i+1}} eps drho.

* tAB-DEIS replaces eps by the Lagrange polynomial in t through the last `order`
  predictions; the integrals are taken in lambda by Gauss-Legendre quadrature (in lambda
  the integrand is smooth, even where rho(t) has a square-root behaviour near t = 0).
* rhoAB-DEIS uses the Lagrange polynomial in rho; the integrals are polynomial and the
  Gauss-Legendre rule is exact for them.
* rhoRK-DEIS runs a classical Runge-Kutta method on dv / drho = eps.
* iPNDM (Zhang & Chen) uses the fixed Adams-Bashforth weights of equal steps, scaled by the
  DDIM step. On a grid that is not uniform in rho this makes it second order.

Order one of every variant is DDIM. All coefficients are computed in jax.numpy, vectorised
over steps, so a time grid can be differentiated through them.
"""

from __future__ import annotations

import abc
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from samplax.schedules import Schedule
from samplax.solvers.base import FixedGridSolver, register
from samplax.solvers.dpm_solver import append_denoising_stage, multistep_orders
from samplax.solvers.engine import Plan, PlanBuilder
from samplax.solvers.exponential import linear_part, psi

__all__ = ["DEIS", "RhoRungeKutta", "IPNDM", "TABLEAUS"]

DEIS_METHODS = ("tab", "rhoab")

# Butcher tableaus (c, A, b) of the Runge-Kutta methods of rhoRK-DEIS.
TABLEAUS = {
    "heun": ((0.0, 1.0), ((), (1.0,)), (0.5, 0.5)),
    "kutta3": ((0.0, 0.5, 1.0), ((), (0.5,), (-1.0, 2.0)), (1 / 6, 2 / 3, 1 / 6)),
    "rk4": (
        (0.0, 0.5, 0.5, 1.0),
        ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
        (1 / 6, 1 / 3, 1 / 3, 1 / 6),
    ),
}

# Adams-Bashforth weights for equal steps, newest prediction first (iPNDM).
_ADAMS_BASHFORTH = (
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)


def _stage_times(times, denoise_to_zero):
    return times if denoise_to_zero else times[:-1]


def _past_nodes(values, count):
    """(steps, count) array whose column j is values[i - j] at row i: the current and past
    grid values of each step. Before the grid starts, the values continue with the first
    step's spacing, so that unused Lagrange nodes stay distinct and every coefficient stays
    finite (and differentiable)."""
    first_gap = values[0] - values[1]
    padded = jnp.concatenate([values[0] + first_gap * jnp.arange(count - 1, 0, -1), values])
    start = count - 1
    columns = [padded[start - j : start - j + values.shape[0] - 1] for j in range(count)]
    return jnp.stack(columns, axis=1)


def lagrange_basis(nodes, points):
    """Values of the Lagrange basis polynomials through `nodes` (S, K) at `points` (S, Q):
    an (S, Q, K) array whose [..., j] entry is the polynomial that is 1 at nodes[:, j] and
    0 at the other nodes."""
    count = nodes.shape[1]
    basis = []
    for j in range(count):
        value = jnp.ones_like(points)
        for m in range(count):
            if m != j:
                value = value * (points - nodes[:, m : m + 1]) / (nodes[:, j : j + 1] - nodes[:, m : m + 1])
        basis.append(value)
    return jnp.stack(basis, axis=-1)


def _gauss_legendre(nodes: int):
    points, weights = np.polynomial.legendre.leggauss(nodes)
    return (points + 1.0) / 2.0, weights / 2.0  # on [0, 1]


class _NoiseMultistep(FixedGridSolver):
    """A multistep exponential integrator on the noise prediction, one evaluation per step:
    x_{i+1} = scale_i x_i - sigma_{i+1} sum_j weights[i, j] eps_{i-j}, with orders warming
    up from one. Subclasses give the weights."""

    prediction = "noise"

    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        return steps + int(denoise_to_zero)

    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        steps = times.shape[0] - 1
        builder = PlanBuilder(_stage_times(times, denoise_to_zero), history_size=self.order)
        orders = multistep_orders(self.order, steps, self.lower_order_final, denoise_to_zero)
        scale, multiplier, h = linear_part(schedule, times[:-1], times[1:], "noise")
        weights = self._weights(schedule, times, h, orders)
        builder.set_update(np.arange(steps), scale, -multiplier[:, None] * weights)
        if denoise_to_zero:
            append_denoising_stage(builder, schedule, times[-1], "noise")
        return builder.build()

    @abc.abstractmethod
    def _weights(self, schedule, times, h, orders):
        """(steps, order) weights of the past noise predictions, newest first."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DEIS(_NoiseMultistep):
    """tAB-DEIS (method="tab") and rhoAB-DEIS (method="rhoab"): multistep exponential
    integrators that extrapolate the noise prediction by a Lagrange polynomial in t or in
    rho = sigma / alpha.

    Attributes:
        order: 1, 2 or 3 (number of predictions in the polynomial). Order 1 is DDIM.
        method: "tab" or "rhoab".
        lower_order_final: lower the order over the last steps, as for DPM-Solver.
        quadrature_nodes: Gauss-Legendre nodes per step for tAB-DEIS. With 24 nodes the
            coefficients agree with a 400-node rule to 1e-13 relative on the continuous
            schedules (VPLinear, VPCosine, EDM); on VPDiscrete, whose t(lambda) has kinks
            at the table points, only to about 1e-7 relative.
    """

    order: int = dataclasses.field(default=3, metadata={"static": True})
    method: str = dataclasses.field(default="tab", metadata={"static": True})
    lower_order_final: bool = dataclasses.field(default=True, metadata={"static": True})
    quadrature_nodes: int = dataclasses.field(default=24, metadata={"static": True})

    def __post_init__(self):
        if self.order not in (1, 2, 3):
            raise ValueError(f"DEIS order must be 1, 2 or 3, got {self.order!r}")
        if self.method not in DEIS_METHODS:
            raise ValueError(f"DEIS method must be one of {DEIS_METHODS}, got {self.method!r}")
        if not isinstance(self.quadrature_nodes, int) or self.quadrature_nodes < 2:
            raise ValueError(f"quadrature_nodes must be an integer >= 2, got {self.quadrature_nodes!r}")

    def _weights(self, schedule, times, h, orders):
        steps = times.shape[0] - 1
        ddim = psi(1, h)
        weights = jnp.zeros((steps, self.order), h.dtype).at[:, 0].set(ddim)
        for order in range(2, self.order + 1):
            integrals = self._basis_integrals(schedule, times, h, ddim, order)  # (steps, order)
            # The basis sums to one, so the newest weight follows exactly from the DDIM
            # weight psi_1(h); order one stays DDIM to rounding.
            candidate = jnp.concatenate(
                [ddim[:, None] - jnp.sum(integrals[:, 1:], axis=1, keepdims=True), integrals[:, 1:]],
                axis=1,
            )
            candidate = jnp.pad(candidate, ((0, 0), (0, self.order - order)))
            weights = jnp.where(jnp.asarray(orders)[:, None] == order, candidate, weights)
        return weights

    def _basis_integrals(self, schedule, times, h, ddim, order):
        """(steps, order): alpha_{i+1} times the integral over the step of each Lagrange
        basis polynomial d rho, divided by -sigma_{i+1}."""
        lambdas = schedule.lambda_(times)
        if self.method == "rhoab":
            # Polynomial in rho: Gauss-Legendre with `order` nodes is exact.
            unit, unit_weights = _gauss_legendre(order)
            rhos = jnp.exp(-lambdas)
            nodes = _past_nodes(rhos, order)
            points = rhos[:-1, None] + (rhos[1:] - rhos[:-1])[:, None] * unit[None]
            basis = lagrange_basis(nodes, points)
            # alpha_{i+1} (rho_{i+1} - rho_i) = -sigma_{i+1} psi_1(h).
            return ddim[:, None] * jnp.einsum("q,sqk->sk", unit_weights, basis)
        # tAB: integral over lambda of l_j(t(lambda)) (-exp(-lambda)); with the factor
        # alpha_{i+1} it is -sigma_{i+1} h sum_q w_q exp(lambda_{i+1} - lambda_q) l_j(t_q).
        unit, unit_weights = _gauss_legendre(self.quadrature_nodes)
        offsets = h[:, None] * unit[None]  # lambda_q - lambda_i
        points_lambda = lambdas[:-1, None] + offsets
        points = schedule.inverse_lambda(points_lambda)
        nodes = _past_nodes(times, order)
        basis = lagrange_basis(nodes, points)
        kernel = h[:, None] * unit_weights[None] * jnp.exp(h[:, None] - offsets)
        return jnp.einsum("sq,sqk->sk", kernel, basis)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RhoRungeKutta(FixedGridSolver):
    """rhoRK-DEIS: a classical Runge-Kutta method on dv / drho = eps(alpha v, t(rho)), with
    v = x / alpha and rho = sigma / alpha. Stages sit at rho_i + c_k (rho_{i+1} - rho_i).

    Attributes:
        tableau: "heun" (2 stages, order 2), "kutta3" (Kutta's third-order method) or
            "rk4" (the classical fourth-order method). NFE = stages x steps.
    """

    tableau: str = dataclasses.field(default="kutta3", metadata={"static": True})

    prediction = "noise"

    def __post_init__(self):
        if self.tableau not in TABLEAUS:
            raise ValueError(f"tableau must be one of {tuple(TABLEAUS)}, got {self.tableau!r}")

    @property
    def stages(self) -> int:
        return len(TABLEAUS[self.tableau][0])

    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        return self.stages * steps + int(denoise_to_zero)

    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        c, a, b = TABLEAUS[self.tableau]
        stages, steps = self.stages, times.shape[0] - 1
        lambdas = schedule.lambda_(times)
        rho_from, rho_to = jnp.exp(-lambdas[:-1]), jnp.exp(-lambdas[1:])
        step_rho = rho_to - rho_from
        alpha_from = schedule.alpha(times[:-1])
        stage_times, stage_alphas = [], []
        for fraction in c:
            if fraction == 0.0:
                stage_times.append(times[:-1])
                stage_alphas.append(alpha_from)
            elif fraction == 1.0:
                stage_times.append(times[1:])
                stage_alphas.append(schedule.alpha(times[1:]))
            else:
                stage_lambda = -jnp.log(rho_from + fraction * step_rho)
                stage_times.append(schedule.inverse_lambda(stage_lambda))
                stage_alphas.append(schedule.alpha_sigma_from_lambda(stage_lambda)[0])
        flat_times = jnp.stack(stage_times, axis=1).reshape(-1)
        if denoise_to_zero:
            flat_times = jnp.concatenate([flat_times, times[-1:]])
        builder = PlanBuilder(flat_times, history_size=stages)
        first = np.arange(steps) * stages
        for k in range(1, stages):
            # Stage k evaluates at alpha_k (v_i + drho sum_l a_kl eps_l); history[j] holds
            # eps_{k-1-j} of this step.
            history = jnp.stack(
                [stage_alphas[k] * step_rho * a[k][k - 1 - j] for j in range(k)], axis=1
            )
            builder.set_input(first + k, stage_alphas[k] / alpha_from, history)
        alpha_to = schedule.alpha(times[1:])
        history = jnp.stack([alpha_to * step_rho * b[stages - 1 - j] for j in range(stages)], axis=1)
        builder.set_update(first + stages - 1, alpha_to / alpha_from, history)
        if denoise_to_zero:
            append_denoising_stage(builder, schedule, times[-1], "noise")
        return builder.build()


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class IPNDM(_NoiseMultistep):
    """iPNDM (Zhang & Chen 2023, improving PNDM of Liu et al. 2022): the DDIM step with the
    noise prediction replaced by the equal-step Adams-Bashforth combination of the last
    `order` predictions, warming up from order one. Its order is `order` on grids uniform
    in rho and two on other grids (the weights ignore unequal steps).

    Attributes:
        order: 1 to 4.
        lower_order_final: lower the order over the last steps, as for DPM-Solver.
    """

    order: int = dataclasses.field(default=4, metadata={"static": True})
    lower_order_final: bool = dataclasses.field(default=False, metadata={"static": True})

    def __post_init__(self):
        if self.order not in (1, 2, 3, 4):
            raise ValueError(f"iPNDM order must be 1, 2, 3 or 4, got {self.order!r}")

    def _weights(self, schedule, times, h, orders):
        table = np.zeros((self.order, self.order))
        for order in range(1, self.order + 1):
            table[order - 1, :order] = _ADAMS_BASHFORTH[order - 1]
        return psi(1, h)[:, None] * jnp.asarray(table[orders - 1], h.dtype)  # table rows are static


def _register_all():
    for order in (1, 2, 3):
        register(f"deis-tab{order}", lambda o=order: DEIS(order=o, method="tab"))
        register(f"deis-rhoab{order}", lambda o=order: DEIS(order=o, method="rhoab"))
    for name, tableau in (("deis-rhork2", "heun"), ("deis-rhork3", "kutta3"), ("deis-rhork4", "rk4")):
        register(name, lambda t=tableau: RhoRungeKutta(tableau=t))
    register("ipndm", lambda: IPNDM(order=4))


_register_all()
