"""Make the editing and inversion figures the docs show, with the shipped digits models
(digits-flow-attention for the edit, digits-flow for the inversion) and the same calls and
settings as notebooks/03_rectified_flow.py.

    python scripts/make_edit_figure.py [--out docs/images] [--force]

Writes edit_3_to_8.png (test 3s: source, plain regeneration with label 8, the edit with
attention-value sharing, and the difference of the last two) and inversion.png (test
digits: the inverted noise and the round trips of reversible Heun and of Euler). Prints
the numbers the figures show. Existing files are replaced only with --force.
"""

from __future__ import annotations

import argparse
import io
import pathlib

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import samplax as sx  # noqa: E402
from samplax.models import data, pretrained  # noqa: E402
from samplax.models.checkpoints import write_atomic  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent

# The edit settings chosen in notebooks/03_rectified_flow.py (section 4).
SOLVER, STEPS, INJECT = "rf-solver-2", 10, 10
EDIT_MODEL = "digits-flow-attention"  # attention at 8x8 and 4x4: values worth sharing
SHOWN = (0, 1, 2, 3, 4, 5)  # which test 3s to show
INVERSION_STEPS = 10


def _save(figure, path: pathlib.Path, force: bool) -> None:
    """Write the figure atomically (the library's write_atomic)."""
    if path.exists() and not force:
        raise SystemExit(f"{path} exists; pass --force to replace it")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    write_atomic(path, buffer.getvalue())
    plt.close(figure)
    print("wrote", path)


def _probability(classifier, images, label: int) -> np.ndarray:
    return np.asarray(jax.nn.softmax(classifier(images), axis=-1)[:, label])


def _show(axis, image, title, cmap="gray_r"):
    axis.imshow(np.asarray(image), cmap=cmap, vmin=-1, vmax=1)
    axis.set_title(title, fontsize=7)
    axis.set_xticks([])
    axis.set_yticks([])


def edit_figure(path: pathlib.Path, force: bool) -> None:
    classifier, _ = pretrained.load("digits-classifier")
    test = data.digits("test")
    threes = jnp.asarray(test.images[test.labels == 3])
    count = threes.shape[0]
    source = {"label": jnp.full((count,), 3)}
    target = {"label": jnp.full((count,), 8)}
    model = pretrained.denoiser(EDIT_MODEL, labels=source["label"])
    plain, _ = sx.edit(model, SOLVER, threes, source, target, steps=STEPS, inject=0)
    edited, _ = sx.edit(model, SOLVER, threes, source, target, steps=STEPS, inject=INJECT)
    p_plain, p_edit = _probability(classifier, plain, 8), _probability(classifier, edited, 8)
    print(f"settings: solver {SOLVER}, steps {STEPS}, inject {INJECT}")
    print(f"first test 3: p(8) plain regeneration {p_plain[0]:.3f}, edit {p_edit[0]:.3f}")
    print(f"all {count} test 3s: mean p(8) plain {p_plain.mean():.3f}, edit {p_edit.mean():.3f}; "
          f"RMS edit - plain {float(jnp.sqrt(jnp.mean((edited - plain) ** 2))):.4f}")
    rows = [("source", threes, 3), ("plain regen.", plain, 8), (f"edit (inject {INJECT}/{STEPS})", edited, 8)]
    figure, axes = plt.subplots(len(rows) + 1, len(SHOWN), figsize=(1.1 * len(SHOWN), 1.25 * (len(rows) + 1)))
    for row, (name, images, label) in enumerate(rows):
        p = _probability(classifier, images, label)
        for column, index in enumerate(SHOWN):
            _show(axes[row, column], images[index, ..., 0], f"p({label}) {p[index]:.2f}")
        axes[row, 0].set_ylabel(name, fontsize=7)
    for column, index in enumerate(SHOWN):
        _show(axes[-1, column], edited[index, ..., 0] - plain[index, ..., 0], "", cmap="RdBu")
    axes[-1, 0].set_ylabel("edit - plain", fontsize=7)
    figure.suptitle(f"{EDIT_MODEL}: test 3 -> 8 (sx.edit, {SOLVER})", fontsize=8)
    figure.tight_layout()
    _save(figure, path, force)


def inversion_figure(path: pathlib.Path, force: bool) -> None:
    test = data.digits("test")
    images = jnp.asarray(test.images[:6])
    model = pretrained.denoiser("digits-flow", labels=test.labels[:6])
    state, _ = sx.reversible_invert(model, images, steps=INVERSION_STEPS)
    exact, _ = sx.reversible_sample(model, state, steps=INVERSION_STEPS)
    inverted, _ = sx.invert(model, "euler", images, steps=INVERSION_STEPS)
    plain, _ = sx.sample(model, "euler", inverted, steps=INVERSION_STEPS)
    exact_error = np.asarray(jnp.max(jnp.abs(exact - images), axis=(1, 2, 3)))
    plain_error = np.asarray(jnp.max(jnp.abs(plain - images), axis=(1, 2, 3)))
    print(f"{INVERSION_STEPS} steps: max round-trip error reversible Heun {exact_error.max():.1e}, "
          f"Euler {plain_error.max():.2f}")
    rows = [
        ("data", images, None),
        ("inverted noise", state.x / 3.0, None),  # noise shown at 1/3 scale
        ("reversible Heun", exact, exact_error),
        ("Euler", plain, plain_error),
    ]
    figure, axes = plt.subplots(len(rows), images.shape[0], figsize=(1.1 * images.shape[0], 1.25 * len(rows)))
    for row, (name, batch, error) in enumerate(rows):
        for column in range(images.shape[0]):
            value = None if error is None else error[column]
            title = "" if value is None else f"err {value:.1e}" if value < 0.01 else f"err {value:.2f}"
            _show(axes[row, column], batch[column, ..., 0], title)
        axes[row, 0].set_ylabel(name, fontsize=7)
    figure.suptitle(f"digits-flow: invert and sample back, {INVERSION_STEPS} steps", fontsize=8)
    figure.tight_layout()
    _save(figure, path, force)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "docs" / "images", help="output folder")
    parser.add_argument("--force", action="store_true", help="replace existing images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    targets = [args.out / "edit_3_to_8.png", args.out / "inversion.png"]
    existing = [str(path) for path in targets if path.exists()]
    if existing and not args.force:  # check both before computing anything
        raise SystemExit(f"{', '.join(existing)} exist; pass --force to replace them")
    edit_figure(targets[0], args.force)
    inversion_figure(targets[1], args.force)


if __name__ == "__main__":
    main()
