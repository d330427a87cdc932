"""Workflows a user calls: the Denoiser adapter, guidance, sample() and invert()."""

from samplax.samplers.denoiser import Denoiser, classifier_free_guidance
from samplax.samplers.editing import edit
from samplax.samplers.info import Info
from samplax.samplers.reversible import reversible_invert, reversible_sample
from samplax.samplers.sampling import invert, sample
from samplax.samplers.tuning import TuneInfo, load_grid, save_grid, tune_grid

__all__ = [
    "Denoiser",
    "Info",
    "TuneInfo",
    "classifier_free_guidance",
    "edit",
    "invert",
    "load_grid",
    "reversible_invert",
    "reversible_sample",
    "sample",
    "save_grid",
    "tune_grid",
]
