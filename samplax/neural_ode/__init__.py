"""Neural ODEs on diffrax that are cheap to solve.

Regularizers read from the adaptive solver's own error and stiffness estimates (ERNODE and
SRNODE of Pal et al., ICML 2021; their local versions, Pal et al., ICML 2023), the
baselines STEER, RNODE and TayNODE, Flax NNX models and an optax training loop.
"""

from samplax.neural_ode.baselines import kinetic_jacobian_field, steer_times, taylor_field
from samplax.neural_ode.local import (
    LocalPenalty,
    ReservoirSolver,
    local_penalty,
    unbiased_time,
)
from samplax.neural_ode.methods import (
    GlobalRegularization,
    KineticJacobian,
    LocalRegularization,
    Method,
    NoRegularization,
    Output,
    Problem,
    Steer,
    Taylor,
    integrate,
)
from samplax.neural_ode.models import CNF, LatentODE, MLPField, ODEClassifier, field_fn
from samplax.neural_ode.regularizers import (
    Penalties,
    RegularizedSolver,
    RegularizerState,
    adaptive_solve,
    aggregate,
    error_estimate,
    penalties,
    solve,
    stability_size,
    stiffness_estimate,
)
from samplax.neural_ode.training import (
    History,
    exponential_weight,
    make_step,
    timed_step,
    train,
)

__all__ = [
    "CNF", "GlobalRegularization", "History", "KineticJacobian", "LatentODE",
    "LocalPenalty", "LocalRegularization", "MLPField", "Method", "NoRegularization",
    "ODEClassifier", "Output", "Penalties", "Problem", "RegularizedSolver", "RegularizerState",
    "ReservoirSolver", "Steer", "Taylor", "adaptive_solve", "aggregate", "error_estimate",
    "exponential_weight", "field_fn", "integrate", "kinetic_jacobian_field",
    "local_penalty", "make_step", "penalties", "solve", "stability_size", "steer_times",
    "stiffness_estimate", "taylor_field", "timed_step", "train", "unbiased_time",
]
