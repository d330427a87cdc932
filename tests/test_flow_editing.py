"""RF-Edit style editing: value sharing between inversion and regeneration."""

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax as sx
from samplax.models import networks
from samplax.samplers.editing import edit

SCHEDULE = sx.schedules.RectifiedFlow()


def _values_only_network(x, t, label, values=None, return_values=False):
    """A network whose output depends on its inputs only through one 'attention value'."""
    used = {"block": jnp.sin(x * label[:, None] + t[:, None])}
    if values is not None:
        used = {**used, **values}
    out = jnp.cos(used["block"]) - 0.5 * used["block"]
    return (out, used) if return_values else out


def test_full_injection_with_euler_reconstructs_the_image():
    """With every step shared, each Euler regeneration step reuses the velocity of the
    inversion step over the same interval, so it undoes it whatever the target is."""
    model = sx.Denoiser(_values_only_network, SCHEDULE, prediction="velocity")
    image = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
    source, target = {"label": jnp.full((4,), 1.0)}, {"label": jnp.full((4,), 2.5)}
    kept, info = edit(model, "euler", image, source, target, steps=6, inject=6)
    np.testing.assert_allclose(kept, image, atol=1e-5)
    assert int(info.nfe) == 12
    changed, _ = edit(model, "euler", image, source, target, steps=6, inject=0)
    assert float(jnp.max(jnp.abs(changed - image))) > 0.1
    with pytest.raises(ValueError, match="unknown attention blocks"):
        edit(model, "euler", image, source, target, steps=6, inject=6, blocks=("nowhere",))


def test_no_injection_is_invert_then_sample():
    model = sx.Denoiser(_values_only_network, SCHEDULE, prediction="velocity", condition={"label": jnp.ones(4)})
    image = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
    edited, _ = edit(model, "rf-solver-2", image, {"label": jnp.ones(4)}, {"label": jnp.ones(4)}, steps=5, inject=0)
    noise, _ = sx.invert(model, "rf-solver-2", image, steps=5, grid="uniform")
    back, _ = sx.sample(model, "rf-solver-2", noise, steps=5, grid="uniform")
    np.testing.assert_allclose(edited, back, atol=1e-5)


def test_edit_with_a_unet():
    unet = networks.UNet(widths=(8,), groups=4, time_features=8, num_classes=10, rngs=nnx.Rngs(0))
    model = sx.Denoiser(networks.network_function(unet), SCHEDULE, prediction="velocity")
    image = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 8, 1))
    source, target = {"label": jnp.array([3, 3])}, {"label": jnp.array([8, 8])}
    edited, _ = edit(model, "euler", image, source, target, steps=1, inject=1, blocks=("middle",))
    assert edited.shape == image.shape and bool(jnp.all(jnp.isfinite(edited)))
    with pytest.raises(ValueError, match="inject"):
        edit(model, "rf-solver-2", image, source, target, steps=3, inject=4)
    with pytest.raises(ValueError, match="fixed number of evaluations"):
        edit(model, "fireflow", image, source, target, steps=3, inject=1)


def test_edit_refuses_an_increasing_grid():
    """The grid is given from noise to data, as for sample(); edit reverses it itself for
    the inversion, so an increasing grid is a mistake, not a request to edit backwards."""
    model = sx.Denoiser(_values_only_network, SCHEDULE, prediction="velocity")
    image = jax.random.normal(jax.random.PRNGKey(3), (2, 3))
    source, target = {"label": jnp.ones(2)}, {"label": jnp.full((2,), 2.0)}
    with pytest.raises(ValueError, match="decreasing"):
        edit(model, "euler", image, source, target, 4, 1, grid=jnp.linspace(0.0, 1.0, 5))
