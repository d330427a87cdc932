"""Data sets: digits scaled to [-1, 1] with a fixed stratified split, and 2-D toys."""

import numpy as np
import pytest

from samplax.models import data, pretrained


def test_digits_split_is_fixed_disjoint_and_scaled():
    train, test = data.digits("train"), data.digits("test")
    assert train.images.shape == (1437, 8, 8, 1) and test.images.shape == (360, 8, 8, 1)
    assert train.images.min() == -1.0 and train.images.max() == 1.0
    assert np.bincount(test.labels).min() >= 35  # stratified: about 36 of each class
    again = data.digits("test")
    np.testing.assert_array_equal(test.images, again.images)
    flat = {row.tobytes() for row in train.images.reshape(len(train.images), -1)}
    overlap = sum(row.tobytes() in flat for row in test.images.reshape(len(test.images), -1))
    assert overlap <= 2  # the split is by index; scikit-learn's digits has a few duplicates
    with pytest.raises(ValueError, match="split"):
        data.digits("validation")


@pytest.mark.parametrize("name", sorted(data.TOYS))
def test_toys(name):
    points = data.toy(name, 500, seed=1)
    assert points.shape == (500, 2) and points.dtype == np.float32
    assert np.all(np.abs(points) < 4.0) and points.std() > 0.3
    np.testing.assert_array_equal(points, data.toy(name, 500, seed=1))


def test_unknown_toy():
    with pytest.raises(ValueError, match="moons"):
        data.toy("spirals", 10)


def test_shipped_files_are_small_and_record_their_command():
    for name in pretrained.NAMES:
        path = pretrained.path(name)
        assert path.stat().st_size < 5 * 2**20
        from samplax.models import checkpoints

        config = checkpoints.read_config(path)
        assert config["command"].startswith("python scripts/train.py") and config["seed"] == 0
    with pytest.raises(ValueError, match="digits-diffusion"):
        pretrained.path("cifar")
