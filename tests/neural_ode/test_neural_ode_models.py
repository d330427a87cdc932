"""Tests of the baselines (STEER, RNODE, TayNODE), the NNX models and the training loop."""

import itertools

import diffrax
import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from samplax.neural_ode import (
    CNF,
    KineticJacobian,
    LatentODE,
    NoRegularization,
    ODEClassifier,
    Taylor,
    exponential_weight,
    integrate,
    steer_times,
    train,
)
from samplax.neural_ode.data import spirals

Y0 = np.array([[1.0, -2.0], [0.5, 3.0]])
DECAY = lambda t, y, a: -a * y  # noqa: E731


def test_steer_end_time_is_uniform_on_the_window():
    keys = jax.random.split(jax.random.key(0), 4000)
    t1 = jax.vmap(lambda k: steer_times(k, 0.0, jnp.array([1.0]), 0.5))(keys)[:, 0]
    assert 0.5 <= float(t1.min()) and float(t1.max()) <= 1.5
    np.testing.assert_allclose(t1.mean(), 1.0, atol=0.02)
    np.testing.assert_allclose(t1.var(), 1.0 / 12.0, rtol=0.1)  # U(0.5, 1.5)
    ts = steer_times(jax.random.key(1), 0.0, jnp.array([0.0, 0.1, 2.0, 2.05]), 0.49)
    assert bool(jnp.all(jnp.diff(ts) >= 0)) and float(ts[0]) == 0.0
    with pytest.raises(ValueError, match="b must"):
        steer_times(jax.random.key(0), 0.0, jnp.array([1.0]), 1.5)


def test_rnode_and_taynode_integrals_match_analytic_values():
    # y' = -y: |f|^2 = |y0|^2 e^{-2t}; eps^T J = -eps; y'' = y. Means over the batch.
    tol = dict(rtol=1e-9, atol=1e-9)
    decay_integral = float(jnp.mean(jnp.sum(Y0**2, -1))) * (1 - np.exp(-2.0)) / 2
    key = jax.random.key(2)
    eps = jax.random.normal(key, Y0.shape, Y0.dtype)
    out = integrate(KineticJacobian(), DECAY, 1.0, Y0, 0.0, jnp.array([1.0]), key=key, **tol)
    np.testing.assert_allclose(out.penalty, decay_integral + jnp.mean(jnp.sum(eps**2, -1)),
                               rtol=1e-7)
    np.testing.assert_allclose(out.ys[-1], Y0 * np.exp(-1.0), rtol=1e-7)
    out = integrate(Taylor(), DECAY, 1.0, Y0, 0.0, jnp.array([1.0]), **tol)
    np.testing.assert_allclose(out.penalty, decay_integral, rtol=1e-7)


def test_exponential_weight():
    np.testing.assert_allclose(exponential_weight(0, 10, 100.0, 10.0), 100.0)
    np.testing.assert_allclose(exponential_weight(5, 10, 100.0, 10.0), np.sqrt(1000.0))
    np.testing.assert_allclose(exponential_weight(10, 10, 100.0, 10.0), 10.0)
    assert float(exponential_weight(3, 10, 0.0, 0.0)) == 0.0
    with pytest.raises(ValueError, match="start and end"):
        exponential_weight(0, 10, 1.0, 0.0)
    with pytest.raises(ValueError, match="total_steps"):
        exponential_weight(0, 0, 1.0, 1.0)
    # with a delay: zero before it, then the full decay over the remaining steps
    assert float(exponential_weight(3, 10, 100.0, 10.0, delay=4)) == 0.0
    np.testing.assert_allclose(exponential_weight(4, 10, 100.0, 10.0, delay=4), 100.0)
    np.testing.assert_allclose(exponential_weight(7, 10, 100.0, 10.0, delay=4), np.sqrt(1000.0))
    np.testing.assert_allclose(exponential_weight(10, 10, 100.0, 10.0, delay=4), 10.0)
    with pytest.raises(ValueError, match="delay"):
        exponential_weight(0, 10, 1.0, 1.0, delay=10)


def test_spirals_test_set_can_share_the_training_time_grid():
    times, x, clean, mask = spirals(5, seed=0)
    times2, x2, clean2, _ = spirals(7, seed=1, times=times)
    np.testing.assert_array_equal(times2, times)
    assert x2.shape == (7, 40, 2) and not np.allclose(clean2[:5], clean)
    # the radius decays as exp(-0.15 t) on the given grid
    radius = np.linalg.norm(clean2, axis=-1)
    np.testing.assert_allclose(radius / radius[:, :1], np.exp(-0.15 * times)[None].repeat(7, 0))
    assert mask[:, 0].all()
    with pytest.raises(ValueError, match="times"):
        spirals(3, seed=0, times=times[::-1])


def test_train_recovers_a_decay_rate():
    target = Y0 * np.exp(-0.5)

    def loss_fn(theta, batch, key):
        out = integrate(NoRegularization(), DECAY, theta, batch, 0.0, jnp.array([1.0]),
                        rtol=1e-10, atol=1e-10)
        return jnp.mean((out.ys[-1] - target) ** 2), (out.penalty, out.nfe)

    # Gradient descent contracts the error by about |1 - 0.3 * 2.6| ~ 0.2 per step.
    theta, hist = train(loss_fn, jnp.array(1.0), optax.sgd(0.3), itertools.repeat(Y0),
                        key=jax.random.key(0), total_steps=20)
    np.testing.assert_allclose(theta, 0.5, atol=1e-6)
    assert len(hist.step_times) == 19 and hist.loss[-1] < 1e-12
    # one compilation: every later step runs the cached executable (well under a second)
    assert max(hist.step_times) < 0.5 * hist.compile_time


def test_classifier_parameters_pass_through_args_for_backsolve():
    # NNX parameters reach the vector field through `args`, so BacksolveAdjoint can
    # differentiate them: its gradient matches a directional finite difference.
    model = ODEClassifier(3, 4, 2, rngs=nnx.Rngs(0), dtype=jnp.float64)
    graphdef, params = nnx.split(model)
    x = jnp.array([[0.1, 0.2, -0.3], [1.0, -1.0, 0.5]])

    def loss(p, adjoint=None):
        logits, _, _ = nnx.merge(graphdef, p)(x, adjoint=adjoint, rtol=1e-10, atol=1e-10)
        return jnp.sum(jnp.sin(logits))

    grad = jax.jit(jax.grad(lambda p: loss(p, diffrax.BacksolveAdjoint())))(params)
    direction = jax.tree.map(lambda a: jnp.cos(jnp.arange(a.size).reshape(a.shape)), params)
    h = 1e-5
    shift = lambda s: jax.tree.map(lambda a, d: a + s * d, params, direction)  # noqa: E731
    value = jax.jit(loss)
    fd = (value(shift(h)) - value(shift(-h))) / (2 * h)
    ad = sum(jnp.sum(g * d) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction), strict=True))
    np.testing.assert_allclose(ad, fd, rtol=1e-6)
    assert abs(float(fd)) > 1e-3


def test_cnf_with_zero_field_is_the_base_density():
    model = CNF(2, 8, rngs=nnx.Rngs(0), dtype=jnp.float64)
    graphdef, params = nnx.split(model)
    zero = nnx.merge(graphdef, jax.tree.map(jnp.zeros_like, params))
    x = jnp.array([[0.3, -1.2], [2.0, 0.1]])
    logp, _, _ = zero.log_prob(x, key=jax.random.key(0))
    np.testing.assert_allclose(logp, -0.5 * jnp.sum(x**2, -1) - jnp.log(2 * jnp.pi),
                               rtol=1e-12)


def test_cnf_hutchinson_estimate_is_unbiased():
    model = CNF(2, 8, rngs=nnx.Rngs(1), dtype=jnp.float64)
    graphdef, params = nnx.split(model)
    x = jnp.array([[0.3, -1.2]])
    vf = lambda t, z: nnx.merge(graphdef, params).field(t, z)  # noqa: E731

    def exact(t, state, args):
        z, _ = state
        jac = jax.jacfwd(lambda u: vf(t, u[None])[0])(z[0])
        return vf(t, z), jnp.trace(jac)[None]

    ref = diffrax.diffeqsolve(
        diffrax.ODETerm(exact), diffrax.Tsit5(), 0.0, 1.0, None, (x, jnp.zeros(1)),
        stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-8),
    )
    z, trace = ref.ys[0][-1], ref.ys[1][-1]
    exact_logp = -0.5 * jnp.sum(z**2, -1) - jnp.log(2 * jnp.pi) + trace
    estimate = jax.jit(jax.vmap(
        lambda k: nnx.merge(graphdef, params).log_prob(x, key=k, rtol=1e-8, atol=1e-8)[0]
    ))(jax.random.split(jax.random.key(0), 512))
    stderr = float(estimate.std()) / np.sqrt(512)
    assert stderr > 0
    np.testing.assert_allclose(estimate.mean(), exact_logp[0], atol=4 * stderr)


def test_latent_ode_encoder_ignores_unobserved_values():
    model = LatentODE(2, 3, 8, rngs=nnx.Rngs(0), dtype=jnp.float64)
    times = jnp.array([0.0, 0.4, 1.1, 2.0])
    x = jax.random.normal(jax.random.key(0), (2, 4, 2))
    mask = jnp.array([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 1.0]])
    encode = jax.jit(lambda xs: model.encode(times, xs, mask))  # compiled once, run thrice
    mean, logvar = encode(x)
    x_changed = jnp.where(mask[..., None] == 0, 100.0, x)
    mean2, logvar2 = encode(x_changed)
    np.testing.assert_array_equal(mean, mean2)
    np.testing.assert_array_equal(logvar, logvar2)
    mean3, _ = encode(x.at[0, 0, 0].add(1.0))
    assert float(jnp.abs(mean3 - mean).max()) > 1e-6
    pred, kl, _, nfe = model(times, x, mask, key=jax.random.key(1))
    assert pred.shape == x.shape and float(kl) >= 0 and int(nfe) >= 7
