"""Flax NNX models built on `integrate`.

A time-dependent MLP vector field, a neural-ODE classifier, a latent ODE for irregularly
sampled series and a 2-D continuous normalizing flow. Each model's forward function
returns (prediction, penalty, nfe); the vector field's parameters travel through
diffrax's `args`, so every adjoint can differentiate them.
"""

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from samplax.neural_ode.methods import NoRegularization, integrate

_UNREGULARIZED = NoRegularization()  # the default method of the forward functions


class MLPField(nnx.Module):
    """dy/dt = MLP([y, t]) with tanh hidden layers; time is appended at every layer.

    Args:
        dim: the state dimension.
        hidden: the width of the hidden layers.
        depth: the number of hidden layers.
        rngs: the NNX random streams of the initialisation.
        dtype: the parameter dtype.
    """

    def __init__(self, dim: int, hidden: int, *, depth: int = 2, rngs: nnx.Rngs,
                 dtype=jnp.float32):
        if dim < 1 or hidden < 1 or depth < 1:
            raise ValueError(
                f"dim, hidden and depth must be positive, got {dim}, {hidden}, {depth}."
            )
        sizes = [dim] + [hidden] * depth + [dim]
        self.layers = nnx.List(
            [
                nnx.Linear(a + 1, b, rngs=rngs, param_dtype=dtype)
                for a, b in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )

    def __call__(self, t, y):
        """The velocity at time `t` (a scalar) of states `y` of shape (..., dim)."""
        for i, layer in enumerate(self.layers):
            time = jnp.broadcast_to(jnp.asarray(t, y.dtype), y.shape[:-1] + (1,))
            y = layer(jnp.concatenate([y, time], axis=-1))
            if i < len(self.layers) - 1:
                y = jnp.tanh(y)
        return y


def field_fn(module: nnx.Module):
    """Splits a module called as module(t, y) into a vector field and its parameters.

    The parameters can then travel as diffrax's `args`, so every adjoint sees them.

    Args:
        module: an NNX module called as module(t, y).

    Returns:
        (vector_field(t, y, params), params).
    """
    graphdef, params = nnx.split(module)
    return (lambda t, y, p: nnx.merge(graphdef, p)(t, y)), params


class ODEClassifier(nnx.Module):
    """Neural ODE on the input (Pal et al.'s MNIST model) followed by a linear head.

    Args:
        dim: the input dimension.
        hidden: the width of the vector field's hidden layer.
        classes: the number of classes.
        rngs: the NNX random streams of the initialisation.
        dtype: the parameter dtype.
    """

    def __init__(self, dim: int, hidden: int, classes: int, *, rngs: nnx.Rngs,
                 dtype=jnp.float32):
        self.field = MLPField(dim, hidden, depth=1, rngs=rngs, dtype=dtype)
        self.head = nnx.Linear(dim, classes, rngs=rngs, param_dtype=dtype)

    def __call__(self, x, method=_UNREGULARIZED, *, key=None, **solve_kwargs):
        """Logits of the inputs after the flow from t = 0 to t = 1.

        Args:
            x: inputs of shape (batch, dim).
            method: the regularization method.
            key: a PRNG key, for methods that need one.
            **solve_kwargs: passed on to `integrate` (rtol, atol, adjoint, max_steps).

        Returns:
            (logits (batch, classes), penalty, nfe).
        """
        vf, params = field_fn(self.field)
        out = integrate(method, vf, params, x, 0.0, jnp.ones(1, x.dtype), key=key,
                        **solve_kwargs)
        return self.head(out.ys[-1]), out.penalty, out.nfe


class LatentODE(nnx.Module):
    """Latent ODE (Rubanova et al., NeurIPS 2019) for irregularly sampled series.

    A GRU encoder runs backwards over the masked observations, with input
    (x * mask, mask, time gap), and gives the posterior of z(t0); the latent state flows
    under an MLP vector field and a linear decoder maps it back.

    Args:
        obs_dim: the observation dimension.
        latent: the latent dimension.
        hidden: the width of the GRU and of the vector field.
        rngs: the NNX random streams of the initialisation.
        dtype: the parameter dtype.
    """

    def __init__(self, obs_dim: int, latent: int, hidden: int, *, rngs: nnx.Rngs,
                 dtype=jnp.float32):
        self.latent = latent
        self.gru = nnx.GRUCell(obs_dim + 2, hidden, rngs=rngs, param_dtype=dtype)
        self.to_latent = nnx.Linear(hidden, 2 * latent, rngs=rngs, param_dtype=dtype)
        self.field = MLPField(latent, hidden, depth=2, rngs=rngs, dtype=dtype)
        self.decoder = nnx.Linear(latent, obs_dim, rngs=rngs, param_dtype=dtype)

    def encode(self, times, x, mask):
        """Posterior mean and log-variance of z(t0), each (B, latent), from x and mask.

        Args:
            times: the observation times, shape (T,).
            x: observations of shape (B, T, D).
            mask: 1 where observed, 0 elsewhere, shape (B, T).
        """
        gaps = jnp.diff(times, append=times[-1])

        def cell(h, inputs):
            x_i, m, gap = inputs
            m = m[:, None]
            features = jnp.concatenate([x_i * m, m, jnp.broadcast_to(gap, m.shape)], -1)
            h_new, _ = self.gru(h, features)
            return m * h_new + (1 - m) * h, None

        h = jnp.zeros((x.shape[0], self.gru.hidden_features), x.dtype)
        seq = (jnp.swapaxes(x, 0, 1), jnp.swapaxes(mask, 0, 1), gaps)
        h, _ = jax.lax.scan(cell, h, seq, reverse=True)
        stats = self.to_latent(h)
        return stats[:, : self.latent], stats[:, self.latent :]

    def __call__(self, times, x, mask, method=_UNREGULARIZED, *, key, sample=True,
                 **solve_kwargs):
        """Decodes the latent trajectory at `times`.

        Args:
            times: the increasing observation times, shape (T,).
            x: observations of shape (B, T, D).
            mask: 1 where observed, 0 elsewhere, shape (B, T).
            method: the regularization method.
            key: a PRNG key (posterior sample and regularization).
            sample: draw z(t0) from the posterior; False: take its mean.
            **solve_kwargs: passed on to `integrate` (rtol, atol, adjoint, max_steps).

        Returns:
            (trajectory (B, T, D), KL term, penalty, nfe).
        """
        key_z, key_reg = jax.random.split(key)
        mean, logvar = self.encode(times, x, mask)
        z0 = mean
        if sample:
            z0 = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key_z, mean.shape, mean.dtype)
        kl = 0.5 * jnp.mean(jnp.sum(jnp.exp(logvar) + mean**2 - 1 - logvar, axis=-1))
        vf, params = field_fn(self.field)
        out = integrate(method, vf, params, z0, times[0], times, key=key_reg,
                        **solve_kwargs)
        return jnp.swapaxes(self.decoder(out.ys), 0, 1), kl, out.penalty, out.nfe


class CNF(nnx.Module):
    """Continuous normalizing flow (FFJORD, Grathwohl et al., ICLR 2019).

    Data at t = 0 flows to a standard normal at t = 1;
    log p(x) = log N(z(1)) + int_0^1 tr(df/dz) dt, the trace by Hutchinson's estimator.

    Args:
        dim: the data dimension.
        hidden: the width of the vector field's hidden layers.
        rngs: the NNX random streams of the initialisation.
        dtype: the parameter dtype.
    """

    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.field = MLPField(dim, hidden, depth=2, rngs=rngs, dtype=dtype)

    def log_prob(self, x, method=_UNREGULARIZED, *, key, **solve_kwargs):
        """Unbiased per-sample estimate of the log-density.

        Args:
            x: data of shape (B, dim).
            method: the regularization method.
            key: a PRNG key (Hutchinson probe and regularization).
            **solve_kwargs: passed on to `integrate` (rtol, atol, adjoint, max_steps).

        Returns:
            (log p(x) estimate (B,), penalty, nfe).
        """
        key_eps, key_reg = jax.random.split(key)
        vf, params = field_fn(self.field)
        eps = jax.random.normal(key_eps, x.shape, x.dtype)

        def augmented(t, state, args):
            p, e = args
            z, _ = state
            f, vjp = jax.vjp(lambda u: vf(t, u, p), z)
            (e_jac,) = vjp(e)
            return f, jnp.sum(e_jac * e, axis=-1)

        y0 = (x, jnp.zeros(x.shape[0], x.dtype))
        out = integrate(method, augmented, (params, eps), y0, 0.0, jnp.ones(1, x.dtype),
                        key=key_reg, **solve_kwargs)
        z, trace = out.ys[0][-1], out.ys[1][-1]
        log_normal = -0.5 * jnp.sum(z**2, axis=-1) - 0.5 * x.shape[-1] * jnp.log(2 * jnp.pi)
        return log_normal + trace, out.penalty, out.nfe
