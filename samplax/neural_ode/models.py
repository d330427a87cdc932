"""Flax NNX models built on `integrate`: a time-dependent MLP vector field, a neural-ODE
classifier, a latent ODE for irregularly sampled series and a 2-D continuous normalizing
flow. Each model's forward function returns (prediction, penalty, nfe); the vector field's
parameters travel through diffrax's `args`, so every adjoint can differentiate them.
"""

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from samplax.neural_ode.methods import NoRegularization, integrate


class MLPField(nnx.Module):
    """dy/dt = MLP([y, t]) with tanh hidden layers; time is appended at every layer."""

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
                for a, b in zip(sizes[:-1], sizes[1:])
            ]
        )

    def __call__(self, t, y):
        for i, layer in enumerate(self.layers):
            time = jnp.broadcast_to(jnp.asarray(t, y.dtype), y.shape[:-1] + (1,))
            y = layer(jnp.concatenate([y, time], axis=-1))
            if i < len(self.layers) - 1:
                y = jnp.tanh(y)
        return y


def field_fn(module: nnx.Module):
    """(vector_field(t, y, params), params) for a module called as module(t, y)."""
    graphdef, params = nnx.split(module)
    return (lambda t, y, p: nnx.merge(graphdef, p)(t, y)), params


class ODEClassifier(nnx.Module):
    """Neural ODE on the input (Pal et al.'s MNIST model) followed by a linear head."""

    def __init__(self, dim: int, hidden: int, classes: int, *, rngs: nnx.Rngs,
                 dtype=jnp.float32):
        self.field = MLPField(dim, hidden, depth=1, rngs=rngs, dtype=dtype)
        self.head = nnx.Linear(dim, classes, rngs=rngs, param_dtype=dtype)

    def __call__(self, x, method=NoRegularization(), *, key=None, **solve_kwargs):
        vf, params = field_fn(self.field)
        out = integrate(method, vf, params, x, 0.0, jnp.ones(1, x.dtype), key=key,
                        **solve_kwargs)
        return self.head(out.ys[-1]), out.penalty, out.nfe


class LatentODE(nnx.Module):
    """Latent ODE (Rubanova et al. 2019) with a GRU encoder run backwards over masked,
    irregularly sampled observations; the encoder input is (x * mask, mask, time gap)."""

    def __init__(self, obs_dim: int, latent: int, hidden: int, *, rngs: nnx.Rngs,
                 dtype=jnp.float32):
        self.latent = latent
        self.gru = nnx.GRUCell(obs_dim + 2, hidden, rngs=rngs, param_dtype=dtype)
        self.to_latent = nnx.Linear(hidden, 2 * latent, rngs=rngs, param_dtype=dtype)
        self.field = MLPField(latent, hidden, depth=2, rngs=rngs, dtype=dtype)
        self.decoder = nnx.Linear(latent, obs_dim, rngs=rngs, param_dtype=dtype)

    def encode(self, times, x, mask):
        """Posterior mean and log-variance of z(t0) from x (B, T, D) and mask (B, T)."""
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

    def __call__(self, times, x, mask, method=NoRegularization(), *, key, sample=True,
                 **solve_kwargs):
        """Decoded trajectory at `times`, shape (B, T, D); also the KL term, penalty, nfe."""
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
    """Continuous normalizing flow (FFJORD, Grathwohl et al. 2019) with a Hutchinson trace.

    Data at t = 0 flows to a standard normal at t = 1;
    log p(x) = log N(z(1)) + int_0^1 tr(df/dz) dt.
    """

    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.field = MLPField(dim, hidden, depth=2, rngs=rngs, dtype=dtype)

    def log_prob(self, x, method=NoRegularization(), *, key, **solve_kwargs):
        """Per-sample log-density estimate, shape (B,); also the penalty and nfe."""
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
