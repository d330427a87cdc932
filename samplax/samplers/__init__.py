"""Workflows a user calls: the Denoiser adapter, guidance, sample() and invert(), the
noise sources of stochastic sampling, the gradient methods of sample() and what they
enable (noise optimization, fine-tuning), and likelihoods through the probability-flow
ODE."""

from samplax.samplers.confident_editing import code
from samplax.samplers.denoiser import Denoiser, KnownRegion, classifier_free_guidance
from samplax.samplers.editing import edit
from samplax.samplers.gradients import Backpropagation, Checkpointed, ExponentialAdjoint, ReversibleAdjoint
from samplax.samplers.guidance import APG, CFG, Guidance, PosteriorGuidance
from samplax.samplers.img2img import sdedit
from samplax.samplers.info import Info
from samplax.samplers.inpainting import inpaint
from samplax.samplers.likelihood import ExactDivergence, Hutchinson, LikelihoodInfo, bits_per_dim, log_likelihood
from samplax.samplers.noise import BrownianNoise, IndependentNoise
from samplax.samplers.optimization import (
    FineTuneInfo,
    NoiseOptimizationInfo,
    fine_tune,
    optimize_noise,
    typicality_penalty,
)
from samplax.samplers.posterior import gaussian_observation, posterior_guidance
from samplax.samplers.reversible import reversible_invert, reversible_sample
from samplax.samplers.sampling import invert, sample
from samplax.samplers.tuning import TuneInfo, load_grid, save_grid, tune_grid

__all__ = [
    "APG",
    "Backpropagation",
    "CFG",
    "BrownianNoise",
    "Checkpointed",
    "Denoiser",
    "ExactDivergence",
    "ExponentialAdjoint",
    "FineTuneInfo",
    "Guidance",
    "Hutchinson",
    "IndependentNoise",
    "Info",
    "KnownRegion",
    "LikelihoodInfo",
    "NoiseOptimizationInfo",
    "PosteriorGuidance",
    "ReversibleAdjoint",
    "TuneInfo",
    "bits_per_dim",
    "classifier_free_guidance",
    "code",
    "edit",
    "fine_tune",
    "gaussian_observation",
    "inpaint",
    "invert",
    "load_grid",
    "log_likelihood",
    "optimize_noise",
    "posterior_guidance",
    "reversible_invert",
    "reversible_sample",
    "sample",
    "save_grid",
    "sdedit",
    "tune_grid",
    "typicality_penalty",
]
