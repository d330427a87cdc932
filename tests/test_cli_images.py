"""The command line's --invert and --edit modes: exact round trips through the written
files, the shipped flow model turning test 3s into 8s, inputs of every kind, and one-line
errors that leave nothing written."""

import json

import jax
import numpy as np
import pytest
from PIL import Image
from tiny_models import save_tiny

import samplax
from samplax import cli
from samplax.cli.images import to_pixels
from samplax.models import pretrained


@pytest.fixture(scope="module")
def tiny_flow(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("model") / "tiny-flow.msgpack", "flow", seed=3)


def _read(path):
    return np.asarray(Image.open(path), np.float32)[..., None] / 127.5 - 1.0


def _error(capsys, argv):
    code = cli.main(argv + ["--no-progress"])
    return code, capsys.readouterr().err.strip()


def _digit_png(path, index=0, dark_ink=False, size=8):
    """A held-out test digit written as a PNG (optionally upscaled and with dark ink)."""
    from samplax.models.data import digits

    pixels = to_pixels(digits("test").images[index], dark_ink)[..., 0]
    Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST).save(path)
    return str(path)


def test_reversible_inversion_round_trip_is_exact_and_noise_file_samples_back(tmp_path, tiny_flow):
    inputs = [_digit_png(tmp_path / "a.png", 0), _digit_png(tmp_path / "b.png", 1)]
    outdir = tmp_path / "inv"
    argv = ["--model", tiny_flow, "--invert", *inputs, "--label", "3", "--reversible", "--steps", "6",
            "--outdir", str(outdir)]
    assert cli.main(argv + ["--no-progress"]) == 0
    record = json.loads((outdir / "run.json").read_text())
    assert record["solver"] == "reversible-heun" and record["nfe_per_direction"] == 7 and record["labels"] == [3, 3]
    assert record["arguments"]["solver"] == "reversible-heun" and record["arguments"]["grid"] == "uniform"
    assert max(record["round_trip_max_error"].values()) < 1e-5
    for name, source in zip(("a", "b"), inputs, strict=True):  # PNG round trip exact to the 8-bit level
        np.testing.assert_array_equal(np.asarray(Image.open(outdir / f"{name}.png")), np.asarray(Image.open(source)))
    saved = np.load(outdir / "noise.npz")
    assert list(saved["names"]) == ["a", "b"] and saved["noise"].shape == (2, 8, 8, 1)
    model = pretrained.denoiser(tiny_flow, labels=np.array([3, 3]))
    state = samplax.ReversibleState(saved["noise"], saved["companion"])
    back, _ = samplax.reversible_sample(model, state, steps=6)
    np.testing.assert_allclose(back, np.stack([_read(p) for p in inputs]), atol=1e-5)
    grid = Image.open(outdir / "grid.png")
    assert grid.size == (4 * 65 + 1, 65 + 1)  # one row: source, round trip, source, round trip


def test_inversion_error_falls_with_steps(tmp_path, tiny_flow):
    errors = []
    for steps in (2, 8):
        outdir = tmp_path / f"s{steps}"
        argv = ["--model", tiny_flow, "--invert", "digits:0:0-1", "--solver", "euler", "--steps", str(steps),
                "--outdir", str(outdir)]
        assert cli.main(argv + ["--no-progress"]) == 0
        record = json.loads((outdir / "run.json").read_text())
        assert record["labels"] == [0, 0] and record["inputs"] == ["digit0-000", "digit0-001"]
        errors.append(max(record["round_trip_max_error"].values()))
    assert errors[1] < errors[0] / 3  # Euler there and back: error of order 1/steps


def test_edit_turns_test_threes_into_eights(tmp_path):
    """The documented demo with the shipped digits-flow model (the default for --edit)."""
    outdir = tmp_path / "edit"
    argv = ["--edit", "digits:3:0-3", "--label", "8", "--steps", "6", "--outdir", str(outdir), "--no-progress"]
    assert cli.main(argv) == 0
    record = json.loads((outdir / "run.json").read_text())
    assert record["source_labels"] == [3, 3, 3, 3] and record["target_label"] == 8 and record["inject"] == 6
    assert record["nfe"] == 2 * 2 * 6  # rf-solver-2: two evaluations per step, both directions
    edited = np.stack([_read(outdir / f"digit3-{i:03d}.png") for i in range(4)])
    classifier, _ = pretrained.load("digits-classifier")
    predicted = np.asarray(jax.numpy.argmax(classifier(edited), axis=-1))
    assert np.sum(predicted == 8) >= 3, predicted


def test_dark_ink_and_resized_inputs(tmp_path, tiny_flow):
    source = _digit_png(tmp_path / "scan.png", 2, dark_ink=True, size=32)
    outdir = tmp_path / "out"
    argv = ["--model", tiny_flow, "--invert", source, "--dark-ink", "--reversible", "--steps", "3",
            "--outdir", str(outdir)]
    assert cli.main(argv + ["--no-progress"]) == 0
    record = json.loads((outdir / "run.json").read_text())
    assert record["resized_inputs"] == [source] and record["labels"] == [10]  # no class: unconditional
    written = np.asarray(Image.open(outdir / "scan.png"), np.float32)
    expected = np.asarray(Image.open(source).resize((8, 8), Image.Resampling.BOX), np.float32)
    assert np.abs(written - expected).max() <= 1  # dark ink in, dark ink out


def test_npy_inputs(tmp_path, tiny_flow):
    from samplax.models.data import digits

    np.save(tmp_path / "stack.npy", digits("test").images[:3])
    outdir = tmp_path / "out"
    argv = ["--model", tiny_flow, "--invert", str(tmp_path / "stack.npy"), "--reversible", "--steps", "2",
            "--outdir", str(outdir)]
    assert cli.main(argv + ["--no-progress"]) == 0
    assert json.loads((outdir / "run.json").read_text())["inputs"] == ["stack-000", "stack-001", "stack-002"]


def test_a_reversible_solver_name_inverts_like_reversible(tmp_path, tiny_flow):
    """--solver reversible-heun is run by its capability (solver.reversible), as --reversible."""
    saved = {}
    for name, extra in (("flag", ["--reversible"]), ("name", ["--solver", "reversible-heun"])):
        outdir = tmp_path / name
        argv = ["--model", tiny_flow, "--invert", "digits:1:0", *extra, "--steps", "2", "--outdir", str(outdir)]
        assert cli.main(argv + ["--no-progress"]) == 0
        saved[name] = np.load(outdir / "noise.npz")
        assert json.loads((outdir / "run.json").read_text())["solver"] == "reversible-heun"
    for key in ("noise", "companion"):
        np.testing.assert_array_equal(saved["flag"][key], saved["name"][key])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--edit", "digits:3"], "--edit needs --label"),
        (["--edit", "digits:3", "--label", "8", "--inject", "20"], "--inject must lie in 0-15"),
        (["--edit", "digits:3", "--label", "8", "--seeds", "0-3"], "--seeds applies to sampling"),
        (["--invert", "digits:3", "--inject", "2"], "--inject applies to --edit only"),
        (["--reversible"], "--reversible applies to --invert only"),
        (["--dark-ink"], "--dark-ink applies to --invert, --edit, --init-image and --restore only"),
        (["--invert", "digits:3", "--reversible", "--solver", "heun"], "drop --solver"),
        (["--invert", "digits:3", "--distributed"], "--distributed applies to sampling"),
        (["--invert", "digits:3", "--edit", "digits:3"], "not allowed with argument"),
    ],
)
def test_bad_mode_arguments(capsys, tmp_path, argv, message):
    try:
        code, err = _error(capsys, argv + ["--outdir", str(tmp_path / "out")])
    except SystemExit as exit_:  # argparse's own errors
        code, err = exit_.code, capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_bad_inputs_and_models(capsys, tmp_path, tiny_flow):
    np.save(tmp_path / "wrong.npy", np.zeros((5, 5)))
    np.save(tmp_path / "loud.npy", np.full((8, 8), 3.0))
    (tmp_path / "text.png").write_text("not an image")
    png = _digit_png(tmp_path / "three.png", 0)
    other = tmp_path / "sub"
    other.mkdir()
    twin = _digit_png(other / "three.png", 1)
    flow = ["--model", tiny_flow]
    cases = [
        (flow + ["--invert", str(tmp_path / "missing.png")], "is not a file"),
        (flow + ["--invert", str(tmp_path / "wrong.npy")], "has shape (5, 5)"),
        (flow + ["--invert", str(tmp_path / "loud.npy")], "in [-1, 1]"),
        (flow + ["--invert", str(tmp_path / "text.png")], "not an image"),
        (flow + ["--invert", "digits:12"], "classes 0-9"),
        (flow + ["--invert", "digits:3:500"], "test digits of class 3"),
        (flow + ["--invert", png, twin], "same output names"),
        (flow + ["--edit", png, "--label", "8"], "needs --source-label"),
        (flow + ["--invert", png, "--solver", "dpm-solver-adaptive"], "adaptive"),
        (["--model", "digits-diffusion", "--edit", png, "--source-label", "3", "--label", "8"],
         "needs a class-conditional flow model"),
        (flow + ["--edit", png, "--source-label", "3", "--label", "11"], "--label 11 is not a class"),
        (flow + ["--edit", png, "--source-label", "3", "--label", "8", "--solver", "fireflow"],
         "fixed number of evaluations per step"),
        (flow + ["--edit", png, "--source-label", "3", "--label", "8", "--solver", "reversible-heun"],
         "needs a fixed-grid flow solver"),
    ]
    for index, (argv, message) in enumerate(cases):
        outdir = tmp_path / f"out{index}"
        code, err = _error(capsys, argv + ["--outdir", str(outdir)])
        assert code == 2 and message in err and len(err.splitlines()) == 1, (argv, err)
        assert not outdir.exists()
