"""Adams-Bashforth methods (Bashforth & Adams 1883) on the velocity dx/dt = v(x, t) of any
schedule: multistep methods with one evaluation per step on any grid.

Over a step from t_i to t_{i+1} of signed size h, the velocity is replaced by the Lagrange
polynomial in t through the last `order` velocities and integrated exactly (Gauss-Legendre
with `order` nodes):

    x_{i+1} = x_i + sum_j b_ij v_{i-j},    b_ij = integral over the step of the j-th basis polynomial.

On a uniform grid these are the classical Adams-Bashforth weights (order 2: h (3/2, -1/2));
on any other grid the variable-step ones. Orders warm up from Euler over the first steps,
whose local errors limit the global order of orders 3 and 4 to about two as the steps
shrink (docs/solvers.md has the measured slopes).

On the EDM schedule (alpha = 1, sigma = t) the velocity is (x - D(x)) / sigma, so order 4
is the "LMS" sampler of k-diffusion (Karras et al. 2022's codebase), here on any schedule.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from samplax.checks import check_choice
from samplax.pytrees import static_field
from samplax.schedules import Schedule
from samplax.solvers.base import FixedGridSolver
from samplax.solvers.engine import Plan
from samplax.solvers.toolkit import gauss_legendre, lagrange_basis, multistep_plan, past_nodes

__all__ = ["AdamsBashforth"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AdamsBashforth(FixedGridSolver):
    """Variable-step Adams-Bashforth on the velocity.

    Attributes:
        order: 1 to 4 (the number of velocities in the polynomial). Order 1 is Euler.
        lower_order_final: lower the order over the last steps, as for DPM-Solver.
    """

    order: int = static_field(3)
    lower_order_final: bool = static_field(False)
    prediction: str = static_field("velocity")

    multistep = True
    evaluations_per_step = 1

    def __post_init__(self):
        super().__post_init__()
        check_choice("Adams-Bashforth order", self.order, (1, 2, 3, 4))
        check_choice("prediction", self.prediction, ("velocity",))

    def evaluations(self, steps: int, denoise_to_zero: bool = False) -> int:
        return steps + int(denoise_to_zero)

    def plan(self, schedule: Schedule, times: jax.Array, denoise_to_zero: bool = False) -> Plan:
        h = times[1:] - times[:-1]

        def update(orders):
            weights = jnp.zeros((h.shape[0], self.order), h.dtype).at[:, 0].set(h)
            for order in range(2, self.order + 1):
                unit, unit_weights = gauss_legendre(order)
                points = times[:-1, None] + h[:, None] * jnp.asarray(unit, h.dtype)[None]
                basis = lagrange_basis(past_nodes(times, order), points)  # (steps, nodes, order)
                integrals = h[:, None] * jnp.einsum("q,sqk->sk", jnp.asarray(unit_weights, h.dtype), basis)
                candidate = jnp.pad(integrals, ((0, 0), (0, self.order - order)))
                weights = jnp.where(jnp.asarray(orders)[:, None] == order, candidate, weights)
            return 1.0, weights

        return multistep_plan(self, schedule, times, denoise_to_zero, update)


# The registry names of these solvers (samplax.solvers.get).
SOLVERS = {
    "adams-bashforth-2": AdamsBashforth(order=2),
    "adams-bashforth-3": AdamsBashforth(order=3),
    "lms": AdamsBashforth(order=4),
}
