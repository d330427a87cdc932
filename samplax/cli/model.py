"""The model of a run: the loaded network, its config and schedule, and the one way every
mode turns it into a `samplax.Denoiser` (condition and classifier-free guidance)."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable
from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from samplax import schedules
from samplax.cli.options import UsageError
from samplax.models import checkpoints, pretrained
from samplax.models.diffusers import DiffusersModel, load_decoder
from samplax.samplers.denoiser import Denoiser

__all__ = ["Model"]


@jax.jit
def _decode_latents(graphdef, state, latents):
    return nnx.merge(graphdef, state).decode_latents(latents)


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A loaded generative model.

    Attributes:
        name: the --model value (a shipped name, a checkpoint path or a diffusers folder).
        module: the NNX network.
        config: the model's config (schedule, prediction, time_input, null_label, ...;
            for a diffusers folder its class, folder and sample_shape).
        schedule: the schedule named by the config (or a diffusers scheduler config).
        decoder: for a latent model (a diffusers DiT pipeline), the VAE decoder that turns
            its samples into images; None when the samples are the images.
    """

    name: str
    module: Any
    config: dict
    schedule: schedules.Schedule
    decoder: Any = None

    @classmethod
    def load(cls, name: str) -> Model:
        """Load a shipped model or a checkpoint.

        Args:
            name: a shipped model name, a checkpoint path or a diffusers pipeline folder.

        Returns:
            The model; raises `UsageError` when it is not generative (no schedule) or when
            the file or folder cannot be read as a model.
        """
        try:
            if pathlib.Path(name).is_dir():
                return cls._from_diffusers(name)
            module, config = pretrained.load(name)
        except UsageError:
            raise
        except (ValueError, FileNotFoundError) as error:  # a file or folder that is not a model: a bad argument
            raise UsageError(f"--model: {error}") from None
        if "schedule" not in config:
            raise UsageError(f"--model {name!r} is not a generative model (no schedule in its config)")
        return cls(name, module, config, schedules.get(config["schedule"]))

    @classmethod
    def _from_diffusers(cls, folder: str) -> Model:
        """A diffusers pipeline or model folder with its scheduler config: a UNet2DModel
        (unconditional or class-conditional) or a DiT pipeline, whose latents its VAE
        decodes (`load_decoder`)."""
        read = DiffusersModel.read(folder)
        if read.schedule is None:
            raise UsageError(f"--model {folder!r} has no scheduler config (scheduler/scheduler_config.json or "
                             "scheduler_config.json); the command line needs it for the schedule and prediction")
        index = read.folder / "model_index.json"
        components = json.loads(index.read_text()) if index.is_file() else {}
        if "vqvae" in components:
            raise UsageError(f"--model {folder!r} decodes its latents with a VQ-VAE (VQModel), which samplax does "
                             "not convert; it reads AutoencoderKL decoders")
        decoder = load_decoder(read.folder) if "vae" in components else None
        if decoder is None and read.config.latent:
            raise UsageError(f"--model {folder!r} is a latent {type(read.module).__name__} without its VAE: give the "
                             "pipeline folder (with model_index.json and vae/)")
        config = {"diffusers": str(read.folder), "class_name": type(read.module).__name__,
                  "prediction": read.prediction, "time_input": "discrete", "sample_shape": read.config.sample_shape,
                  "classes": read.classes, "null_label": read.config.null_label,
                  "decoder": None if decoder is None else "vae"}
        model = cls(folder, read.module, config, read.schedule, decoder)
        if model.image_shape[-1] not in (1, 3):
            raise UsageError(f"--model {folder!r} makes images of {model.image_shape[-1]} channels; PNG files hold 1 "
                             "(grey) or 3 (RGB): sample it from Python (samplax.models.load_diffusers)")
        return model

    @property
    def weights_sha256(self) -> str:
        """The SHA-256 of the network's parameters: --resume refuses other weights under the same --model."""
        return checkpoints.parameters_sha256(self.module)

    @property
    def conditional(self) -> bool:
        """Whether the network takes a class label."""
        return self.classes is not None

    @property
    def classes(self) -> int | None:
        """The number of classes: labels 0 to classes - 1 (None when unconditional)."""
        # A samplax model's null label is its number of classes.
        return self.config.get("classes", self.config.get("null_label"))

    @property
    def null_label(self) -> int | None:
        """The label of the unconditional branch of classifier-free guidance (None where
        the model has none, as a class-conditional UNet2DModel)."""
        return self.config.get("null_label")

    @property
    def prediction(self) -> str:
        return self.config["prediction"]

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one sample, what the solver runs on: a diffusers model's config
        says; every shipped model and samplax checkpoint is a digits model."""
        return tuple(self.config.get("sample_shape") or pretrained.IMAGE_SHAPE)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image: the decoded shape of a latent model's sample, else the
        sample's."""
        if self.decoder is None:
            return self.sample_shape
        latent = jax.ShapeDtypeStruct((1, *self.sample_shape), jnp.float32)
        return tuple(jax.eval_shape(self.decode, latent).shape[1:])

    def decode(self, samples) -> jax.Array:
        """The images of a batch of samples: a latent model's decoded by its VAE, others
        as they are."""
        if self.decoder is None:
            return samples
        return _decode_latents(nnx.graphdef(self.decoder), nnx.state(self.decoder), samples)

    def denoiser(self, labels=None, guidance_scale: float = 1.0, place: Callable | None = None) -> Denoiser:
        """The Denoiser for one batch.

        Args:
            labels: one class per sample (int array), or None to call the network without
                a label.
            guidance_scale: classifier-free guidance weight; with labels and a weight other
                than 1, the null label is the unconditional branch.
            place: applied to each label array, if given (e.g. `shard_batch` to shard it like
                the noise).

        Returns:
            A `samplax.Denoiser` of the network.
        """
        options = {}
        place = place or (lambda array: array)
        if labels is not None:
            options["condition"] = {"label": place(jnp.asarray(labels, jnp.int32))}
            if guidance_scale != 1.0:
                null = jnp.full(np.shape(labels), self.null_label, jnp.int32)
                options.update(unconditional={"label": place(null)}, guidance_scale=guidance_scale)
        return pretrained.as_denoiser(self.module, self.schedule, self.prediction, self.config["time_input"], **options)

    def record(self) -> dict:
        """What run.json says about the model: how it was trained and what it predicts."""
        keys = ("diffusers", "class_name", "decoder") if "diffusers" in self.config else ("command", "seed", "schedule")
        return {k: self.config.get(k) for k in (*keys, "prediction", "time_input")}
