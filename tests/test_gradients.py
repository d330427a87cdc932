"""Gradient methods of sample(): the same forward result, exact gradients for the
checkpointed and reversible methods, a converging exponential adjoint, finite differences
on the exact mixture and on a small UNet, and clear refusals."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_models import random_network

import samplax as sx
from samplax.models import pretrained

MIXTURE = sx.GaussianMixture.random(1, 3, 3, std_range=(0.4, 0.8))


def _mixture_model(schedule, means, shift, prediction="data"):
    """The exact mixture denoiser with its means as parameters and an additive `shift` of
    its output as a condition array."""

    def network(means, x, t, shift):
        mixture = sx.GaussianMixture(means, MIXTURE.stds, MIXTURE.weights)
        data, noise = mixture.posterior_means(x, schedule.alpha(t), schedule.sigma(t))
        return (noise - data if prediction == "velocity" else data) + shift

    return sx.Denoiser(jax.tree_util.Partial(network, means), schedule, prediction, condition={"shift": shift})


def _inputs():
    noise = jax.random.normal(jax.random.key(0), (4, 3))
    return noise, jnp.asarray(MIXTURE.means), jnp.full((4, 3), 0.01)


def _loss(schedule, solver, adjoint, prediction="data", **options):
    def loss(noise, means, shift):
        samples, _ = sx.sample(_mixture_model(schedule, means, shift, prediction), solver, noise, adjoint=adjoint,
                               **options)
        return jnp.sum(jnp.sin(samples) * jnp.arange(3))

    return loss


def _relative_errors(gradients, reference):
    return [float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b)) for a, b in zip(gradients, reference, strict=True)]


def test_every_method_gives_the_same_forward_result():
    noise, means, shift = _inputs()
    model = _mixture_model(sx.schedules.VPLinear(), means, shift)
    reference, _ = sx.sample(model, "dpm++2m", noise, steps=12, denoise_to_zero=True)
    for adjoint in (sx.Checkpointed(), sx.ExponentialAdjoint(1), sx.ExponentialAdjoint(2)):
        result, info = sx.sample(model, "dpm++2m", noise, steps=12, denoise_to_zero=True, adjoint=adjoint)
        np.testing.assert_allclose(result, reference, rtol=1e-6, atol=1e-6)
        assert int(info.nfe) == 13
    flow = _mixture_model(sx.schedules.RectifiedFlow(), means, shift, "velocity")
    reference, _ = sx.sample(flow, "reversible-heun", noise, steps=8)
    for adjoint in (sx.Checkpointed(), sx.ReversibleAdjoint()):
        np.testing.assert_array_equal(sx.sample(flow, "reversible-heun", noise, steps=8, adjoint=adjoint)[0], reference)


def test_checkpointed_and_reversible_gradients_equal_backpropagation(x64):
    arguments = _inputs()
    vp = sx.schedules.VPLinear()
    reference = jax.grad(_loss(vp, "dpm++2m", sx.Backpropagation(), steps=10), argnums=(0, 1, 2))(*arguments)
    gradients = jax.jit(jax.grad(_loss(vp, "dpm++2m", sx.Checkpointed(), steps=10), argnums=(0, 1, 2)))(*arguments)
    assert max(_relative_errors(gradients, reference)) < 1e-6

    def stochastic(adjoint):  # the recomputed stage draws the same noise
        return _loss(vp, "ddpm", adjoint, steps=10, key=jax.random.key(3))

    reference = jax.grad(stochastic(sx.Backpropagation()), argnums=(0, 1, 2))(*arguments)
    gradients = jax.grad(stochastic(sx.Checkpointed()), argnums=(0, 1, 2))(*arguments)
    assert max(_relative_errors(gradients, reference)) < 1e-6

    flow = sx.schedules.RectifiedFlow()

    def reversible(adjoint):  # with respect to the grid too
        def loss(noise, means, shift, grid):
            samples, _ = sx.sample(_mixture_model(flow, means, shift, "velocity"), "reversible-heun", noise,
                                   grid=grid, adjoint=adjoint)
            return jnp.sum(jnp.sin(samples) * jnp.arange(3))

        return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))

    grid = jnp.linspace(1.0, 0.0, 13) ** 1.5
    reference = reversible(sx.Backpropagation())(*arguments, grid)
    for adjoint in (sx.Checkpointed(), sx.ReversibleAdjoint()):
        assert max(_relative_errors(reversible(adjoint)(*arguments, grid), reference)) < 1e-5


def test_exponential_adjoint_converges_to_the_backpropagated_gradient(x64):
    """Both converge to the gradient of the exact flow map; at 200 steps they agree to 1e-3."""
    arguments = _inputs()
    schedule = sx.schedules.VPLinear()
    reference = jax.grad(_loss(schedule, "dpm++2m", sx.Backpropagation(), steps=200), argnums=(0, 1, 2))(*arguments)
    for order, at_200 in ((1, 3e-2), (2, 1e-3)):
        errors = []
        for steps in (20, 50, 200):
            loss = _loss(schedule, "dpm++2m", sx.ExponentialAdjoint(order), steps=steps)
            errors.append(max(_relative_errors(jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*arguments), reference)))
        assert errors[0] > errors[1] > errors[2], (order, errors)
        assert errors[2] < at_200, (order, errors)


def test_gradients_match_finite_differences_on_the_mixture(x64):
    """Backpropagation is the exact derivative of the discrete solve; the adjoint that of the
    flow map, here against a fine solve."""
    arguments = _inputs()
    schedule = sx.schedules.EDM()
    directions = [jax.random.normal(jax.random.key(i), value.shape) for i, value in enumerate(arguments)]

    def directional(loss, gradients, epsilon=1e-5):
        for index, (gradient, direction) in enumerate(zip(gradients, directions, strict=True)):
            moved = [list(arguments), list(arguments)]
            moved[0][index] = arguments[index] + epsilon * direction
            moved[1][index] = arguments[index] - epsilon * direction
            finite = (loss(*moved[0]) - loss(*moved[1])) / (2 * epsilon)
            np.testing.assert_allclose(jnp.vdot(gradient, direction), finite, rtol=2e-4, err_msg=str(index))

    coarse = jax.jit(_loss(schedule, "dpm++2m", sx.Backpropagation(), steps=8))
    directional(coarse, jax.grad(coarse, argnums=(0, 1, 2))(*arguments))
    fine = jax.jit(_loss(schedule, "dpm++3m", sx.Backpropagation(), steps=400))
    adjoint = _loss(schedule, "dpm++2m", sx.ExponentialAdjoint(2), steps=300)
    directional(fine, jax.grad(adjoint, argnums=(0, 1, 2))(*arguments))


def test_gradients_through_a_unet_match_finite_differences(x64):
    """On a small UNet (an NNX module split into graph and state), with respect to the
    noise and all parameters, for the exact methods. The directions, the shifted weights
    and the projections are NumPy arithmetic: eager JAX would compile one small program
    per weight shape (some 20 s for the 111 leaves)."""
    module = random_network(4)
    model = pretrained.as_denoiser(module, sx.schedules.VPDiscrete.ddpm_linear(), "noise", "discrete",
                                   condition={"label": jnp.arange(2)})
    model = dataclasses.replace(model, network=jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), model.network))
    noise = np.asarray(jax.random.normal(jax.random.key(1), (2, 8, 8, 1)))
    generator = np.random.default_rng(7)
    network_direction = jax.tree.map(lambda leaf: generator.standard_normal(leaf.shape), model.network)
    noise_direction = np.random.default_rng(2).standard_normal(noise.shape)

    def loss_of(adjoint, steps):
        def loss(noise, network):
            samples, _ = sx.sample(dataclasses.replace(model, network=network), "dpm++2m", noise, steps=steps,
                                   adjoint=adjoint)
            return jnp.mean(jnp.tanh(samples) * samples)

        return jax.jit(loss)

    def finite_differences(loss, epsilon=1e-5):
        along_noise = (loss(noise + epsilon * noise_direction, model.network)
                       - loss(noise - epsilon * noise_direction, model.network)) / (2 * epsilon)
        shifted = [jax.tree.map(lambda w, d, s=s: w + s * epsilon * d, model.network, network_direction)
                   for s in (1.0, -1.0)]
        along_network = (loss(noise, shifted[0]) - loss(noise, shifted[1])) / (2 * epsilon)
        return np.array([along_noise, along_network])

    def projected(gradients):
        noise_gradient, network_gradient = jax.tree.map(np.asarray, gradients)
        along_network = sum(np.vdot(g, d) for g, d in zip(jax.tree.leaves(network_gradient),
                                                           jax.tree.leaves(network_direction), strict=True))
        return np.array([np.vdot(noise_gradient, noise_direction), along_network])

    exact = finite_differences(loss_of(sx.Backpropagation(), 6))
    assert np.all(np.abs(exact) > 0.1), exact  # both directional derivatives are far from 0
    for adjoint in (sx.Backpropagation(), sx.Checkpointed()):
        loss = loss_of(adjoint, 6)
        np.testing.assert_allclose(projected(jax.grad(loss, argnums=(0, 1))(noise, model.network)), exact, rtol=1e-5)


def test_gradient_methods_refuse_what_they_do_not_apply_to():
    noise, means, shift = _inputs()
    model = _mixture_model(sx.schedules.VPLinear(), means, shift)
    flow = _mixture_model(sx.schedules.RectifiedFlow(), means, shift, "velocity")
    cases = [
        (model, "ddpm", {"key": jax.random.key(0), "adjoint": sx.ExponentialAdjoint()}, "stochastic"),
        (model, "dpm++2m", {"return_trajectory": True, "adjoint": sx.ExponentialAdjoint()}, "trajectory"),
        (model, "dpm++2m", {"adjoint": sx.ReversibleAdjoint()}, "reversible solvers"),
        (flow, "reversible-heun", {"adjoint": sx.ExponentialAdjoint()}, "ReversibleAdjoint"),
        (flow, "euler", {"adjoint": sx.ExponentialAdjoint()}, "t_end=1e-3"),
        (model, "dpm++2m", {"share_compilation": True, "adjoint": sx.Checkpointed()}, "share_compilation"),
        (model, "dpm-solver-adaptive", {"adjoint": sx.Checkpointed()}, "fixed-grid"),
    ]
    for denoiser, solver, options, message in cases:
        with pytest.raises(ValueError, match=message):
            sx.sample(denoiser, solver, noise, steps=5, **options)
    with pytest.raises(TypeError, match="gradient method"):
        sx.sample(model, "dpm++2m", noise, steps=5, adjoint="adjoint")
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        sx.ExponentialAdjoint(3)

    discrete = sx.schedules.VPDiscrete.ddpm_linear()
    fixed = _mixture_model(discrete, means, shift)

    def through_the_schedule(schedule):
        samples, _ = sx.sample(dataclasses.replace(fixed, schedule=schedule), "dpm++2m", noise, steps=5,
                               adjoint=sx.ExponentialAdjoint())
        return jnp.sum(samples)

    with pytest.raises(ValueError, match="not the schedule or the time grid"):
        jax.grad(through_the_schedule)(discrete)


def test_noise_optimization_and_fine_tuning_improve_their_objectives():
    noise, means, shift = _inputs()
    model = _mixture_model(sx.schedules.VPLinear(), means, shift)
    goal = jnp.asarray(MIXTURE.means[0])

    def reward(samples):
        return -jnp.sum((samples - goal) ** 2, axis=1)

    optimized, info = sx.optimize_noise(model, "dpm++2m", noise, reward, iterations=30, learning_rate=0.1,
                                        steps=8, adjoint=sx.ExponentialAdjoint())
    assert info.rewards.shape == (31,) and float(info.rewards[-1]) > float(info.rewards[0]) + 0.5
    assert float(jnp.mean(sx.typicality_penalty(optimized))) < 1.0
    np.testing.assert_allclose(info.samples, sx.sample(model, "dpm++2m", optimized, steps=8)[0], rtol=1e-5, atol=1e-5)
    assert float(sx.typicality_penalty(jnp.full((1, 101), (100 / 101) ** 0.5))[0]) == pytest.approx(0.0, abs=1e-4)

    def loss(samples):
        return jnp.mean((samples - goal) ** 2)

    tuned, tuning = sx.fine_tune(model, "dpm++2m", loss, trainable=lambda path: True, shape=(3,),
                                 key=jax.random.key(0), batch=4, iterations=30, learning_rate=0.05, steps=8,
                                 adjoint=sx.Checkpointed())
    assert tuning.losses.shape == (30,) and float(tuning.losses[-5:].mean()) < 0.5 * float(tuning.losses[:5].mean())
    np.testing.assert_array_equal(tuned.condition["shift"], shift)  # only the chosen leaves change
    with pytest.raises(ValueError, match="selects no floating-point leaf"):
        sx.fine_tune(model, "dpm++2m", loss, trainable=lambda path: False, shape=(3,), key=jax.random.key(0), steps=8)
    with pytest.raises(ValueError, match="one value per sample"):
        sx.optimize_noise(model, "dpm++2m", noise, lambda samples: jnp.sum(samples), iterations=1, steps=8)
    with pytest.raises(ValueError, match="iterations"):
        sx.optimize_noise(model, "dpm++2m", noise, reward, iterations=0, steps=8)
