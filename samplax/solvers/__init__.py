"""Numerics only: time grids, the scan engine and the solvers. Solvers never see a network,
only a `predict(x, t)` callable, a schedule and a time grid."""

from samplax.solvers.adaptive import AdaptiveDPMSolver
from samplax.solvers.base import AdaptiveSolver, FixedGridSolver, get, names, register
from samplax.solvers.dpm_solver import DPMSolver
from samplax.solvers.engine import Plan, run_plan
from samplax.solvers.flow import FireFlow, FlowAdaptive, RFSolver, RungeKutta
from samplax.solvers.grids import GRIDS, time_grid

__all__ = [
    "AdaptiveDPMSolver",
    "AdaptiveSolver",
    "DPMSolver",
    "FireFlow",
    "FixedGridSolver",
    "FlowAdaptive",
    "GRIDS",
    "Plan",
    "RFSolver",
    "RungeKutta",
    "get",
    "names",
    "register",
    "run_plan",
    "time_grid",
]
