"""Sample-quality metrics that need no download.

For digits: the label accuracy of class-conditional samples under the shipped classifier,
and the Frechet distance between Gaussians fitted to the classifier's penultimate features
of the samples and of the held-out test digits (the FID recipe of Heusel et al. 2017 with
a small local classifier in place of Inception). For 2-D data: the sliced Wasserstein
distance (Rabin et al. 2012; Bonneel et al. 2015).
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from samplax.checks import check_count, check_positive

__all__ = [
    "classifier_confidence",
    "classifier_features",
    "digits_frechet_distance",
    "frechet_distance",
    "label_accuracy",
    "sliced_wasserstein",
]


@functools.lru_cache(maxsize=1)
def _classifier():
    from samplax.models import pretrained

    module, _ = pretrained.load("digits-classifier")
    return module


def _images(images) -> jax.Array:
    images = jnp.asarray(images, jnp.float32)
    if images.ndim != 4 or images.shape[1:] != (8, 8, 1):
        raise ValueError(f"images must be (batch, 8, 8, 1) digits in [-1, 1], got shape {images.shape}")
    if not bool(jnp.all(jnp.isfinite(images))):
        raise ValueError("images contain NaN or inf values")
    # Samples may overshoot [-1, 1], strongly guided ones by a few units; beyond 10 they are
    # pixels in [0, 255] (or a diverged solve).
    if float(jnp.max(jnp.abs(images))) > 10.0:
        raise ValueError(f"images must be digits in [-1, 1] (pixel / 127.5 - 1), got values up to "
                         f"{float(jnp.max(jnp.abs(images))):.4g}")
    return images


def _points(name: str, points) -> np.ndarray:
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[0] < 1:
        raise ValueError(f"{name} must be an (n, d) array of at least one point, got shape {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{name} contains NaN or inf values")
    return points


def _as_classifier(classifier, features: bool = False):
    """The shipped classifier for None, else `classifier` checked to be used as one: called
    on images it gives logits and, where `features` is needed, `features(images)` gives its
    penultimate activations (as `samplax.models.networks.Classifier`)."""
    if classifier is None:
        return _classifier()
    if not callable(classifier) or features and not callable(getattr(classifier, "features", None)):
        needed = " with a features(images) method" if features else ""
        raise TypeError(
            "classifier must be a digits classifier such as samplax.models.networks.Classifier: callable on "
            f"images (giving logits){needed}; got {type(classifier).__name__}"
        )
    return classifier


def label_accuracy(images, labels, classifier=None) -> float:
    """Fraction of images the classifier (default: the shipped one) assigns to `labels`."""
    images = _images(images)
    labels = np.asarray(labels)
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be integer class labels, got dtype {labels.dtype}")
    logits = np.asarray(_as_classifier(classifier)(images))
    if np.any(labels < 0) or np.any(labels >= logits.shape[1]):
        raise ValueError(f"labels must lie in 0..{logits.shape[1] - 1} (the classifier's classes), got "
                         f"{sorted(set(labels[(labels < 0) | (labels >= logits.shape[1])].tolist()))[:5]}")
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def classifier_confidence(images, classifier=None) -> np.ndarray:
    """The classifier's (default: the shipped one's) probability of its most likely class,
    per image: how clearly each image reads as some digit."""
    logits = np.asarray(_as_classifier(classifier)(_images(images)), np.float64)
    return 1.0 / np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1)


def classifier_features(images, classifier=None) -> np.ndarray:
    """Penultimate features of the classifier (default: the shipped one), (batch, features)."""
    return np.asarray(_as_classifier(classifier, features=True).features(_images(images)), np.float64)


def frechet_distance(features_a, features_b) -> float:
    """Squared Frechet distance between Gaussians fitted to two feature sets:
    |mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2), in float64."""
    a, b = _points("features_a", features_a), _points("features_b", features_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (n, d) arrays with the same d, got {a.shape} and {b.shape}")
    if min(a.shape[0], b.shape[0]) < 2:
        raise ValueError("each feature set needs at least 2 rows")
    if min(a.shape[0], b.shape[0]) <= a.shape[1]:
        warnings.warn(f"frechet_distance: {min(a.shape[0], b.shape[0])} rows for {a.shape[1]} features give singular "
                      "covariances, and the distance is strongly biased; use more rows than features", stacklevel=2)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0.0, None)).sum()
    mean_term = np.sum((a.mean(0) - b.mean(0)) ** 2)
    return float(mean_term + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross)


@functools.lru_cache(maxsize=1)
def _test_features():
    from samplax.models import data

    return classifier_features(data.digits("test").images)


def digits_frechet_distance(images, classifier=None) -> float:
    """Frechet distance in the classifier's feature space between `images` and the 360
    held-out test digits (the fixed split of `samplax.models.data.digits`)."""
    if classifier is None:
        reference = _test_features()
    else:
        from samplax.models import data

        reference = classifier_features(data.digits("test").images, classifier)
    return frechet_distance(classifier_features(images, classifier), reference)


def sliced_wasserstein(x, y, projections: int = 256, p: int = 2, seed: int = 0) -> float:
    """Sliced p-Wasserstein distance between two point clouds (n, d) and (m, d): the
    p-Wasserstein distance of their 1-D projections on random unit directions, averaged
    over directions (as the p-th power) and returned as its p-th root. Unequal sample
    sizes are compared through their quantile functions on a common grid."""
    x, y = _points("x", x), _points("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (n, d) arrays with the same d, got {x.shape} and {y.shape}")
    check_count("projections", projections)
    check_positive("p", p)
    check_count("seed", seed, minimum=0)
    directions = np.random.default_rng(seed).standard_normal((x.shape[1], projections))
    directions /= np.linalg.norm(directions, axis=0, keepdims=True)
    px, py = np.sort(x @ directions, axis=0), np.sort(y @ directions, axis=0)
    if px.shape[0] != py.shape[0]:
        levels = (np.arange(max(px.shape[0], py.shape[0])) + 0.5) / max(px.shape[0], py.shape[0])
        px = np.quantile(px, levels, axis=0)
        py = np.quantile(py, levels, axis=0)
    return float(np.mean(np.abs(px - py) ** p) ** (1.0 / p))
