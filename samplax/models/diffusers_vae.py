"""The decoder of diffusers' `AutoencoderKL` in Flax NNX, channels-last: it turns the
latents a latent diffusion model samples (DiT's, for example) into images (Rombach et al.
2022, "High-Resolution Image Synthesis with Latent Diffusion Models").

`post_quant_conv` (a 1x1 conv), then the decoder: a 3x3 conv, a middle block (resnet,
single-head attention, resnet), up blocks of resnets with nearest-neighbour doubling
between them, GroupNorm, SiLU and a 3x3 conv. Attribute names are diffusers'. The
encoder is not built: `TENSOR_PREFIXES` says which tensors of the checkpoint are read.
Call `decode(latents / scaling_factor)` with the model's latents, as diffusers'
pipelines do (`decode_latents` does both).
"""

from __future__ import annotations

import dataclasses

import flax.nnx as nnx
import jax

from samplax.models.diffusers_unet import (
    ACTIVATIONS,
    MidBlock,
    ResnetBlock2D,
    Upsample2D,
    check_options,
    config_from_dict,
    conv2d,
    group_norm,
)

__all__ = ["AutoencoderKLConfig", "AutoencoderKLDecoder"]

VAE_OPTIONS = {"act_fn": tuple(ACTIVATIONS), "latents_mean": (None,), "latents_std": (None,)}


@dataclasses.dataclass(frozen=True)
class AutoencoderKLConfig:
    """The fields of a diffusers AutoencoderKL config.json, with diffusers' defaults. The
    encoder's fields are read and not used. The properties below give the decoder's
    blocks the settings they read from a config (eps 1e-6, plain time conditioning,
    single-head attention)."""

    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",)
    up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",)
    block_out_channels: tuple[int, ...] = (64,)
    layers_per_block: int = 1
    act_fn: str = "silu"
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int = 32
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    latents_mean: tuple | None = None
    latents_std: tuple | None = None
    force_upcast: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    norm_eps = 1e-6
    resnet_time_scale_shift = "default"
    mid_block_scale_factor = 1.0
    attn_norm_num_groups = None
    attention_head_dim = None

    @property
    def add_attention(self) -> bool:
        return self.mid_block_add_attention

    @classmethod
    def from_dict(cls, config: dict, source: str = "config.json") -> AutoencoderKLConfig:
        return config_from_dict(cls, config, "AutoencoderKL", source)

    def check(self, source: str = "config") -> None:
        check_options(self, VAE_OPTIONS, source)
        for block in self.up_block_types:
            if block != "UpDecoderBlock2D":
                raise ValueError(f"{source}: up_block_types has {block!r}; samplax builds UpDecoderBlock2D")
        if len(self.up_block_types) != len(self.block_out_channels):
            raise ValueError(f"{source}: up_block_types and block_out_channels must have the same length")

    @property
    def classes(self) -> None:
        return None

    @property
    def upscale(self) -> int:
        """How many times larger the images are than the latents, on each side."""
        return 2 ** (len(self.block_out_channels) - 1)


class UpDecoderBlock(nnx.Module):
    """`layers_per_block + 1` resnets without time conditioning, then a doubling except
    at the last level."""

    def __init__(self, in_channels, out_channels, config: AutoencoderKLConfig, last, *, dtype, rngs):
        self.resnets = nnx.List([
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, None, config, dtype=dtype, rngs=rngs)
            for i in range(config.layers_per_block + 1)])
        self.upsamplers = None if last else nnx.List([Upsample2D(out_channels, dtype=dtype, rngs=rngs)])

    def __call__(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.upsamplers is None else self.upsamplers[0](x)


class Decoder(nnx.Module):
    def __init__(self, config: AutoencoderKLConfig, *, dtype, rngs):
        channels = list(reversed(config.block_out_channels))
        self.conv_in = conv2d(config.latent_channels, channels[0], 3, dtype=dtype, rngs=rngs)
        self.mid_block = MidBlock(channels[0], None, config, dtype=dtype, rngs=rngs)
        self.up_blocks = nnx.List([
            UpDecoderBlock(channels[max(i - 1, 0)], channels[i], config, i == len(channels) - 1, dtype=dtype,
                           rngs=rngs)
            for i in range(len(channels))])
        self.conv_norm_out = group_norm(channels[-1], config.norm_num_groups, 1e-6, dtype=dtype, rngs=rngs)
        self.conv_out = conv2d(channels[-1], config.out_channels, 3, dtype=dtype, rngs=rngs)

    def __call__(self, z):
        h = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            h = block(h)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(h)))


class AutoencoderKLDecoder(nnx.Module):
    """The decoder half of an AutoencoderKL."""

    TENSOR_PREFIXES = ("decoder.", "post_quant_conv.")

    def __init__(self, config: AutoencoderKLConfig, *, dtype=None, rngs: nnx.Rngs):
        config.check()
        self.config = config
        self.post_quant_conv = (conv2d(config.latent_channels, config.latent_channels, 1, padding=0, dtype=dtype,
                                      rngs=rngs) if config.use_post_quant_conv else None)
        self.decoder = Decoder(config, dtype=dtype, rngs=rngs)

    def decode(self, z):
        """Images (about [-1, 1]) from unscaled latents, (batch, h, w, latent_channels)."""
        h = z if self.post_quant_conv is None else self.post_quant_conv(z)
        return self.decoder(h).astype(z.dtype)

    def decode_latents(self, latents):
        """Images from the latents a diffusion model samples (divided by scaling_factor,
        shifted by shift_factor, first)."""
        shift = self.config.shift_factor or 0.0
        return self.decode(latents / self.config.scaling_factor + shift)
