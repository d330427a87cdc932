"""Small data sets for the neural-ODE experiments."""

import numpy as np


def digits(seed: int, test_fraction: float = 0.2):
    """scikit-learn's 8x8 digits scaled to [0, 1], shuffled and split.

    Args:
        seed: seed of the shuffle.
        test_fraction: the fraction held out for testing, in (0, 1).

    Returns:
        (x_train, y_train, x_test, y_test), x of shape (n, 64).
    """
    from sklearn.datasets import load_digits

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}.")
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order] / 16.0, y[order]
    n_test = int(round(test_fraction * len(x)))
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def spirals(n: int, *, seed: int, num_times: int = 40, observed: float = 0.5,
            t_max: float = 6.0, noise: float = 0.05, times=None):
    """Irregularly sampled 2-D spirals, clockwise and counter-clockwise.

    A latent-ODE task in the style of the spirals of Chen et al. (NeurIPS 2018). All
    series share `num_times` sorted random times on [0, t_max]; each keeps a random
    `observed` fraction of them (mask), with Gaussian observation noise.

    Args:
        n: the number of series.
        seed: seed of every random draw.
        num_times: the number of times T, at least 2 (the first is 0).
        observed: the fraction of times observed per series, in (0, 1]; the first time
            is always observed.
        t_max: the last possible time.
        noise: standard deviation of the observation noise.
        times: the times to use instead of drawn ones (e.g. those of a training set, so
            that a test set lies on the same grid): T increasing values.

    Returns:
        (times (T,), x (n, T, 2) noisy, clean (n, T, 2), mask (n, T)).
    """
    if n < 1 or num_times < 2 or not 0 < observed <= 1:
        raise ValueError(
            f"need n >= 1, num_times >= 2 and observed in (0, 1], got {n}, {num_times}, "
            f"{observed}."
        )
    rng = np.random.default_rng(seed)
    # Drawn even when `times` is given, so the series themselves do not depend on it.
    drawn = np.sort(np.concatenate([[0.0], rng.uniform(0, t_max, num_times - 1)]))
    if times is None:
        times = drawn
    else:
        times = np.asarray(times, dtype=float)
        if times.shape != (num_times,) or np.any(np.diff(times) < 0):
            raise ValueError(
                f"times must be {num_times} increasing values, got shape {times.shape}."
            )
    radius0 = rng.uniform(0.8, 1.2, (n, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    direction = rng.choice([-1.0, 1.0], (n, 1))
    angle = phase + direction * times[None, :]
    radius = radius0 * np.exp(-0.15 * times[None, :])
    clean = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)
    x = clean + noise * rng.standard_normal(clean.shape)
    mask = (rng.uniform(size=(n, num_times)) < observed).astype(float)
    mask[:, 0] = 1.0
    return times, x, clean, mask


def batches(arrays, batch_size: int, *, seed: int):
    """Endless shuffled minibatches of equal size (the last partial batch is dropped).

    Args:
        arrays: arrays of the same length, batched together.
        batch_size: the batch size, in [1, len(arrays[0])].
        seed: seed of the shuffles.

    Returns:
        A generator of tuples of batches, one per array.
    """
    n = len(arrays[0])
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must lie in [1, {n}], got {batch_size}.")
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(n)
        for i in range(0, n - batch_size + 1, batch_size):
            idx = order[i : i + batch_size]
            yield tuple(a[idx] for a in arrays)
