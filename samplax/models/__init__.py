"""Flax NNX networks, training losses, the training loop, checkpoints, small data sets,
the shipped pretrained digits models, and diffusers checkpoints converted to NNX."""

from samplax.models import (
    checkpoints,
    data,
    diffusers,
    diffusers_dit,
    diffusers_unet,
    diffusers_vae,
    losses,
    networks,
    pretrained,
    training,
)
from samplax.models.diffusers import load_decoder, load_diffusers
from samplax.models.losses import denoising_loss, flow_matching_loss
from samplax.models.networks import MLP, Classifier, UNet, network_function
from samplax.models.pretrained import as_denoiser
from samplax.models.training import TrainConfig, train

__all__ = [
    "MLP",
    "Classifier",
    "TrainConfig",
    "UNet",
    "as_denoiser",
    "checkpoints",
    "data",
    "denoising_loss",
    "diffusers",
    "diffusers_dit",
    "diffusers_unet",
    "diffusers_vae",
    "flow_matching_loss",
    "load_decoder",
    "load_diffusers",
    "losses",
    "network_function",
    "networks",
    "pretrained",
    "train",
    "training",
]
