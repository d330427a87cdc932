"""Load diffusers checkpoints from disk into Flax NNX: the model's config.json and
safetensors weights, and the scheduler config that says how it was trained.

No torch is needed, and nothing is downloaded: the folder is the user's (for example a
`huggingface-cli download google/ddpm-cifar10-32` or a `save_pretrained` folder).
`load_diffusers(folder)` reads a pipeline folder (model_index.json with unet/ and
scheduler/) or a model folder (config.json and diffusion_pytorch_model.safetensors,
optionally scheduler_config.json beside it or ../scheduler/), and returns a `Denoiser`
whose network takes images batch-first, channels-last, and the model's own timestep.

Weights are renamed only where the layouts differ: torch's conv weights (out, in, h, w)
become NNX kernels (h, w, in, out), linear weights are transposed, norm weights become
scales and embedding weights embeddings. Old checkpoints that name attention weights
query/key/value/proj_attn (diffusers converts them at load time) are read too.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import warnings

import flax.nnx as nnx
import jax.numpy as jnp
import numpy as np

from samplax import schedules
from samplax.checks import check_path
from samplax.models.diffusers_dit import DiTConfig, DiTTransformer2DModel
from samplax.models.diffusers_unet import UNet2DConfig, UNet2DModel
from samplax.models.diffusers_vae import AutoencoderKLConfig, AutoencoderKLDecoder
from samplax.models.networks import network_function
from samplax.samplers.denoiser import Denoiser

__all__ = [
    "MODEL_CLASSES", "DiffusersModel", "load_decoder", "load_diffusers", "load_network", "read_weights",
    "schedule_from_scheduler_config",
]

WEIGHTS = "diffusion_pytorch_model.safetensors"
# The model classes samplax converts, by config "_class_name", with their config reader.
MODEL_CLASSES = {
    "UNet2DModel": (UNet2DConfig, UNet2DModel),
    "DiTTransformer2DModel": (DiTConfig, DiTTransformer2DModel),
    "AutoencoderKL": (AutoencoderKLConfig, AutoencoderKLDecoder),  # the decoder only
}
PREDICTIONS = {"epsilon": "noise", "sample": "data", "v_prediction": "v"}
# Schedulers of discrete-time VP diffusion (betas over num_train_timesteps steps): their
# training fields define the schedule; the rest of their config sets up diffusers' own
# sampler (spacing, clipping, variance, solver order) and does not describe the model.
VP_SCHEDULERS = (
    "DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler",
    "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler", "LMSDiscreteScheduler",
    "UniPCMultistepScheduler", "DEISMultistepScheduler", "KDPM2DiscreteScheduler", "DPMSolverSDEScheduler",
    "SASolverScheduler", "DDIMInverseScheduler", "LCMScheduler", "TCDScheduler",
)
_OLD_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _read_json(path: pathlib.Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(value).__name__}")
    return value


def _model_folders(folder: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path | None]:
    """(model folder, scheduler config or None) of a pipeline or model folder."""
    check_path("folder", folder)
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; give a diffusers pipeline or model folder")
    if (folder / "model_index.json").is_file():
        index = _read_json(folder / "model_index.json")
        components = [name for name in ("unet", "transformer") if name in index]
        if not components:
            raise ValueError(f"{folder / 'model_index.json'} names no unet or transformer; samplax loads those")
        model = folder / components[0]
        scheduler = folder / "scheduler" / "scheduler_config.json"
        return model, scheduler if scheduler.is_file() else None
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has neither model_index.json (a pipeline) nor config.json (a model)")
    for scheduler in (folder / "scheduler_config.json", folder.parent / "scheduler" / "scheduler_config.json"):
        if scheduler.is_file():
            return folder, scheduler
    return folder, None


def read_weights(folder) -> dict[str, np.ndarray]:
    """The tensors of a diffusers model folder, by name, as float32 NumPy arrays: one
    safetensors file or the shards its index lists (fp16 and bf16 files are widened)."""
    from safetensors.numpy import load_file

    folder = pathlib.Path(folder)
    index = folder / f"{WEIGHTS}.index.json"
    if (folder / WEIGHTS).is_file():
        files = [folder / WEIGHTS]
    elif index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index} has no weight_map")
        files = [folder / name for name in sorted(set(weight_map.values()))]
    else:
        others = sorted(path.name for path in folder.glob("*.bin")) + sorted(path.name for path in
                                                                             folder.glob("*.safetensors"))
        raise FileNotFoundError(
            f"{folder} has no {WEIGHTS} (nor a sharded index of it); samplax reads safetensors weights only"
            + (f"; found {others}" if others else ""))
    tensors = {}
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"{file} is listed in {index.name} but missing")
        try:
            loaded = load_file(str(file))
        except Exception as error:  # safetensors raises its own error types for corrupt files
            raise ValueError(f"{file} is not a readable safetensors file: {error}") from None
        tensors.update({name: np.asarray(value, np.float32) for name, value in loaded.items()})
    return tensors


def _renamed(name: str) -> str:
    """The current diffusers name of a tensor saved with the old attention names."""
    parts = name.split(".")
    if "attentions" in parts and len(parts) >= 2 and parts[-2] in _OLD_ATTENTION_NAMES:
        parts[-2:-1] = _OLD_ATTENTION_NAMES[parts[-2]].split(".")
    return ".".join(parts)


def _converted(name: str, tensor: np.ndarray, expected: dict) -> tuple[tuple, np.ndarray]:
    """(NNX parameter path, value) of the torch tensor `name`, checked against the shape
    the module expects there."""
    *owner, kind = (int(part) if part.isdigit() else part for part in _renamed(name).split("."))
    owner = tuple(owner)
    if kind == "bias" and owner + ("bias",) in expected:
        path, value = owner + ("bias",), tensor
    elif kind == "weight" and owner + ("kernel",) in expected:
        path = owner + ("kernel",)
        value = tensor.transpose(2, 3, 1, 0) if tensor.ndim == 4 else tensor.T
    elif kind == "weight" and owner + ("scale",) in expected:
        path, value = owner + ("scale",), tensor
    elif kind == "weight" and owner + ("embedding",) in expected:
        path, value = owner + ("embedding",), tensor
    else:
        raise ValueError(f"tensor {name!r} of the checkpoint has no place in the model its config describes")
    if value.shape != expected[path]:
        raise ValueError(f"tensor {name!r} has shape {tensor.shape}, but the model its config describes takes "
                         f"{_torch_shape(expected[path], path[-1])} there")
    return path, value


def _torch_shape(shape: tuple, kind: str) -> tuple:
    if kind == "kernel":
        return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1]
    return shape


def load_network(folder, dtype=None) -> tuple[nnx.Module, object]:
    """The NNX network of a diffusers model folder with its weights, and its config
    object. `dtype` is the computation dtype (for example jnp.bfloat16; weights stay
    float32)."""
    check_path("folder", folder)
    folder = pathlib.Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder} has no config.json; give a diffusers model folder")
    raw = _read_json(config_file)
    name = raw.get("_class_name")
    if name not in MODEL_CLASSES:
        raise ValueError(f"{config_file}: _class_name {name!r} is not a model samplax converts; it converts "
                         f"{sorted(MODEL_CLASSES)}")
    config_class, module_class = MODEL_CLASSES[name]
    config = config_class.from_dict(raw, str(config_file))
    abstract = nnx.eval_shape(lambda: module_class(config, dtype=dtype, rngs=nnx.Rngs(0)))
    graph, state = nnx.split(abstract)
    expected = {tuple(path): tuple(variable.get_value().shape) for path, variable in nnx.to_flat_state(state)}
    values = dict(_converted(tensor_name, tensor, expected) for tensor_name, tensor in read_weights(folder).items()
                  if tensor_name.startswith(module_class.TENSOR_PREFIXES))
    missing = [".".join(map(str, path)) for path in expected if path not in values]
    if missing:
        raise ValueError(f"{folder}: the checkpoint lacks {len(missing)} parameter(s) its config needs, such as "
                         f"{missing[:3]} (NNX paths)")
    pure = nnx.to_pure_dict(state)
    for path, value in values.items():
        node = pure
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = jnp.asarray(value)
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graph, state), config


def load_decoder(folder, dtype=None) -> AutoencoderKLDecoder:
    """The VAE decoder of a latent pipeline folder (its vae/) or of an AutoencoderKL
    model folder: `decoder.decode_latents(latents)` turns sampled latents into images."""
    check_path("folder", folder)
    folder = pathlib.Path(folder)
    model_folder = folder / "vae" if (folder / "model_index.json").is_file() else folder
    module, _ = load_network(model_folder, dtype=dtype)
    if not isinstance(module, AutoencoderKLDecoder):
        raise ValueError(f"{model_folder} holds a {type(module).__name__}, not an AutoencoderKL")
    return module


def _betas(config: dict, source: str) -> np.ndarray:
    steps = int(config.get("num_train_timesteps", 1000))
    if config.get("trained_betas") is not None:
        return np.asarray(config["trained_betas"], np.float64)
    kind = config.get("beta_schedule", "linear")
    start, end = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
    if kind == "linear":
        return np.linspace(start, end, steps, dtype=np.float64)
    if kind == "scaled_linear":
        return np.linspace(start**0.5, end**0.5, steps, dtype=np.float64) ** 2
    if kind == "squaredcos_cap_v2":  # Nichol and Dhariwal 2021, betas capped at 0.999
        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)])
    raise ValueError(f"{source}: beta_schedule {kind!r} is not supported; samplax reads linear, scaled_linear, "
                     "squaredcos_cap_v2 or trained_betas")


def schedule_from_scheduler_config(config: dict, source: str = "scheduler_config.json"):
    """(schedule, prediction) of the model a diffusers scheduler config was saved with:
    a `VPDiscrete` from its betas (rescaled to zero terminal SNR where it says so) and
    the prediction its prediction_type names."""
    name = config.get("_class_name")
    if name not in VP_SCHEDULERS:
        raise ValueError(f"{source}: scheduler {name!r} is not one of the discrete-time VP schedulers samplax reads "
                         f"({', '.join(VP_SCHEDULERS)})")
    prediction_type = config.get("prediction_type", "epsilon")
    if prediction_type not in PREDICTIONS:
        raise ValueError(f"{source}: prediction_type {prediction_type!r} is not one of {sorted(PREDICTIONS)}")
    if config.get("thresholding"):
        warnings.warn(f"{source}: thresholding is an option of diffusers' own sampler and is not applied; for "
                      "dynamic thresholding of the data prediction give the Denoiser threshold_ratio="
                      f"{config.get('dynamic_thresholding_ratio', 0.995)} (dataclasses.replace(model, ...))",
                      stacklevel=3)
    schedule = schedules.VPDiscrete.from_betas(_betas(config, source))
    if config.get("rescale_betas_zero_snr"):
        schedule = schedule.rescaled_to_zero_terminal_snr()
    return schedule, PREDICTIONS[prediction_type]


@dataclasses.dataclass(frozen=True, eq=False)
class DiffusersModel:
    """A diffusers folder read from disk: the NNX network with its weights, its config,
    and the schedule and prediction of its scheduler config (None without one)."""

    folder: pathlib.Path
    module: nnx.Module
    config: object
    schedule: schedules.Schedule | None
    prediction: str | None

    @classmethod
    def read(cls, folder, dtype=None) -> DiffusersModel:
        """Read a pipeline or model folder (see the module docstring); `dtype` is the
        network's computation dtype."""
        model_folder, scheduler_file = _model_folders(folder)
        module, config = load_network(model_folder, dtype=dtype)
        schedule = prediction = None
        if scheduler_file is not None:
            schedule, prediction = schedule_from_scheduler_config(_read_json(scheduler_file), str(scheduler_file))
        return cls(pathlib.Path(folder), module, config, schedule, prediction)

    @property
    def classes(self) -> int | None:
        """The number of classes of a class-conditional network (None if unconditional)."""
        return self.config.classes


def load_diffusers(folder, *, schedule=None, prediction=None, labels=None, guidance_scale: float = 1.0,
                   dtype=None) -> Denoiser:
    """The `Denoiser` of a diffusers pipeline or model folder.

    The schedule and prediction come from the scheduler config when there is one;
    `schedule=` and `prediction=` give them for a bare model folder (or override them).
    The network takes the training step index as time ("discrete"). `labels` (one class
    per sample) condition a class-conditional model; `guidance_scale` other than 1 adds
    classifier-free guidance where the model has a null label (DiT). A DiT's latents
    are the samples (its VAE decodes them). `dtype=jnp.bfloat16` runs the network in
    bfloat16 while the solver stays in float32.
    """
    read = DiffusersModel.read(folder, dtype=dtype)
    schedule = read.schedule if schedule is None else schedule
    prediction = read.prediction if prediction is None else prediction
    if schedule is None or prediction is None:
        raise ValueError(f"{folder} has no scheduler config: pass schedule= (for example "
                         "samplax.schedules.VPDiscrete.ddpm_linear()) and prediction= ('noise', 'data' or 'v')")
    if (labels is None) != (read.classes is None):
        raise ValueError(f"{folder} is class-conditional ({read.classes} classes): pass labels="
                         if read.classes is not None else f"{folder} is not class-conditional; pass labels=None")
    condition = {}
    if labels is not None:
        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"labels must be integer class labels, got dtype {labels.dtype}")
        condition = {"label": jnp.asarray(labels, jnp.int32)}
    guidance = {}
    if guidance_scale != 1.0:
        if read.config.null_label is None:
            raise ValueError(f"guidance_scale={guidance_scale}: {folder} has no null label (unconditional class), "
                             "so classifier-free guidance is not defined for it")
        guidance = {"unconditional": {"label": jnp.full_like(condition["label"], read.config.null_label)},
                    "guidance_scale": guidance_scale}
    return Denoiser(network_function(read.module), schedule, prediction, "discrete", condition=condition,
                    sample_shape=read.config.sample_shape, classes=read.classes, **guidance)
