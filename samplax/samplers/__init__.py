"""Workflows a user calls: the Denoiser adapter, guidance, sample() and invert(), the
noise sources of stochastic sampling, and likelihoods through the probability-flow ODE."""

from samplax.samplers.denoiser import Denoiser, classifier_free_guidance
from samplax.samplers.editing import edit
from samplax.samplers.info import Info
from samplax.samplers.likelihood import ExactDivergence, Hutchinson, LikelihoodInfo, bits_per_dim, log_likelihood
from samplax.samplers.noise import BrownianNoise, IndependentNoise
from samplax.samplers.reversible import reversible_invert, reversible_sample
from samplax.samplers.sampling import invert, sample
from samplax.samplers.tuning import TuneInfo, load_grid, save_grid, tune_grid

__all__ = [
    "BrownianNoise",
    "Denoiser",
    "ExactDivergence",
    "Hutchinson",
    "IndependentNoise",
    "Info",
    "LikelihoodInfo",
    "TuneInfo",
    "bits_per_dim",
    "classifier_free_guidance",
    "edit",
    "invert",
    "load_grid",
    "log_likelihood",
    "reversible_invert",
    "reversible_sample",
    "sample",
    "save_grid",
    "tune_grid",
]
