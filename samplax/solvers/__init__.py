"""Numerics only: time grids, the scan engine and the solvers. Solvers never see a network,
only a `predict(x, t)` callable, a schedule and a time grid."""

from samplax.solvers.adaptive import AdaptiveDPMSolver
from samplax.solvers.ancestral import AncestralSampler
from samplax.solvers.base import AdaptiveSolver, FixedGridSolver, GridSolver, Solver
from samplax.solvers.deis import DEIS, IPNDM, RhoRungeKutta
from samplax.solvers.dpm_solver import DPMSolver
from samplax.solvers.edm import EDMChurn, Restart
from samplax.solvers.engine import NoisePlan, Plan, run_plan
from samplax.solvers.flow import FireFlow, FlowAdaptive, RFSolver, RungeKutta
from samplax.solvers.grids import GRIDS, time_grid
from samplax.solvers.registry import get, names, register
from samplax.solvers.reversible import ReversibleHeun, ReversibleState
from samplax.solvers.sa_solver import SASolver
from samplax.solvers.score_sde import EulerMaruyama, PredictorCorrector
from samplax.solvers.sde_dpm_solver import SDEDPMSolver
from samplax.solvers.toolkit import TABLEAUX, Tableau
from samplax.solvers.unipc import UniC, UniP, unipc

__all__ = [
    "AdaptiveDPMSolver",
    "AdaptiveSolver",
    "AncestralSampler",
    "DEIS",
    "DPMSolver",
    "EDMChurn",
    "EulerMaruyama",
    "FireFlow",
    "FixedGridSolver",
    "FlowAdaptive",
    "GRIDS",
    "GridSolver",
    "IPNDM",
    "NoisePlan",
    "Plan",
    "PredictorCorrector",
    "Restart",
    "ReversibleHeun",
    "ReversibleState",
    "RhoRungeKutta",
    "RFSolver",
    "RungeKutta",
    "SASolver",
    "SDEDPMSolver",
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
