"""Flax NNX networks for diffusion and flow models: a small UNet for images, an MLP for
vector data and a digits classifier for quality metrics.

The generative networks are called as `network(x, t, label=None)` and return an array
shaped like x; what that output means (noise, data, v or velocity) is decided by the
loss it is trained with. `network_function` turns a module into a pure function with its
parameters bound as traced arguments, the form `samplax.Denoiser` expects.
"""

from __future__ import annotations

import math

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from samplax.checks import check_count, check_positive

__all__ = [
    "MLP",
    "NETWORKS",
    "Classifier",
    "UNet",
    "build",
    "network_function",
    "timestep_embedding",
]


def timestep_embedding(t, features: int, scale: float = 1.0, frequency_shift: float = 0.0, sine_first: bool = False):
    """Sinusoidal embedding of a (batch,) time (Vaswani et al. 2017; Ho et al. 2020):
    cos and sin (sin first if `sine_first`) of scale * t at the frequencies
    10000^(-i / (features / 2 - frequency_shift)), i = 0 .. features / 2 - 1 (diffusers'
    UNets choose the shift and the order in their configs)."""
    if features % 2:
        raise ValueError(f"features must be even, got {features}")
    half = features // 2
    frequencies = jnp.exp(-math.log(10_000.0) * jnp.arange(half) / (half - frequency_shift))
    angles = scale * jnp.asarray(t, jnp.float32).reshape(-1, 1) * frequencies
    pair = (jnp.sin(angles), jnp.cos(angles)) if sine_first else (jnp.cos(angles), jnp.sin(angles))
    return jnp.concatenate(pair, axis=-1)


class _Conditioning(nnx.Module):
    """Time embedding (sinusoid -> MLP) plus an optional class-label embedding whose last
    row, index `num_classes`, is the null label used for classifier-free guidance."""

    def __init__(self, features: int, time_scale: float, num_classes: int | None, *, rngs):
        if check_count("time_features", features) % 2:
            raise ValueError(f"time_features must be even (sines and cosines in pairs), got {features}")
        check_positive("time_scale", time_scale)
        if num_classes is not None:
            check_count("num_classes (or None for an unconditional network)", num_classes)
        self.features = features
        self.time_scale = time_scale
        self.num_classes = num_classes
        self.time_in = nnx.Linear(features, 4 * features, rngs=rngs)
        self.time_out = nnx.Linear(4 * features, 4 * features, rngs=rngs)
        self.label = (
            nnx.Embed(num_classes + 1, 4 * features, rngs=rngs) if num_classes is not None else None
        )

    def __call__(self, t, batch: int, label):
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (batch,))
        emb = self.time_out(nnx.silu(self.time_in(timestep_embedding(t, self.features, self.time_scale))))
        if self.label is None:
            if label is not None:
                raise ValueError("this network was built without labels (num_classes=None)")
            return emb
        if label is None:
            label = jnp.full((batch,), self.num_classes, jnp.int32)
        elif not isinstance(label, jax.core.Tracer):  # traced labels are checked by the Denoiser
            values = np.asarray(label)
            if not np.issubdtype(values.dtype, np.integer) or np.any(values < 0) or np.any(values > self.num_classes):
                raise ValueError(f"label must hold integer classes in 0..{self.num_classes - 1} (or "
                                 f"{self.num_classes}, the null label), got {values!r:.80}")
        return emb + self.label(jnp.broadcast_to(jnp.asarray(label, jnp.int32), (batch,)))


class _ResBlock(nnx.Module):
    """GroupNorm -> SiLU -> 3x3 conv, plus the conditioning embedding, twice, with a skip
    (He et al. 2016; the DDPM UNet block of Ho et al. 2020)."""

    def __init__(self, in_channels: int, out_channels: int, emb_features: int, groups: int, *, rngs):
        self.norm1 = nnx.GroupNorm(in_channels, num_groups=min(groups, in_channels), rngs=rngs)
        self.conv1 = nnx.Conv(in_channels, out_channels, (3, 3), rngs=rngs)
        self.emb = nnx.Linear(emb_features, out_channels, rngs=rngs)
        self.norm2 = nnx.GroupNorm(out_channels, num_groups=min(groups, out_channels), rngs=rngs)
        self.conv2 = nnx.Conv(
            out_channels, out_channels, (3, 3), kernel_init=nnx.initializers.zeros, rngs=rngs
        )
        self.skip = (
            nnx.Conv(in_channels, out_channels, (1, 1), rngs=rngs) if in_channels != out_channels else None
        )

    def __call__(self, x, emb):
        h = self.conv1(nnx.silu(self.norm1(x)))
        h = h + self.emb(nnx.silu(emb))[:, None, None, :]
        h = self.conv2(nnx.silu(self.norm2(h)))
        return h + (x if self.skip is None else self.skip(x))


class _Attention(nnx.Module):
    """Multi-head self-attention over the pixels of a feature map, with a residual.

    The values can be recorded and replaced (RF-Edit, Wang et al. 2024, shares the values
    of chosen attention blocks between an inversion and an editing pass): `values`, if
    given, is used instead of the block's own values, and the values actually used are
    returned alongside the output.
    """

    def __init__(self, channels: int, heads: int, groups: int, *, rngs):
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.norm = nnx.GroupNorm(channels, num_groups=min(groups, channels), rngs=rngs)
        self.qkv = nnx.Linear(channels, 3 * channels, rngs=rngs)
        self.out = nnx.Linear(channels, channels, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, x, values=None):
        batch, height, width, channels = x.shape
        q, k, v = jnp.split(self.qkv(self.norm(x).reshape(batch, height * width, channels)), 3, axis=-1)
        if values is not None:
            v = jnp.asarray(values, v.dtype).reshape(v.shape)

        def split(a):
            return a.reshape(batch, height * width, self.heads, channels // self.heads)

        h = jax.nn.dot_product_attention(split(q), split(k), split(v))
        h = self.out(h.reshape(batch, height * width, channels)).reshape(x.shape)
        return x + h, v


class UNet(nnx.Module):
    """A small UNet for channels-last images (batch, height, width, channels).

    Levels run from full resolution down; level i has `widths[i]` channels and
    `blocks_per_level` residual blocks, followed by self-attention when i is in
    `attention_levels`; the middle (lowest resolution) has residual, attention, residual.
    The up path mirrors the down path with skip connections. Time goes through a
    sinusoidal embedding of `time_scale * t` (use 1 for DDPM step indices in [0, 999],
    about 1000 for continuous t in [0, 1]); a class label, if `num_classes` is set, is
    embedded and added to it, and label `num_classes` is the null label for
    classifier-free guidance (Ho & Salimans 2022).

    Call: `unet(x, t, label=None, *, values=None, return_values=False)`.

    Attention values, for RF-Edit style feature sharing: every attention block has a name,
    "down{i}.{j}" (level i, block j), "middle" or "up{i}.{j}", listed by
    `attention_names()`. With `return_values=True` the call returns `(output, values)`,
    where `values` maps each block's name to the value tensor it used, shaped
    (batch, pixels, channels). Passing `values={name: tensor, ...}` makes the named blocks
    use those tensors in place of their own values (the other blocks are unchanged), so a
    run can record the values of an inversion pass and inject them into an editing pass.
    """

    def __init__(
        self,
        *,
        channels: int = 1,
        widths: tuple[int, ...] = (32, 64),
        blocks_per_level: int = 1,
        attention_levels: tuple[int, ...] = (),
        heads: int = 1,
        groups: int = 8,
        time_features: int = 32,
        time_scale: float = 1.0,
        num_classes: int | None = None,
        rngs: nnx.Rngs,
    ):
        widths, attention_levels = tuple(widths), tuple(attention_levels)
        check_count("channels", channels)
        check_count("heads", heads)
        check_count("groups", groups)
        for level, width in enumerate(widths):
            check_count("widths (channels per level)", width)
            if width % groups:
                raise ValueError(f"every entry of widths must be a multiple of groups ({groups}), got widths={widths}")
            if level in attention_levels and width % heads:
                raise ValueError(f"the widths of attention_levels must be multiples of heads ({heads}), got "
                                 f"widths={widths}")
        if not widths or blocks_per_level < 1:
            raise ValueError(
                f"need at least one level and one block, got widths={widths}, blocks_per_level={blocks_per_level}"
            )
        if any(level not in range(len(widths)) for level in attention_levels):
            raise ValueError(f"attention_levels must index widths {widths}, got {attention_levels}")
        self.levels = len(widths)
        self.blocks_per_level = blocks_per_level
        self.attention_levels = attention_levels
        emb = 4 * time_features
        self.conditioning = _Conditioning(time_features, time_scale, num_classes, rngs=rngs)
        self.stem = nnx.Conv(channels, widths[0], (3, 3), rngs=rngs)
        down, down_attention, downsample, skips = [], {}, [], [widths[0]]
        current = widths[0]
        for i, width in enumerate(widths):
            for j in range(blocks_per_level):
                down.append(_ResBlock(current, width, emb, groups, rngs=rngs))
                current = width
                if i in attention_levels:
                    down_attention[f"down{i}.{j}"] = _Attention(width, heads, groups, rngs=rngs)
                skips.append(current)
            if i < self.levels - 1:
                downsample.append(nnx.Conv(current, current, (3, 3), strides=(2, 2), rngs=rngs))
                skips.append(current)
        self.down = nnx.List(down)
        self.downsample = nnx.List(downsample)
        self.middle1 = _ResBlock(current, current, emb, groups, rngs=rngs)
        self.middle_attention = _Attention(current, heads, groups, rngs=rngs)
        self.middle2 = _ResBlock(current, current, emb, groups, rngs=rngs)
        up, up_attention, upsample = [], {}, []
        for i, width in reversed(list(enumerate(widths))):
            for j in range(blocks_per_level + 1):
                up.append(_ResBlock(current + skips.pop(), width, emb, groups, rngs=rngs))
                current = width
                if i in attention_levels:
                    up_attention[f"up{i}.{j}"] = _Attention(width, heads, groups, rngs=rngs)
            if i > 0:
                upsample.append(nnx.Conv(current, current, (3, 3), rngs=rngs))
        self.up = nnx.List(up)
        self.upsample = nnx.List(upsample)
        self.attention = nnx.Dict({**down_attention, **up_attention})
        self.head_norm = nnx.GroupNorm(current, num_groups=min(groups, current), rngs=rngs)
        self.head = nnx.Conv(current, channels, (3, 3), kernel_init=nnx.initializers.zeros, rngs=rngs)

    def attention_names(self) -> list[str]:
        """Names of the attention blocks, in the order the forward pass visits them."""
        down = [name for name in self.attention if name.startswith("down")]
        up = [name for name in self.attention if name.startswith("up")]
        return sorted(down) + ["middle"] + sorted(up, key=lambda n: (-int(n[2]), n))

    def __call__(self, x, t, label=None, *, values=None, return_values=False):
        if x.ndim != 4:
            raise ValueError(f"x must be (batch, height, width, channels), got shape {x.shape}")
        factor = 2 ** (self.levels - 1)
        if x.shape[1] % factor or x.shape[2] % factor:
            raise ValueError(f"height and width must be divisible by {factor}, got {x.shape[1:3]}")
        if x.shape[-1] != self.stem.in_features:
            raise ValueError(f"this UNet was built for {self.stem.in_features} channel(s) (channels=), got x of shape "
                             f"{x.shape}")
        values = {} if values is None else dict(values)
        unknown = set(values) - set(self.attention_names())
        if unknown:
            raise ValueError(f"unknown attention blocks {sorted(unknown)}; choose from {self.attention_names()}")
        used = {}

        def attend(block, name, h):
            h, used[name] = block(h, values.get(name))
            return h

        emb = self.conditioning(t, x.shape[0], label)
        h = self.stem(x)
        skips = [h]
        blocks = iter(self.down)
        for i in range(self.levels):
            for j in range(self.blocks_per_level):
                h = next(blocks)(h, emb)
                if i in self.attention_levels:
                    h = attend(self.attention[f"down{i}.{j}"], f"down{i}.{j}", h)
                skips.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
                skips.append(h)
        h = self.middle1(h, emb)
        h = attend(self.middle_attention, "middle", h)
        h = self.middle2(h, emb)
        blocks = iter(self.up)
        for k, i in enumerate(reversed(range(self.levels))):
            for j in range(self.blocks_per_level + 1):
                h = next(blocks)(jnp.concatenate([h, skips.pop()], axis=-1), emb)
                if i in self.attention_levels:
                    h = attend(self.attention[f"up{i}.{j}"], f"up{i}.{j}", h)
            if i > 0:
                batch, height, width, channels = h.shape
                h = jax.image.resize(h, (batch, 2 * height, 2 * width, channels), "nearest")
                h = self.upsample[k](h)
        out = self.head(nnx.silu(self.head_norm(h)))
        return (out, used) if return_values else out


class MLP(nnx.Module):
    """A residual MLP for vector data (batch, dimension), conditioned like the UNet."""

    def __init__(self, *, dimension: int = 2, width: int = 128, depth: int = 3, time_features: int = 32,
                 time_scale: float = 1000.0, num_classes: int | None = None, rngs: nnx.Rngs):
        for name, value in (("dimension", dimension), ("width", width), ("depth", depth)):
            check_count(name, value)
        self.conditioning = _Conditioning(time_features, time_scale, num_classes, rngs=rngs)
        self.inputs = nnx.Linear(dimension, width, rngs=rngs)
        self.emb = nnx.List([nnx.Linear(4 * time_features, width, rngs=rngs) for _ in range(depth)])
        self.hidden = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(depth)])
        self.norms = nnx.List([nnx.LayerNorm(width, rngs=rngs) for _ in range(depth)])
        self.outputs = nnx.Linear(width, dimension, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, x, t, label=None):
        if x.ndim != 2:
            raise ValueError(f"x must be (batch, dimension), got shape {x.shape}")
        if x.shape[1] != self.inputs.in_features:
            raise ValueError(f"this MLP was built for dimension={self.inputs.in_features}, got x of shape {x.shape}")
        emb = nnx.silu(self.conditioning(t, x.shape[0], label))
        h = self.inputs(x)
        for norm, hidden, project in zip(self.norms, self.hidden, self.emb, strict=True):
            h = h + hidden(nnx.silu(norm(h) + project(emb)))
        return self.outputs(h)


class Classifier(nnx.Module):
    """A small CNN for 8x8 digits: two 3x3 convolutions, a hidden dense layer whose
    activations are the features used for Frechet distances, and a linear head."""

    def __init__(self, *, channels: int = 1, width: int = 32, features: int = 128, num_classes: int = 10,
                 image_size: int = 8, rngs: nnx.Rngs):
        for name, value in (("channels", channels), ("width", width), ("features", features),
                            ("num_classes", num_classes), ("image_size", image_size)):
            check_count(f"Classifier {name}", value)
        if image_size % 2:
            raise ValueError(f"Classifier image_size must be even (its second convolution has stride 2), got "
                             f"{image_size}")
        self.image_shape = (image_size, image_size, channels)
        self.conv1 = nnx.Conv(channels, width, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(width, 2 * width, (3, 3), strides=(2, 2), rngs=rngs)
        self.dense = nnx.Linear(2 * width * (image_size // 2) ** 2, features, rngs=rngs)
        self.head = nnx.Linear(features, num_classes, rngs=rngs)

    def features(self, x):
        """Penultimate activations, (batch, features)."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"this Classifier was built for images of shape {self.image_shape} (batch first), got x "
                             f"of shape {x.shape}")
        h = nnx.silu(self.conv2(nnx.silu(self.conv1(x))))
        return nnx.silu(self.dense(h.reshape(h.shape[0], -1)))

    def __call__(self, x):
        return self.head(self.features(x))


NETWORKS = {"UNet": UNet, "MLP": MLP, "Classifier": Classifier}


def build(name: str, kwargs: dict, seed: int = 0) -> nnx.Module:
    """A network from its class name and keyword arguments (as stored in a checkpoint)."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {sorted(NETWORKS)}")
    return NETWORKS[name](**kwargs, rngs=nnx.Rngs(seed))


def _apply(graphdef, state, *args, **kwargs):
    return nnx.merge(graphdef, state)(*args, **kwargs)


def network_function(module: nnx.Module) -> jax.tree_util.Partial:
    """The module as a pure function `f(*args, **kwargs)`, with its state bound as a traced
    argument of a `jax.tree_util.Partial` (so jit sees parameters as inputs, not constants)."""
    graphdef, state = nnx.split(module)
    return jax.tree_util.Partial(_apply, graphdef, state)
