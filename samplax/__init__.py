"""samplax: fast sampling, inversion and editing for diffusion and flow models in JAX."""

from samplax import schedules, solvers
from samplax.gaussian_mixture import GaussianMixture
from samplax.samplers import Denoiser, Info, classifier_free_guidance, invert, sample
from samplax.samplers import load_grid, save_grid, tune_grid
from samplax.samplers import edit, reversible_invert, reversible_sample
from samplax.solvers.reversible import ReversibleState

__version__ = "0.1.0"

__all__ = [
    "Denoiser",
    "GaussianMixture",
    "Info",
    "ReversibleState",
    "classifier_free_guidance",
    "edit",
    "invert",
    "load_grid",
    "reversible_invert",
    "reversible_sample",
    "sample",
    "save_grid",
    "schedules",
    "solvers",
    "tune_grid",
]
