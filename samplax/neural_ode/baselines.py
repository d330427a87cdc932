"""Baseline regularizers: STEER, RNODE and TayNODE.

- STEER: Ghosh et al., "STEER: Simple Temporal Regularization For Neural ODEs"
  (NeurIPS 2020): random end time during training.
- RNODE: Finlay et al., "How to train your neural ODE" (ICML 2020): kinetic energy plus
  the Jacobian Frobenius norm (Hutchinson estimate), integrated as extra state.
- TayNODE: Kelly et al., "Learning Differential Equations that are Easy to Solve"
  (NeurIPS 2020): the integrated squared second total derivative of the trajectory.

Vector fields take `(t, y, args)` with `y` of shape (batch, dim), rows independent.
"""

import jax
import jax.numpy as jnp


def steer_times(key, t0, ts, b: float) -> jax.Array:
    """Save times shifted by U(-b, b) times their gap to the previous time, then sorted.

    With one save time t1 this is STEER's end time T ~ U(t1 - b (t1 - t0), t1 + b (t1 - t0)).

    Args:
        key: a PRNG key.
        t0: the initial time.
        ts: the increasing save times, shape (n,).
        b: the jitter as a fraction of each gap, in (0, 1).

    Returns:
        The jittered save times, sorted, shape (n,).
    """
    if not 0 < b < 1:
        raise ValueError(f"b must lie in (0, 1), got {b!r}.")
    ts = jnp.asarray(ts)
    gaps = jnp.diff(ts, prepend=jnp.asarray(t0, ts.dtype))
    shift = jax.random.uniform(key, ts.shape, ts.dtype, -b, b) * gaps
    return jnp.sort(ts + shift)


def kinetic_jacobian_field(vector_field, eps):
    """RNODE augmentation: d/dt (y, E_kin, E_jac) = (f, mean ||f||^2, mean ||eps^T df/dy||^2).

    Args:
        vector_field: f(t, y, args), with `y` of shape (batch, dim).
        eps: the Hutchinson probe, shaped like `y`.

    Returns:
        The augmented vector field of the state (y, E_kin, E_jac).
    """

    def field(t, state, args):
        y, _, _ = state
        f, vjp = jax.vjp(lambda x: vector_field(t, x, args), y)
        (eps_jac,) = vjp(eps)
        kinetic = jnp.mean(jnp.sum(f**2, axis=-1))
        frobenius = jnp.mean(jnp.sum(eps_jac**2, axis=-1))
        return f, kinetic, frobenius

    return field


def taylor_field(vector_field):
    """TayNODE (order 2) augmentation: d/dt (y, R) = (f, mean ||d^2 y / dt^2||^2).

    The second total derivative along the flow is the JVP of f in direction (1, f).

    Args:
        vector_field: f(t, y, args), with `y` of shape (batch, dim).

    Returns:
        The augmented vector field of the state (y, R).
    """

    def field(t, state, args):
        y, _ = state
        fn = lambda s, x: vector_field(s, x, args)  # noqa: E731
        f = fn(t, y)
        _, accel = jax.jvp(fn, (t, y), (jnp.ones_like(t), f))
        return f, jnp.mean(jnp.sum(accel**2, axis=-1))

    return field
