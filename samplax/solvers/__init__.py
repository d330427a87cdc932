"""Numerics only: time grids, the scan engine and the solvers. Solvers never see a network,
only a `predict(x, t)` callable, a schedule and a time grid."""

from samplax.solvers.adaptive import AdaptiveDPMSolver
from samplax.solvers.base import AdaptiveSolver, FixedGridSolver, GridSolver, Solver
from samplax.solvers.deis import DEIS, IPNDM, RhoRungeKutta
from samplax.solvers.dpm_solver import DPMSolver
from samplax.solvers.engine import Plan, run_plan
from samplax.solvers.flow import FireFlow, FlowAdaptive, RFSolver, RungeKutta
from samplax.solvers.grids import GRIDS, time_grid
from samplax.solvers.registry import get, names, register
from samplax.solvers.reversible import ReversibleHeun, ReversibleState
from samplax.solvers.toolkit import TABLEAUX, Tableau
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
    "GridSolver",
    "IPNDM",
    "Plan",
    "ReversibleHeun",
    "ReversibleState",
    "RhoRungeKutta",
    "RFSolver",
    "RungeKutta",
    "Solver",
    "TABLEAUX",
    "Tableau",
    "UniC",
    "UniP",
    "get",
    "names",
    "register",
    "run_plan",
    "time_grid",
    "unipc",
]
