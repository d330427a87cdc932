"""DEIS (Zhang & Chen, ICLR 2023, "Fast Sampling of Diffusion Models with Exponential
Integrator") and iPNDM: integrators of the noise-prediction diffusion ODE.

With v = x / alpha and rho = sigma / alpha (= exp(-lambda)) the probability-flow ODE is
dv / drho = eps(x, t): the linear part is solved exactly and only the noise prediction is
approximated. Over a step from t_i to t_{i+1},

    x_{i+1} = (alpha_{i+1} / alpha_i) x_i + alpha_{i+1} * integral_{rho_i}^{rho_{i+1}} eps drho.

* tAB-DEIS replaces eps by the Lagrange polynomial in t through the last `order`
  predictions; the integrals are taken in lambda by Gauss-Legendre quadrature (in lambda
  the integrand is smooth, even where rho(t) has a square-root behaviour near t = 0).
  samplax counts the predictions, as for every multistep method here, so `order` is the
  order of accuracy; the paper and its JAX code (jax_deis) count the polynomial's degree:
  our deis-tab4 is their tAB3 and our deis-tab3 their tAB2.
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
import functools

import jax
import jax.numpy as jnp
import numpy as np

from samplax.checks import check_choice
from samplax.pytrees import static_field
from samplax.schedules import Schedule
from samplax.solvers.base import FixedGridSolver
from samplax.solvers.engine import Plan
from samplax.solvers.exponential import exponential_multistep_plan, psi
from samplax.solvers.toolkit import TABLEAUX, OneStepMethod, gauss_legendre, lagrange_basis, one_step_plan, past_nodes

__all__ = ["DEIS", "RhoRungeKutta", "IPNDM", "RHO_TABLEAUX"]

DEIS_METHODS = ("tab", "rhoab")
RHO_TABLEAUX = ("heun", "kutta3", "rk4")  # the Runge-Kutta methods of rhoRK-DEIS

# Adams-Bashforth weights for equal steps, newest prediction first (iPNDM).
_ADAMS_BASHFORTH = (
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)


class _NoiseMultistep(FixedGridSolver):
    """A multistep exponential integrator on the noise prediction, one evaluation per step:
    x_{i+1} = scale_i x_i - sigma_{i+1} sum_j weights[i, j] eps_{i-j}, with orders warming
    up from one. Subclasses give the weights."""

    multistep = True
    evaluations_per_step = 1

    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        return steps + int(denoise_to_zero)

    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        weights = functools.partial(self._weights, schedule, times)
        return exponential_multistep_plan(self, schedule, times, denoise_to_zero, weights)

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
        order: 1 to 4, the number of predictions in the polynomial (its degree plus one:
            the DEIS paper's tAB-r is order r + 1). Order 1 is DDIM.
        method: "tab" or "rhoab".
        lower_order_final: lower the order over the last steps, as for DPM-Solver. Off by
            default, as in the DEIS paper and jax_deis: on two sharp Gaussian mixtures
            (benchmarks/dpm_benchmark.py, seeds 0 and 1) the full order was more accurate
            for every tAB and rhoAB order at NFE 5-20 (docs/benchmarks.md).
        quadrature_nodes: Gauss-Legendre nodes per step for tAB-DEIS. With 24 nodes the
            coefficients agree with a 400-node rule to 1e-13 relative on the continuous
            schedules (VPLinear, VPCosine, EDM); on VPDiscrete, whose t(lambda) has kinks
            at the table points, only to about 1e-7 relative.
    """

    order: int = static_field(3)
    method: str = static_field("tab")
    lower_order_final: bool = static_field(False)
    quadrature_nodes: int = static_field(24)
    prediction: str = static_field("noise")

    def __post_init__(self):
        super().__post_init__()
        check_choice("DEIS order", self.order, (1, 2, 3, 4))
        check_choice("DEIS method", self.method, DEIS_METHODS)
        check_choice("prediction", self.prediction, ("noise",))
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
            unit, unit_weights = gauss_legendre(order)
            rhos = jnp.exp(-lambdas)
            nodes = past_nodes(rhos, order)
            points = rhos[:-1, None] + (rhos[1:] - rhos[:-1])[:, None] * unit[None]
            basis = lagrange_basis(nodes, points)
            # alpha_{i+1} (rho_{i+1} - rho_i) = -sigma_{i+1} psi_1(h).
            return ddim[:, None] * jnp.einsum("q,sqk->sk", unit_weights, basis)
        # tAB: integral over lambda of l_j(t(lambda)) (-exp(-lambda)); with the factor
        # alpha_{i+1} it is -sigma_{i+1} h sum_q w_q exp(lambda_{i+1} - lambda_q) l_j(t_q).
        unit, unit_weights = gauss_legendre(self.quadrature_nodes)
        offsets = h[:, None] * unit[None]  # lambda_q - lambda_i
        points_lambda = lambdas[:-1, None] + offsets
        points = schedule.inverse_lambda(points_lambda)
        nodes = past_nodes(times, order)
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

    tableau: str = static_field("kutta3")
    prediction: str = static_field("noise")

    def __post_init__(self):
        super().__post_init__()
        check_choice("tableau", self.tableau, RHO_TABLEAUX)
        check_choice("prediction", self.prediction, ("noise",))

    @property
    def stages(self) -> int:
        return TABLEAUX[self.tableau].stages

    @property
    def evaluations_per_step(self) -> int:
        return self.stages

    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        return self.stages * steps + int(denoise_to_zero)

    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        tableau = TABLEAUX[self.tableau]
        lambdas = schedule.lambda_(times)
        rho_from, rho_to = jnp.exp(-lambdas[:-1]), jnp.exp(-lambdas[1:])
        step_rho = rho_to - rho_from
        alpha_from = schedule.alpha(times[:-1])
        nodes, stage_alphas = [], []
        for fraction in tableau.c:
            if fraction == 0.0:
                nodes.append(times[:-1])
                stage_alphas.append(alpha_from)
            elif fraction == 1.0:
                nodes.append(times[1:])
                stage_alphas.append(schedule.alpha(times[1:]))
            else:
                stage_lambda = -jnp.log(rho_from + fraction * step_rho)
                nodes.append(schedule.inverse_lambda(stage_lambda))
                stage_alphas.append(schedule.alpha_sigma_from_lambda(stage_lambda)[0])
        alpha_to = schedule.alpha(times[1:])
        # Stage k evaluates at alpha_k (v_i + drho sum_l a_kl eps_l), with v = x / alpha.
        method = OneStepMethod(
            node_times=jnp.stack(nodes, axis=1).reshape(-1),
            a=tableau.a,
            b=tableau.b,
            input_states=tuple(stage_alpha / alpha_from for stage_alpha in stage_alphas),
            input_scales=tuple(stage_alpha * step_rho for stage_alpha in stage_alphas),
            update_state=alpha_to / alpha_from,
            update_scale=alpha_to * step_rho,
        )
        return one_step_plan(schedule, times, denoise_to_zero, self.prediction, method)


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

    order: int = static_field(4)
    lower_order_final: bool = static_field(False)
    prediction: str = static_field("noise")

    def __post_init__(self):
        super().__post_init__()
        check_choice("iPNDM order", self.order, (1, 2, 3, 4))
        check_choice("prediction", self.prediction, ("noise",))

    def _weights(self, schedule, times, h, orders):
        table = np.zeros((self.order, self.order))
        for order in range(1, self.order + 1):
            table[order - 1, :order] = _ADAMS_BASHFORTH[order - 1]
        return psi(1, h)[:, None] * jnp.asarray(table[orders - 1], h.dtype)  # table rows are static


# The registry names of these solvers (samplax.solvers.get).
SOLVERS = {
    "deis-tab1": DEIS(method="tab", order=1),
    "deis-tab2": DEIS(method="tab", order=2),
    "deis-tab3": DEIS(method="tab", order=3),
    "deis-tab4": DEIS(method="tab", order=4),
    "deis-rhoab1": DEIS(method="rhoab", order=1),
    "deis-rhoab2": DEIS(method="rhoab", order=2),
    "deis-rhoab3": DEIS(method="rhoab", order=3),
    "deis-rhoab4": DEIS(method="rhoab", order=4),
    "deis-rhork2": RhoRungeKutta(tableau="heun"),
    "deis-rhork3": RhoRungeKutta(tableau="kutta3"),
    "deis-rhork4": RhoRungeKutta(tableau="rk4"),
    "ipndm": IPNDM(order=4),
}
