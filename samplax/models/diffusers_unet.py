"""diffusers' `UNet2DModel` in Flax NNX, channels-last, so that its public checkpoints
(the DDPM CIFAR-10, CelebA-HQ and LSUN models of Ho et al. 2020, ported to diffusers as
google/ddpm-*) run in samplax.

The modules carry diffusers' attribute names (`down_blocks[0].resnets[1].conv1`, ...), so
that a checkpoint's tensor names are the paths of this module's parameters
(`samplax.models.diffusers.load_diffusers` converts the weights). Only the parts those
checkpoints and their relatives use are built; `UNET_OPTIONS` lists the config keys and
values accepted, and anything else is refused by name. The network is called as
`network(x, timestep, label=None)` with x of shape (batch, height, width,
channels) and the model's own timestep (the training step index of a DDPM model). With
`dtype=jnp.bfloat16` it computes in bfloat16 from float32 weights and returns the
input's dtype, so a solver's state stays in float32.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from samplax.models.networks import timestep_embedding

__all__ = [
    "ACTIVATIONS", "UNET_OPTIONS", "UNet2DConfig", "UNet2DModel", "check_options", "config_from_dict", "conv2d",
    "group_norm",
    "multi_head_attention",
]

ACTIVATIONS = {
    "silu": jax.nn.silu, "swish": jax.nn.silu, "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False), "relu": jax.nn.relu,
}
DOWN_BLOCKS = ("DownBlock2D", "AttnDownBlock2D")
UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D")
# Config keys of diffusers' UNet2DModel with the values samplax builds (None: any value of
# the field's type). Keys starting with "_" (diffusers' bookkeeping) are ignored.
UNET_OPTIONS = {
    "time_embedding_type": ("positional",),
    "mid_block_type": ("UNetMidBlock2D", None),
    "downsample_type": ("conv",),
    "upsample_type": ("conv",),
    "act_fn": tuple(ACTIVATIONS),
    "resnet_time_scale_shift": ("default", "scale_shift"),
    "class_embed_type": (None,),
}


def check_options(config, options: dict, source: str) -> None:
    """Refuse a config field whose value is not one of those `options` allows for it."""
    for key, allowed in options.items():
        if getattr(config, key) not in allowed:
            raise ValueError(f"{source}: {key}={getattr(config, key)!r} is not supported; samplax builds "
                             f"{key} in {allowed}")


def config_from_dict(config_class, config: dict, model: str, source: str):
    """A config dataclass from a config.json's dict: unknown keys refused by name (keys
    starting with "_" are diffusers' bookkeeping), JSON lists as tuples, then checked."""
    names = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(key for key in config if key not in names and not key.startswith("_"))
    if unknown:
        raise ValueError(f"{source}: unknown {model} config key(s) {unknown}; samplax reads {sorted(names)}")
    built = config_class(**{key: tuple(value) if isinstance(value, list) else value
                            for key, value in config.items() if key in names})
    try:
        built.check(source)
    except ValueError as error:
        defaulted = [name for name in sorted(names) if name not in config and name in str(error)]
        if defaulted:
            raise ValueError(f"{error} ({', '.join(defaulted)} not in the config: diffusers' default taken)") from None
        raise
    return built


def multi_head_attention(query, key, value, heads: int):
    """Softmax attention of (batch, tokens, width) projections split into `heads` heads of
    consecutive features, scaled by 1/sqrt(head width), merged back to (batch, tokens, width)."""
    batch, tokens, width = query.shape

    def split(a):
        return a.reshape(batch, a.shape[1], heads, width // heads)

    return jax.nn.dot_product_attention(split(query), split(key), split(value)).reshape(batch, tokens, width)


@dataclasses.dataclass(frozen=True)
class UNet2DConfig:
    """The fields of a diffusers UNet2DModel config.json that shape the network, with
    diffusers' defaults. `from_dict` refuses unknown keys and unsupported values by name."""

    sample_size: int | tuple[int, int] | None = None
    in_channels: int = 3
    out_channels: int = 3
    center_input_sample: bool = False
    time_embedding_type: str = "positional"
    time_embedding_dim: int | None = None
    freq_shift: float = 0
    flip_sin_to_cos: bool = True
    down_block_types: tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")
    mid_block_type: str | None = "UNetMidBlock2D"
    up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    block_out_channels: tuple[int, ...] = (224, 448, 672, 896)
    layers_per_block: int = 2
    mid_block_scale_factor: float = 1.0
    downsample_padding: int = 1
    downsample_type: str = "conv"
    upsample_type: str = "conv"
    dropout: float = 0.0
    act_fn: str = "silu"
    attention_head_dim: int | None = 8
    norm_num_groups: int = 32
    attn_norm_num_groups: int | None = None
    norm_eps: float = 1e-5
    resnet_time_scale_shift: str = "default"
    add_attention: bool = True
    class_embed_type: str | None = None
    num_class_embeds: int | None = None
    num_train_timesteps: int | None = None

    @classmethod
    def from_dict(cls, config: dict, source: str = "config.json") -> UNet2DConfig:
        return config_from_dict(cls, config, "UNet2DModel", source)

    def check(self, source: str = "config") -> None:
        check_options(self, UNET_OPTIONS, source)
        size = self.sample_size
        sizes = () if size is None else size if isinstance(size, tuple) else (size,)
        if any(isinstance(size, bool) or not isinstance(size, int) or size < 1 for size in sizes):
            raise ValueError(f"{source}: sample_size must be a positive integer or a pair of them, got "
                             f"{self.sample_size!r}")
        for key, allowed in (("down_block_types", DOWN_BLOCKS), ("up_block_types", UP_BLOCKS)):
            for block in getattr(self, key):
                if block not in allowed:
                    raise ValueError(f"{source}: {key} has {block!r}; samplax builds {allowed}")
        levels = len(self.block_out_channels)
        if not levels or len(self.down_block_types) != levels or len(self.up_block_types) != levels:
            raise ValueError(f"{source}: block_out_channels, down_block_types and up_block_types must have the same "
                             f"non-zero length, got {levels}, {len(self.down_block_types)} and "
                             f"{len(self.up_block_types)}")
        for channels in self.block_out_channels:
            if channels % self.norm_num_groups:
                raise ValueError(f"{source}: block_out_channels {self.block_out_channels} must be divisible by "
                                 f"norm_num_groups={self.norm_num_groups}")
        if self.block_out_channels[0] % 2:
            raise ValueError(f"{source}: block_out_channels[0]={self.block_out_channels[0]} must be even (the time "
                             "embedding has sines and cosines in pairs)")

    @property
    def classes(self) -> int | None:
        """The number of classes of a class-conditional network (None if unconditional)."""
        return self.num_class_embeds

    @property
    def null_label(self) -> None:
        """A UNet2DModel has no label meaning "no class" (so no classifier-free guidance)."""
        return None

    @property
    def latent(self) -> bool:
        """Whether samples are latents that need a decoder: not by itself (a latent
        UNet's pipeline names its autoencoder)."""
        return False

    @property
    def sample_shape(self) -> tuple[int, int, int] | None:
        """(height, width, in_channels) of one sample, if the config says."""
        if self.sample_size is None:
            return None
        size = self.sample_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return (height, width, self.in_channels)


def conv2d(in_channels, out_channels, kernel, stride=1, padding=1, *, dtype, rngs):
    pad = ((padding, padding), (padding, padding)) if isinstance(padding, int) else padding
    return nnx.Conv(in_channels, out_channels, (kernel, kernel), strides=(stride, stride), padding=pad, dtype=dtype,
                    rngs=rngs)


def group_norm(channels, groups, eps, *, dtype, rngs):
    # Two-pass variance, as torch.nn.GroupNorm computes it.
    return nnx.GroupNorm(channels, num_groups=groups, epsilon=eps, use_fast_variance=False, dtype=dtype, rngs=rngs)


class ResnetBlock2D(nnx.Module):
    """GroupNorm, activation, 3x3 conv, plus the projected time embedding (added, or as a
    scale and shift of the second norm; none without `temb_channels`), GroupNorm,
    activation, 3x3 conv, and a skip (1x1 conv where the channels change), divided by
    `output_scale_factor`. The blocks read their norm groups, eps, activation and time
    conditioning from the model's config (a UNet2DConfig or an AutoencoderKLConfig)."""

    def __init__(self, in_channels, out_channels, temb_channels, config, output_scale_factor=1.0, *, dtype, rngs):
        groups, eps = config.norm_num_groups, config.norm_eps
        self.activation = ACTIVATIONS[config.act_fn]
        self.scale_shift = config.resnet_time_scale_shift == "scale_shift"
        self.output_scale_factor = output_scale_factor
        self.norm1 = group_norm(in_channels, groups, eps, dtype=dtype, rngs=rngs)
        self.conv1 = conv2d(in_channels, out_channels, 3, dtype=dtype, rngs=rngs)
        projected = 2 * out_channels if self.scale_shift else out_channels
        self.time_emb_proj = (nnx.Linear(temb_channels, projected, dtype=dtype, rngs=rngs)
                              if temb_channels is not None else None)
        self.norm2 = group_norm(out_channels, groups, eps, dtype=dtype, rngs=rngs)
        self.conv2 = conv2d(out_channels, out_channels, 3, dtype=dtype, rngs=rngs)
        self.conv_shortcut = (conv2d(in_channels, out_channels, 1, padding=0, dtype=dtype, rngs=rngs)
                              if in_channels != out_channels else None)

    def __call__(self, x, temb=None):
        h = self.conv1(self.activation(self.norm1(x)))
        if self.time_emb_proj is None:
            h = self.norm2(h)
        elif self.scale_shift:
            scale, shift = jnp.split(self.time_emb_proj(self.activation(temb))[:, None, None, :], 2, axis=-1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + self.time_emb_proj(self.activation(temb))[:, None, None, :])
        h = self.conv2(self.activation(h))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return (skip + h) / self.output_scale_factor


class Attention(nnx.Module):
    """Self-attention over the pixels: GroupNorm, query/key/value projections split into
    heads of `head_dim` channels, the output projection, the residual, divided by
    `rescale_output_factor` (diffusers' attention block of the DDPM UNets)."""

    def __init__(self, channels, head_dim, groups, eps, rescale_output_factor=1.0, *, dtype, rngs):
        if channels % head_dim:
            raise ValueError(f"attention over {channels} channels cannot have heads of {head_dim} channels")
        self.heads = channels // head_dim
        self.rescale_output_factor = rescale_output_factor
        self.group_norm = group_norm(channels, groups, eps, dtype=dtype, rngs=rngs)
        self.to_q = nnx.Linear(channels, channels, dtype=dtype, rngs=rngs)
        self.to_k = nnx.Linear(channels, channels, dtype=dtype, rngs=rngs)
        self.to_v = nnx.Linear(channels, channels, dtype=dtype, rngs=rngs)
        self.to_out = nnx.List([nnx.Linear(channels, channels, dtype=dtype, rngs=rngs)])

    def __call__(self, x):
        batch, height, width, channels = x.shape
        h = self.group_norm(x).reshape(batch, height * width, channels)
        h = self.to_out[0](multi_head_attention(self.to_q(h), self.to_k(h), self.to_v(h), self.heads)).reshape(x.shape)
        return (h + x) / self.rescale_output_factor


class Downsample2D(nnx.Module):
    """A stride-2 3x3 conv; `padding=0` pads one zero row and column at the bottom and
    right first (the DDPM checkpoints' layout)."""

    def __init__(self, channels, padding, *, dtype, rngs):
        pad = padding if padding else ((0, 1), (0, 1))
        self.conv = conv2d(channels, channels, 3, stride=2, padding=pad, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.conv(x)


class Upsample2D(nnx.Module):
    """Nearest-neighbour doubling, then a 3x3 conv."""

    def __init__(self, channels, *, dtype, rngs):
        self.conv = conv2d(channels, channels, 3, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))


class DownBlock(nnx.Module):
    """`layers_per_block` resnets (each followed by attention in an AttnDownBlock2D) and a
    downsampler except at the last level; every output is kept for the skips."""

    def __init__(self, kind, in_channels, out_channels, temb_channels, config: UNet2DConfig, last, *, dtype, rngs):
        head_dim = config.attention_head_dim or out_channels
        self.resnets = nnx.List([
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, temb_channels, config, dtype=dtype,
                          rngs=rngs)
            for i in range(config.layers_per_block)])
        self.attentions = nnx.List([
            Attention(out_channels, head_dim, config.norm_num_groups, config.norm_eps, dtype=dtype, rngs=rngs)
            for _ in range(config.layers_per_block)]) if kind == "AttnDownBlock2D" else None
        self.downsamplers = None if last else nnx.List([
            Downsample2D(out_channels, config.downsample_padding, dtype=dtype, rngs=rngs)])

    def __call__(self, x, temb):
        outputs = []
        for index, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[index](x)
            outputs.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            outputs.append(x)
        return x, outputs


class UpBlock(nnx.Module):
    """`layers_per_block + 1` resnets, each on the running features concatenated (after
    them, on the channel axis) with one skip from the down path, each followed by
    attention in an AttnUpBlock2D; an upsampler except at the last level."""

    def __init__(self, kind, in_channels, out_channels, previous_channels, temb_channels, config: UNet2DConfig, last,
                 *, dtype, rngs):
        layers = config.layers_per_block + 1
        head_dim = config.attention_head_dim or out_channels

        def resnet(i):
            running = previous_channels if i == 0 else out_channels
            skip = in_channels if i == layers - 1 else out_channels
            return ResnetBlock2D(running + skip, out_channels, temb_channels, config, dtype=dtype, rngs=rngs)

        self.resnets = nnx.List([resnet(i) for i in range(layers)])
        self.attentions = nnx.List([
            Attention(out_channels, head_dim, config.norm_num_groups, config.norm_eps, dtype=dtype, rngs=rngs)
            for _ in range(layers)]) if kind == "AttnUpBlock2D" else None
        self.upsamplers = None if last else nnx.List([Upsample2D(out_channels, dtype=dtype, rngs=rngs)])

    def __call__(self, x, skips, temb):
        for index, resnet in enumerate(self.resnets):
            x = resnet(jnp.concatenate([x, skips.pop()], axis=-1), temb)
            if self.attentions is not None:
                x = self.attentions[index](x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class MidBlock(nnx.Module):
    """Resnet, attention (unless `add_attention` is false), resnet, at the lowest level."""

    def __init__(self, channels, temb_channels, config, *, dtype, rngs):
        scale = config.mid_block_scale_factor
        groups = config.attn_norm_num_groups or config.norm_num_groups
        self.resnets = nnx.List([ResnetBlock2D(channels, channels, temb_channels, config, scale, dtype=dtype,
                                               rngs=rngs) for _ in range(2)])
        self.attentions = nnx.List([
            Attention(channels, config.attention_head_dim or channels, groups, config.norm_eps, scale, dtype=dtype,
                      rngs=rngs)]) if config.add_attention else None

    def __call__(self, x, temb=None):
        x = self.resnets[0](x, temb)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x, temb)


class UNet2DModel(nnx.Module):
    """diffusers' UNet2DModel (the DDPM UNet of Ho et al. 2020) from its config."""

    TENSOR_PREFIXES = ("",)  # every tensor of the checkpoint

    def __init__(self, config: UNet2DConfig, *, dtype=None, rngs: nnx.Rngs):
        config.check()
        self.config = config
        self.dtype = dtype
        channels: Sequence[int] = config.block_out_channels
        first = channels[0]
        temb = config.time_embedding_dim or 4 * first
        self.conv_in = conv2d(config.in_channels, first, 3, dtype=dtype, rngs=rngs)
        self.time_embedding = TimestepEmbedding(first, temb, dtype=dtype, rngs=rngs)
        self.class_embedding = (nnx.Embed(config.num_class_embeds, temb, dtype=dtype, rngs=rngs)
                                if config.num_class_embeds is not None else None)
        levels = len(channels)
        self.down_blocks = nnx.List([
            DownBlock(kind, channels[max(i - 1, 0)], channels[i], temb, config, i == levels - 1, dtype=dtype,
                      rngs=rngs)
            for i, kind in enumerate(config.down_block_types)])
        self.mid_block = (MidBlock(channels[-1], temb, config, dtype=dtype, rngs=rngs)
                          if config.mid_block_type is not None else None)
        reverse = list(reversed(channels))
        self.up_blocks = nnx.List([
            UpBlock(kind, reverse[min(i + 1, levels - 1)], reverse[i], reverse[max(i - 1, 0)], temb, config,
                    i == levels - 1, dtype=dtype, rngs=rngs)
            for i, kind in enumerate(config.up_block_types)])
        self.conv_norm_out = group_norm(first, config.norm_num_groups, config.norm_eps, dtype=dtype, rngs=rngs)
        self.conv_out = conv2d(first, config.out_channels, 3, dtype=dtype, rngs=rngs)

    def __call__(self, x, timestep, label=None):
        """`label`: the class labels (diffusers' `class_labels`), one per sample, for a model
        with a class embedding; samplax's condition key for class labels is "label"."""
        config = self.config
        batch = x.shape[0]
        sample = 2 * x - 1 if config.center_input_sample else x
        timesteps = jnp.broadcast_to(jnp.asarray(timestep, jnp.float32), (batch,))
        sinusoid = timestep_embedding(timesteps, config.block_out_channels[0],
                                      frequency_shift=config.freq_shift, sine_first=not config.flip_sin_to_cos)
        temb = self.time_embedding(sinusoid)
        if self.class_embedding is None:
            if label is not None:
                raise ValueError("this UNet2DModel has no class embedding (num_class_embeds is None); "
                                 "call it without labels")
        else:
            if label is None:
                raise ValueError(f"this UNet2DModel is class-conditional ({config.num_class_embeds} classes): "
                                 "pass label=")
            temb = temb + self.class_embedding(jnp.broadcast_to(jnp.asarray(label, jnp.int32), (batch,)))
        h = self.conv_in(sample)
        skips = [h]
        for block in self.down_blocks:
            h, outputs = block(h, temb)
            skips.extend(outputs)
        if self.mid_block is not None:
            h = self.mid_block(h, temb)
        for block in self.up_blocks:
            h = block(h, skips, temb)
        h = self.conv_out(jax.nn.silu(self.conv_norm_out(h)))  # SiLU here whatever act_fn says, as in diffusers
        return h.astype(x.dtype)


class TimestepEmbedding(nnx.Module):
    """Linear, SiLU, linear: the time embedding MLP (SiLU whatever act_fn says)."""

    def __init__(self, in_features, out_features, *, dtype, rngs):
        self.linear_1 = nnx.Linear(in_features, out_features, dtype=dtype, rngs=rngs)
        self.linear_2 = nnx.Linear(out_features, out_features, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.linear_2(jax.nn.silu(self.linear_1(x)))
