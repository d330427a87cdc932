"""Workflows a user calls: the Denoiser adapter, guidance, sample() and invert()."""

from samplax.samplers.denoiser import Denoiser, classifier_free_guidance
from samplax.samplers.sampling import Info, invert, sample

__all__ = ["Denoiser", "Info", "classifier_free_guidance", "invert", "sample"]
