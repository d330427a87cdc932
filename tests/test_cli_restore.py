"""The command line's --init-image (img2img and inpainting) and --restore modes: the files
match the library calls they stand for, --strength begins where `begin_index` says, the
kept region survives, the shipped flow restores low-resolution digits, and inconsistent
options are one-line errors that leave nothing written."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from tiny_models import save_tiny

import samplax as sx
from samplax import cli
from samplax.cli.masks import box_average, known_region
from samplax.cli.transform import input_keys
from samplax.models import data, pretrained


@pytest.fixture(scope="module")
def tiny_flow(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("model") / "tiny-flow.msgpack", "flow", seed=5)


def _read(path):
    return np.asarray(Image.open(path), np.float32)[..., None] / 127.5 - 1.0


def _run(argv, outdir):
    assert cli.main(argv + ["--outdir", str(outdir), "--no-progress"]) == 0
    return json.loads((outdir / "run.json").read_text())


def _threes(count):
    test = data.digits("test")
    return jnp.asarray(test.images[test.labels == 3][:count])


def test_img2img_is_sdedit_from_the_begin_index(tmp_path, tiny_flow):
    """--strength 0.5 of 10 steps runs the last 5 intervals of the whole grid, and the
    images are samplax.sdedit's with input i's key."""
    record = _run(["--model", tiny_flow, "--init-image", "digits:3:0-2", "--strength", "0.5", "--steps", "10",
                   "--label", "3"], tmp_path / "a")
    assert record["begin_index"] == 5 and record["nfe"] == 5 and record["labels"] == [3, 3, 3]
    assert record["arguments"]["guidance_scale"] == 2.0  # guided by default towards a given --label
    model = pretrained.denoiser(tiny_flow, labels=np.full(3, 3), guidance_scale=2.0)
    expected, _ = sx.sdedit(model, "euler", _threes(3), strength=0.5, key=input_keys(3), steps=10)
    written = np.stack([_read(tmp_path / "a" / f"digit3-{i:03d}.png") for i in range(3)])
    np.testing.assert_allclose(written, np.clip(expected, -1, 1), atol=1 / 127.5 + 1e-6)


def test_inpainting_keeps_the_region_outside_the_mask(tmp_path, tiny_flow):
    record = _run(["--model", tiny_flow, "--init-image", "digits:3:0-1", "--mask", "left", "--resample", "2",
                   "--steps", "4"], tmp_path / "b")
    assert record["nfe"] == 2 * 4 and record["begin_index"] is None
    written = np.stack([_read(tmp_path / "b" / f"digit3-{i:03d}.png") for i in range(2)])
    kept = np.asarray(known_region("left", (8, 8, 1)))
    assert kept[:, :4].sum() == 0 and kept[:, 4:].min() == 1  # "left" regenerates the left half
    np.testing.assert_allclose(written * kept, np.asarray(_threes(2)) * kept, atol=1 / 127.5 + 1e-6)
    assert np.abs((written - np.asarray(_threes(2))) * (1 - kept)).max() > 0.1


def test_flowchef_restores_low_resolution_digits(tmp_path):
    """The shipped digits-flow from 2x2 box averages: the restorations agree with the
    observation far better than unguided samples do, and stay close to the true digits."""
    truth = _threes(8)
    low = np.asarray(box_average(2, truth))
    inputs = []
    for i, image in enumerate(low):  # 4x4 images, read back at 8x8 by box resizing
        pixels = np.clip(np.round((image[..., 0] + 1) * 127.5), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"low{i}.png")
        inputs.append(str(tmp_path / f"low{i}.png"))
    record = _run(["--model", "digits-flow", "--restore", *inputs, "--downsample", "2", "--steps", "10"],
                  tmp_path / "c")
    assert record["method"] == "flowchef" and record["nfe"] == 10 and record["observed"] == "2x2 box averages"
    restored = np.stack([_read(tmp_path / "c" / f"low{i}.png") for i in range(8)])
    plain, _ = sx.sample(pretrained.denoiser("digits-flow", labels=None), "euler",
                         jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 0), (8, 8, 1)))(input_keys(8)),
                         steps=10)
    observed_error = np.sqrt(np.mean((np.asarray(box_average(2, restored)) - low) ** 2))
    plain_error = np.sqrt(np.mean((np.asarray(box_average(2, plain)) - low) ** 2))
    assert observed_error < 0.1 < 0.3 < plain_error, (observed_error, plain_error)
    assert np.sqrt(np.mean((restored - np.asarray(truth)) ** 2)) < 0.4


def test_code_inverts_to_the_level_of_its_strength(tmp_path, tiny_flow):
    record = _run(["--model", tiny_flow, "--restore", "digits:3:0-1", "--method", "code", "--strength", "0.4",
                   "--steps", "10", "--langevin-steps", "3"], tmp_path / "d")
    assert record["steps_each_way"] == 4 and record["nfe"] == 2 * 4 + 3
    np.testing.assert_allclose(record["level"], 0.4, rtol=1e-6)  # the uniform grid point 6 of 10 on [1, 0]


@pytest.mark.parametrize("argv, message", [
    (["--strength", "0.5"], "--strength applies to --init-image without --mask"),
    (["--init-image", "digits:3", "--mask", "left", "--strength", "0.5"], "--strength applies to"),
    (["--init-image", "digits:3", "--resample", "2"], "--resample applies to --init-image with --mask"),
    (["--invert", "digits:3", "--method", "dps"], "--method applies to --restore"),
    (["--restore", "digits:3", "--langevin-steps", "3"], "--langevin-steps applies to --restore --method code"),
    (["--restore", "digits:3", "--method", "code", "--mask", "left"], "--mask applies to"),
    (["--restore", "digits:3", "--method", "code", "--noise-std", "0.1"], "CODE is blind"),
    (["--restore", "digits:3", "--downsample", "3"], "--downsample must be a factor > 1 that divides"),
    (["--restore", "digits:3", "--downsample", "2", "--mask", "left"], "give one of them"),
    (["--restore", "digits:3", "--noise-std", "0"], "--noise-std must be > 0"),
    (["--restore", "digits:3", "--likelihood-scale", "-1"], "--likelihood-scale must be >= 0"),
    (["--init-image", "digits:3", "--mask", "diagonal"], "is not a file nor one of left"),
    (["--init-image", "digits:3", "--mask", "random:1.5"], "strictly between 0 and 1"),
    (["--init-image", "digits:3", "--strength", "0.05", "--steps", "10"], "runs no step"),
    (["--init-image", "digits:3", "--strength", "1.5"], "must lie in (0, 1]"),
    (["--init-image", "digits:3", "--solver", "dpm-solver-adaptive"], "--init-image needs a fixed-grid solver"),
    (["--restore", "digits:3", "--method", "code", "--solver", "ddpm"], "--restore --method code runs the"),
    (["--model", "digits-flow", "--init-image", "digits:3", "--solver", "reversible-heun"], "is reversible"),
])
def test_bad_img2img_and_restore_arguments(capsys, tmp_path, argv, message):
    code = cli.main(argv + ["--outdir", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_bad_mask_files(capsys, tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((8, 8)))
    np.save(tmp_path / "wrong.npy", np.ones((4, 4)))
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(tmp_path / "white.png")
    for name, message in (("empty.npy", "regenerates no pixel"), ("wrong.npy", "has shape (4, 4)"),
                          ("white.png", "regenerates every pixel")):
        code = cli.main(["--init-image", "digits:3", "--mask", str(tmp_path / name), "--outdir",
                         str(tmp_path / "out"), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, err


def test_inputs_that_would_be_misread_or_overwritten(capsys, tmp_path, tiny_flow):
    """The seventh trial's silent cases: an RGB stack read as more images, a 16-bit PNG
    clipped to binary, an input inside --outdir replaced by its result, guidance with no
    class to guide towards; and an empty array."""
    np.save(tmp_path / "rgb.npy", np.zeros((2, 8, 8, 3), np.float32))
    np.save(tmp_path / "empty.npy", np.zeros((0, 8, 8), np.float32))
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(tmp_path / "deep.png")
    outdir = tmp_path / "out"
    outdir.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(outdir / "inside.png")
    flow = ["--model", tiny_flow, "--steps", "4", "--no-progress", "--force"]
    cases = [
        (["--init-image", str(tmp_path / "rgb.npy")], "has shape (2, 8, 8, 3)"),
        (["--init-image", str(tmp_path / "empty.npy")], "holds no image"),
        (["--init-image", str(tmp_path / "deep.png")], "16-bit or floating point"),
        (["--init-image", str(outdir / "inside.png")], "lies in --outdir"),
        (["--init-image", "digits:3:0", "--label", "none", "--guidance-scale", "3"], "guides towards"),
        (["--restore", "digits:3:0", "--guidance-scale", "3"], "give --label"),
    ]
    for argv, message in cases:
        code = cli.main(flow + argv + ["--outdir", str(outdir)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, (argv, err)
        assert sorted(p.name for p in outdir.iterdir()) == ["inside.png"]
