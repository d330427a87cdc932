"""samplax: fast sampling, inversion and editing for diffusion and flow models in JAX."""

from samplax import schedules, solvers
from samplax.gaussian_mixture import GaussianMixture
from samplax.samplers import Denoiser, Info, classifier_free_guidance, invert, sample
from samplax.samplers import load_grid, save_grid, tune_grid

__version__ = "0.1.0"

__all__ = [
    "Denoiser",
    "GaussianMixture",
    "Info",
    "classifier_free_guidance",
    "invert",
    "load_grid",
    "sample",
    "save_grid",
    "schedules",
    "solvers",
    "tune_grid",
]
