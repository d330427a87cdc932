"""Workflows a user calls: the Denoiser adapter, guidance, sample() and invert()."""

from samplax.samplers.denoiser import Denoiser, classifier_free_guidance
from samplax.samplers.sampling import Info, invert, sample
from samplax.samplers.tuning import TuneInfo, load_grid, save_grid, tune_grid

__all__ = [
    "Denoiser",
    "Info",
    "TuneInfo",
    "classifier_free_guidance",
    "invert",
    "load_grid",
    "sample",
    "save_grid",
    "tune_grid",
]
