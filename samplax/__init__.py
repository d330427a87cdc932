"""samplax: fast sampling, inversion and editing for diffusion and flow models in JAX."""

from samplax import schedules, solvers
from samplax.gaussian_mixture import GaussianMixture
from samplax.samplers import Denoiser, Info, classifier_free_guidance, invert, sample

__version__ = "0.1.0"

__all__ = [
    "Denoiser",
    "GaussianMixture",
    "Info",
    "classifier_free_guidance",
    "invert",
    "sample",
    "schedules",
    "solvers",
]
