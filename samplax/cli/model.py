"""The model of a run: the loaded network, its config and schedule, and the one way every
mode turns it into a `samplax.Denoiser` (condition and classifier-free guidance)."""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

from samplax import schedules
from samplax.cli.options import UsageError
from samplax.models import checkpoints, pretrained
from samplax.models.diffusers import DiffusersModel
from samplax.samplers.denoiser import Denoiser

__all__ = ["Model"]


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A loaded generative model.

    Attributes:
        name: the --model value (a shipped name, a checkpoint path or a diffusers folder).
        module: the NNX network.
        config: the model's config (schedule, prediction, time_input, null_label, ...;
            for a diffusers folder its class, folder and sample_shape).
        schedule: the schedule named by the config (or a diffusers scheduler config).
    """

    name: str
    module: Any
    config: dict
    schedule: schedules.Schedule

    @classmethod
    def load(cls, name: str) -> Model:
        """Load a shipped model or a checkpoint.

        Args:
            name: a shipped model name, a checkpoint path or a diffusers pipeline folder.

        Returns:
            The model; raises `UsageError` when it is not generative (no schedule), and
            `ValueError` (a checkpoint error) when the file cannot be loaded.
        """
        if pathlib.Path(name).is_dir():
            return cls._from_diffusers(name)
        module, config = pretrained.load(name)
        if "schedule" not in config:
            raise UsageError(f"--model {name!r} is not a generative model (no schedule in its config)")
        return cls(name, module, config, schedules.get(config["schedule"]))

    @classmethod
    def _from_diffusers(cls, folder: str) -> Model:
        """An unconditional diffusers UNet with its scheduler config (the public DDPM
        checkpoints); class-conditional ones are for `samplax.models.load_diffusers`."""
        read = DiffusersModel.read(folder)
        if read.schedule is None:
            raise UsageError(f"--model {folder!r} has no scheduler config (scheduler/scheduler_config.json or "
                             "scheduler_config.json); the command line needs it for the schedule and prediction")
        if read.classes is not None:
            raise UsageError(f"--model {folder!r} is class-conditional (a DiT or a conditional UNet2DModel); the "
                             "command line samples unconditional diffusers UNets: from Python use "
                             "samplax.models.load_diffusers(folder, labels=...), and load_decoder for a latent model")
        config = {"diffusers": str(read.folder), "class_name": type(read.module).__name__,
                  "prediction": read.prediction, "time_input": "discrete", "sample_shape": read.config.sample_shape}
        return cls(folder, read.module, config, read.schedule)

    @property
    def weights_sha256(self) -> str:
        """The SHA-256 of the network's parameters: --resume refuses other weights under the same --model."""
        return checkpoints.parameters_sha256(self.module)

    @property
    def conditional(self) -> bool:
        """Whether the network takes a class label (it has a null label for guidance)."""
        return self.config.get("null_label") is not None

    @property
    def classes(self) -> int | None:
        """The number of classes: labels 0 to classes - 1; the null label is `classes`."""
        return self.config.get("null_label")

    @property
    def prediction(self) -> str:
        return self.config["prediction"]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image: a diffusers model's config says; every shipped model and
        samplax checkpoint is a digits model."""
        return tuple(self.config.get("sample_shape") or pretrained.IMAGE_SHAPE)

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
                null = jnp.full(np.shape(labels), self.classes, jnp.int32)
                options.update(unconditional={"label": place(null)}, guidance_scale=guidance_scale)
        return pretrained.as_denoiser(self.module, self.schedule, self.prediction, self.config["time_input"], **options)

    def record(self) -> dict:
        """What run.json says about the model: how it was trained and what it predicts."""
        keys = ("diffusers", "class_name") if "diffusers" in self.config else ("command", "seed", "schedule")
        return {k: self.config.get(k) for k in (*keys, "prediction", "time_input")}
