"""samplax: fast sampling, inversion and editing for diffusion and flow models in JAX."""

from samplax import samplers, schedules, solvers
from samplax.gaussian_mixture import GaussianMixture
from samplax.samplers import (
    APG,
    CFG,
    Backpropagation,
    BrownianNoise,
    Checkpointed,
    Denoiser,
    ExactDivergence,
    ExponentialAdjoint,
    FineTuneInfo,
    Guidance,
    Hutchinson,
    IndependentNoise,
    Info,
    KnownRegion,
    LikelihoodInfo,
    NoiseOptimizationInfo,
    PosteriorGuidance,
    ReversibleAdjoint,
    TuneInfo,
    bits_per_dim,
    classifier_free_guidance,
    code,
    edit,
    fine_tune,
    gaussian_observation,
    inpaint,
    invert,
    load_grid,
    log_likelihood,
    optimize_noise,
    posterior_guidance,
    reversible_invert,
    reversible_sample,
    sample,
    save_grid,
    sdedit,
    tune_grid,
    typicality_penalty,
)
from samplax.solvers.reversible import ReversibleState

__version__ = "0.1.0"

# The workflows of samplax.samplers, and the packages and types a user needs beside them.
__all__ = [*samplers.__all__, "GaussianMixture", "ReversibleState", "samplers", "schedules", "solvers"]
