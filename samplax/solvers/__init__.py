"""Numerics only: time grids, the scan engine and the solvers. Solvers never see a network,
only a `predict(x, t)` callable, a schedule and a time grid."""

from samplax.solvers.adaptive import AdaptiveDPMSolver
from samplax.solvers.base import AdaptiveSolver, FixedGridSolver, get, names, register
from samplax.solvers.deis import DEIS, IPNDM, RhoRungeKutta
from samplax.solvers.dpm_solver import DPMSolver
from samplax.solvers.engine import Plan, run_plan
from samplax.solvers.flow import FireFlow, FlowAdaptive, RFSolver, RungeKutta
from samplax.solvers.grids import GRIDS, time_grid
from samplax.solvers.unipc import UniC, UniP, unipc

__all__ = [
    "AdaptiveDPMSolver",
    "AdaptiveSolver",
    "DEIS",
    "DPMSolver",
    "FireFlow",
    "FixedGridSolver",
    "FlowAdaptive",
    "GRIDS",
    "IPNDM",
    "Plan",
    "RhoRungeKutta",
    "RFSolver",
    "RungeKutta",
    "UniC",
    "UniP",
    "get",
    "names",
    "register",
    "run_plan",
    "time_grid",
    "unipc",
]
