"""Networks: shapes, label conditioning with a null label, the attention-value hook used
for RF-Edit style editing, and the bridge to a samplax Denoiser."""

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax
from samplax.models import networks, pretrained
from samplax.schedules import RectifiedFlow


@pytest.fixture(scope="module")
def unet():
    """A small UNet with random weights (every weight random, so no zero-initialised layer
    hides part of the network). Built abstractly and filled from one normal draw, cut into
    the weights' shapes: initialising eagerly compiles every initialiser separately, and one
    draw per weight in a jitted function takes some 40 s to compile on CPU."""
    kwargs = dict(widths=(8, 16), blocks_per_level=1, attention_levels=(1,), groups=4, time_features=8,
                  time_scale=1000.0, num_classes=10)
    model = nnx.eval_shape(lambda: networks.UNet(**kwargs, rngs=nnx.Rngs(0)))
    leaves, treedef = jax.tree.flatten(nnx.state(model, nnx.Param))
    sizes = [leaf.size for leaf in leaves]
    flat = 0.3 * np.asarray(jax.random.normal(jax.random.PRNGKey(1), (sum(sizes),)))
    pieces = np.split(flat, np.cumsum(sizes)[:-1])
    weights = [jnp.asarray(piece.reshape(leaf.shape), leaf.dtype) for piece, leaf in zip(pieces, leaves, strict=True)]
    nnx.update(model, jax.tree.unflatten(treedef, weights))
    return model


@jax.jit
def _call(network, x, t, label=None, values=None):
    """The network, jitted (eager NNX calls compile every operation separately)."""
    return network(x, t, label=label, values=values, return_values=True)


def call(module, x, t, label=None, values=None):
    return _call(networks.network_function(module), x, t, label, values)


def test_shapes_and_labels(unet):
    # Batch 2, as in the other tests, so that the jitted calls are compiled once for all.
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))
    t = jnp.full((2,), 0.5)
    out, _ = call(unet, x, t, label=jnp.arange(2))
    assert out.shape == x.shape
    null, _ = call(unet, x, t, label=jnp.full((2,), 10))
    np.testing.assert_allclose(np.asarray(call(unet, x, t)[0]), np.asarray(null), atol=1e-6)  # no label = null label
    assert float(jnp.abs(out - null).max()) > 1e-3
    with pytest.raises(ValueError, match="divisible"):
        unet(jnp.zeros((1, 7, 7, 1)), 0.5)
    mlp = networks.build("MLP", {"dimension": 3, "width": 16, "depth": 2})
    assert mlp(jnp.ones((5, 3)), jnp.full((5,), 0.1)).shape == (5, 3)
    with pytest.raises(ValueError, match="num_classes"):
        mlp(jnp.ones((5, 3)), 0.1, label=jnp.zeros(5, jnp.int32))


def test_attention_values_can_be_recorded_and_injected(unet):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))
    other = jax.random.normal(jax.random.PRNGKey(5), (2, 8, 8, 1))
    t = jnp.full((2,), 0.3)
    names = unet.attention_names()
    assert names == ["down1.0", "middle", "up1.0", "up1.1"]
    out, values = call(unet, x, t)
    assert set(values) == set(names) and values["middle"].shape == (2, 16, 16)
    # Injecting a run's own values reproduces it exactly.
    again, _ = call(unet, x, t, values=values)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(again))
    # Injecting another input's values changes the output, only through the named blocks.
    _, other_values = call(unet, other, t)
    mixed, used = call(unet, x, t, values={"middle": other_values["middle"]})
    np.testing.assert_array_equal(np.asarray(used["middle"]), np.asarray(other_values["middle"]))
    assert float(jnp.abs(mixed - out).max()) > 1e-4
    with pytest.raises(ValueError, match="unknown attention blocks"):
        unet(x, t, values={"nope": values["middle"]})


def test_as_denoiser_keeps_parameters_traced(unet):
    denoiser = pretrained.as_denoiser(unet, RectifiedFlow(), "velocity", condition={"label": jnp.arange(2)})
    # The weights are leaves of the Denoiser pytree, hence traced arguments under jit.
    assert len(jax.tree.leaves(denoiser.network)) == len(jax.tree.leaves(nnx.state(unet)))
    noise = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))
    x, info = samplax.sample(denoiser, "euler", noise, steps=3, grid="uniform")
    assert x.shape == noise.shape and int(info.nfe) == 3
    # The same result as calling the module directly in an Euler loop.
    y = noise
    for t, s in zip([1.0, 2 / 3, 1 / 3], [2 / 3, 1 / 3, 0.0], strict=True):
        y = y + (s - t) * call(unet, y, jnp.full((2,), t), label=jnp.arange(2))[0]
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-4)
