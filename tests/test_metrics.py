"""Metrics against analytic values, and the shipped classifier on held-out digits."""

import numpy as np
import pytest

from samplax import metrics
from samplax.models import data


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 3))
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = np.array([1.0, -2.0, 0.5])
    assert metrics.frechet_distance(a, a + shift) == pytest.approx(np.sum(shift**2), abs=1e-8)
    # N(0, I) vs N(0, 4 I) in 3-D: 3 (1 + 4 - 2 * 2) = 3.
    b = 2.0 * rng.standard_normal((4000, 3))
    assert metrics.frechet_distance(a, b) == pytest.approx(3.0, rel=0.1)
    with pytest.raises(ValueError, match="same d"):
        metrics.frechet_distance(a, b[:, :2])


def test_sliced_wasserstein_of_a_shift():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 2))
    assert metrics.sliced_wasserstein(x, x) == 0.0
    shift = np.array([3.0, 4.0])
    # Projections of a shift by m on unit directions in 2-D: E[(theta . m)^2] = |m|^2 / 2.
    assert metrics.sliced_wasserstein(x, x + shift, projections=2000) == pytest.approx(5.0 / np.sqrt(2.0), rel=0.03)
    # Unequal sizes go through quantiles; the same distribution gives a small distance.
    assert metrics.sliced_wasserstein(x, rng.standard_normal((700, 2))) < 0.15


def test_shipped_classifier_on_held_out_digits():
    test = data.digits("test")
    assert metrics.label_accuracy(test.images, test.labels) >= 0.95
    assert metrics.label_accuracy(test.images, (test.labels + 1) % 10) < 0.05
    real = metrics.digits_frechet_distance(data.digits("train").images[:360])
    noise = metrics.digits_frechet_distance(np.random.default_rng(0).uniform(-1, 1, (360, 8, 8, 1)))
    assert real < 0.1 * noise
    with pytest.raises(ValueError, match="8, 8, 1"):
        metrics.label_accuracy(np.zeros((2, 8, 8)), np.zeros(2))
