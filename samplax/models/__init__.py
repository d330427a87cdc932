"""Flax NNX networks, training losses, the training loop, checkpoints, small data sets and
the shipped pretrained digits models."""

from samplax.models import checkpoints, data, losses, networks, pretrained, training
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
    "flow_matching_loss",
    "losses",
    "network_function",
    "networks",
    "pretrained",
    "train",
    "training",
]
