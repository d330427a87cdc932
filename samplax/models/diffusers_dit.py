"""diffusers' `DiTTransformer2DModel` in Flax NNX, channels-last: the class-conditional
latent Diffusion Transformer of Peebles and Xie (2023, "Scalable Diffusion Models with
Transformers"), as in facebook/DiT-XL-2-256.

Patches of the latent (a strided conv) plus fixed 2-D sine-cosine positions, then blocks
of adaLN-Zero self-attention and a GELU MLP, each block with its own timestep-and-label
embedding, and a final adaptive LayerNorm and linear layer back to patches. Attribute
names are diffusers', so tensor names are parameter paths. The label table has one row
more than the classes: label `num_embeds_ada_norm` is the null label of classifier-free
guidance, as samplax's own networks have it. DiT-XL/2 predicts noise and a variance
(learned sigma, `out_channels = 2 in_channels`): `__call__` returns the noise half, which
is what a sampler uses, and `with_variance` the whole output.
"""

from __future__ import annotations

import dataclasses

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.models.diffusers_unet import TimestepEmbedding, check_options, config_from_dict, multi_head_attention
from samplax.models.networks import timestep_embedding

__all__ = ["DiTConfig", "DiTTransformer2DModel"]

ACTIVATIONS = {"gelu-approximate": lambda x: jax.nn.gelu(x, approximate=True),
               "gelu": lambda x: jax.nn.gelu(x, approximate=False)}
DIT_OPTIONS = {"norm_type": ("ada_norm_zero",), "activation_fn": tuple(ACTIVATIONS),
               "norm_elementwise_affine": (False,)}


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    """The fields of a diffusers DiTTransformer2DModel config.json, with diffusers'
    defaults (DiT-XL/2 at 256 pixels: a 32x32x4 latent). `norm_num_groups`,
    `upcast_attention` and `dropout` do not change the network at inference."""

    num_attention_heads: int = 16
    attention_head_dim: int = 72
    in_channels: int = 4
    out_channels: int | None = None
    num_layers: int = 28
    dropout: float = 0.0
    norm_num_groups: int = 32
    attention_bias: bool = True
    sample_size: int = 32
    patch_size: int = 2
    activation_fn: str = "gelu-approximate"
    num_embeds_ada_norm: int | None = 1000
    upcast_attention: bool = False
    norm_type: str = "ada_norm_zero"
    norm_elementwise_affine: bool = False
    norm_eps: float = 1e-5

    @classmethod
    def from_dict(cls, config: dict, source: str = "config.json") -> DiTConfig:
        return config_from_dict(cls, config, "DiTTransformer2DModel", source)

    def check(self, source: str = "config") -> None:
        check_options(self, DIT_OPTIONS, source)
        if self.num_embeds_ada_norm is None:
            raise ValueError(f"{source}: num_embeds_ada_norm is None; a DiT with adaLN-Zero needs its classes")
        for name in ("sample_size", "patch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{source}: {name} must be a positive integer, got {value!r}")
        if self.sample_size % self.patch_size:
            raise ValueError(f"{source}: sample_size={self.sample_size} is not a multiple of "
                             f"patch_size={self.patch_size}")
        if self.width % 4:
            raise ValueError(f"{source}: the width num_attention_heads x attention_head_dim = {self.width} must be "
                             "a multiple of 4 (the 2-D sine-cosine positions)")

    @property
    def width(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def outputs(self) -> int:
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def learned_sigma(self) -> bool:
        return self.outputs == 2 * self.in_channels

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return (self.sample_size, self.sample_size, self.in_channels)

    @property
    def classes(self) -> int:
        return self.num_embeds_ada_norm

    @property
    def null_label(self) -> int:
        """The label of classifier-free guidance's unconditional branch: the last row."""
        return self.num_embeds_ada_norm

    @property
    def latent(self) -> bool:
        """A DiT samples the latents of an autoencoder (its pipeline's vae/)."""
        return True


def sincos_positions(width: int, side: int) -> np.ndarray:
    """(side * side, width) fixed positions of a side x side grid of patches in row-major
    order: the first half of the features embeds the column, the second the row, each
    as sines then cosines of position * 10000^(-k / (width / 4)) (float64, rounded to
    float32)."""
    quarter = width // 4
    frequencies = 1.0 / 10_000 ** (np.arange(quarter, dtype=np.float64) / quarter)

    def along(positions):
        angles = np.outer(positions, frequencies)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    rows, columns = np.meshgrid(np.arange(side, dtype=np.float64), np.arange(side, dtype=np.float64), indexing="ij")
    return np.concatenate([along(columns.reshape(-1)), along(rows.reshape(-1))], axis=1).astype(np.float32)


def _layer_norm(x, eps):
    """LayerNorm over the features without scale or bias (two-pass variance)."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    variance = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(variance + eps)


class PatchEmbed(nnx.Module):
    def __init__(self, config: DiTConfig, *, dtype, rngs):
        size = config.patch_size
        self.proj = nnx.Conv(config.in_channels, config.width, (size, size), strides=(size, size), padding="VALID",
                             dtype=dtype, rngs=rngs)

    def __call__(self, x):
        h = self.proj(x)
        batch, rows, columns, width = h.shape
        return h.reshape(batch, rows * columns, width) + sincos_positions(width, rows).astype(h.dtype)


class LabelEmbedding(nnx.Module):
    def __init__(self, classes, width, *, dtype, rngs):
        self.embedding_table = nnx.Embed(classes + 1, width, dtype=dtype, rngs=rngs)

    def __call__(self, labels):
        return self.embedding_table(labels)


class CombinedTimestepLabelEmbeddings(nnx.Module):
    """The timestep's sinusoid (256 features, cosines first, frequency shift 1) through an
    MLP, plus the label's embedding."""

    def __init__(self, classes, width, *, dtype, rngs):
        self.timestep_embedder = TimestepEmbedding(256, width, dtype=dtype, rngs=rngs)
        self.class_embedder = LabelEmbedding(classes, width, dtype=dtype, rngs=rngs)

    def __call__(self, timesteps, labels):
        sinusoid = timestep_embedding(timesteps, 256, frequency_shift=1)
        return self.timestep_embedder(sinusoid) + self.class_embedder(labels)


class AdaLayerNormZero(nnx.Module):
    """The block's conditioning: SiLU, then one linear layer to six modulations (shift,
    scale and gate of the attention and of the MLP)."""

    def __init__(self, config: DiTConfig, *, dtype, rngs):
        self.emb = CombinedTimestepLabelEmbeddings(config.classes, config.width, dtype=dtype, rngs=rngs)
        self.linear = nnx.Linear(config.width, 6 * config.width, dtype=dtype, rngs=rngs)

    def __call__(self, timesteps, labels):
        return jnp.split(self.linear(jax.nn.silu(self.emb(timesteps, labels))), 6, axis=-1)


class TokenAttention(nnx.Module):
    def __init__(self, config: DiTConfig, *, dtype, rngs):
        width, bias = config.width, config.attention_bias
        self.heads = config.num_attention_heads
        self.to_q = nnx.Linear(width, width, use_bias=bias, dtype=dtype, rngs=rngs)
        self.to_k = nnx.Linear(width, width, use_bias=bias, dtype=dtype, rngs=rngs)
        self.to_v = nnx.Linear(width, width, use_bias=bias, dtype=dtype, rngs=rngs)
        self.to_out = nnx.List([nnx.Linear(width, width, dtype=dtype, rngs=rngs)])

    def __call__(self, x):
        return self.to_out[0](multi_head_attention(self.to_q(x), self.to_k(x), self.to_v(x), self.heads))


class GELUProjection(nnx.Module):
    def __init__(self, width, inner, activation, *, dtype, rngs):
        self.activation = activation
        self.proj = nnx.Linear(width, inner, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.activation(self.proj(x))


class FeedForward(nnx.Module):
    """Linear to 4x the width with GELU, then linear back (`net[1]` is diffusers' dropout)."""

    def __init__(self, config: DiTConfig, *, dtype, rngs):
        width = config.width
        self.net = nnx.List([GELUProjection(width, 4 * width, ACTIVATIONS[config.activation_fn], dtype=dtype,
                                            rngs=rngs), None, nnx.Linear(4 * width, width, dtype=dtype, rngs=rngs)])

    def __call__(self, x):
        return self.net[2](self.net[0](x))


class TransformerBlock(nnx.Module):
    """adaLN-Zero: x + gate * attention(modulated norm(x)), then x + gate * MLP(modulated
    norm(x)), the modulations from this block's own timestep-and-label embedding."""

    def __init__(self, config: DiTConfig, *, dtype, rngs):
        self.eps = config.norm_eps
        self.norm1 = AdaLayerNormZero(config, dtype=dtype, rngs=rngs)
        self.attn1 = TokenAttention(config, dtype=dtype, rngs=rngs)
        self.ff = FeedForward(config, dtype=dtype, rngs=rngs)

    def __call__(self, x, timesteps, labels):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            m[:, None, :] for m in self.norm1(timesteps, labels))
        x = x + gate_msa * self.attn1(_layer_norm(x, 1e-6) * (1 + scale_msa) + shift_msa)
        return x + gate_mlp * self.ff(_layer_norm(x, self.eps) * (1 + scale_mlp) + shift_mlp)


class DiTTransformer2DModel(nnx.Module):
    """diffusers' DiTTransformer2DModel from its config."""

    TENSOR_PREFIXES = ("",)  # every tensor of the checkpoint

    def __init__(self, config: DiTConfig, *, dtype=None, rngs: nnx.Rngs):
        config.check()
        self.config = config
        self.pos_embed = PatchEmbed(config, dtype=dtype, rngs=rngs)
        self.transformer_blocks = nnx.List([TransformerBlock(config, dtype=dtype, rngs=rngs)
                                            for _ in range(config.num_layers)])
        self.proj_out_1 = nnx.Linear(config.width, 2 * config.width, dtype=dtype, rngs=rngs)
        self.proj_out_2 = nnx.Linear(config.width, config.patch_size**2 * config.outputs, dtype=dtype, rngs=rngs)

    def with_variance(self, x, timestep, label):
        """The whole output, (batch, height, width, out_channels): the noise, then the
        variance channels of a learned-sigma model."""
        config = self.config
        batch, height, width, _ = x.shape
        timesteps = jnp.broadcast_to(jnp.asarray(timestep, jnp.float32), (batch,))
        labels = jnp.broadcast_to(jnp.asarray(label, jnp.int32), (batch,))
        h = self.pos_embed(x)
        for block in self.transformer_blocks:
            h = block(h, timesteps, labels)
        conditioning = self.transformer_blocks[0].norm1.emb(timesteps, labels)
        shift, scale = jnp.split(self.proj_out_1(jax.nn.silu(conditioning)), 2, axis=-1)
        h = self.proj_out_2(_layer_norm(h, 1e-6) * (1 + scale[:, None]) + shift[:, None])
        size, rows, columns = config.patch_size, height // config.patch_size, width // config.patch_size
        h = h.reshape(batch, rows, columns, size, size, config.outputs).transpose(0, 1, 3, 2, 4, 5)
        return h.reshape(batch, height, width, config.outputs).astype(x.dtype)

    def __call__(self, x, timestep, label):
        """The noise prediction (the first in_channels channels of a learned-sigma model).
        `label`: one class per sample; `num_embeds_ada_norm` is the null label."""
        output = self.with_variance(x, timestep, label)
        return output[..., : self.config.in_channels] if self.config.learned_sigma else output
