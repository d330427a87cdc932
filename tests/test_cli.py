"""The sampling command line: one-line errors with a non-zero exit, no overwriting without
--force, outputs and run.json, samples independent of the batch size, and the default
command writing recognisable digits with the shipped model."""

import argparse
import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tiny_models import save_tiny

import samplax
from samplax import cli
from samplax.cli.config import from_arguments, with_model
from samplax.cli.model import Model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny class-conditional UNet with random weights on the DDPM schedule: cheap to compile."""
    return save_tiny(tmp_path_factory.mktemp("model") / "tiny.msgpack", "diffusion", seed=1)


def _error(capsys, argv):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--solver", "rk99"], "unknown --solver 'rk99'"),
        (["--seeds", "5-1"], "invalid seeds"),
        (["--seeds", "a"], "invalid seeds"),
        (["--steps", "0"], "positive integer"),
        (["--grid", "cubic"], "unknown --grid"),
        (["--model", "no-such-model"], "is not one of"),
        (["--model", "digits-classifier"], "not a generative model"),
        (["--guidance-scale", "-1"], "--guidance-scale"),
        (["--num-processes", "2"], "need --distributed"),
        (["--unknown-flag"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(capsys, tmp_path, argv, message):
    try:
        code, err = _error(capsys, argv + ["--outdir", str(tmp_path / "out")])
    except SystemExit as exit_:  # argparse's own errors
        code, err = exit_.code, capsys.readouterr().err.strip()
    assert code == 2
    assert message in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_errors_found_after_loading_the_model(capsys, tmp_path, tiny_model):
    code, err = _error(capsys, ["--model", tiny_model, "--label", "12", "--outdir", str(tmp_path / "a")])
    assert code == 2 and "--label 12 is not a class" in err and len(err.splitlines()) == 1
    code, err = _error(capsys, ["--model", tiny_model, "--t-end", "5", "--outdir", str(tmp_path / "b")])
    assert code == 2 and "--t-end" in err and "outside the range" in err and len(err.splitlines()) == 1
    code, err = _error(capsys, ["--model", tiny_model, "--t-end", "1", "--outdir", str(tmp_path / "c")])
    assert code == 2 and "--t-end" in err and "must be greater than t_end" in err and len(err.splitlines()) == 1
    assert not any((tmp_path / name).exists() for name in "abc")


def test_never_overwrites_without_force(capsys, tmp_path, tiny_model):
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "000000.png").write_bytes(b"keep me")
    code, err = _error(capsys, ["--model", tiny_model, "--seeds", "0", "--steps", "2", "--outdir", str(outdir)])
    assert code == 2 and "--force" in err and "already exists" in err
    assert (outdir / "000000.png").read_bytes() == b"keep me"
    argv = ["--model", tiny_model, "--seeds", "0", "--steps", "2", "--outdir", str(outdir), "--force", "--no-progress"]
    assert cli.main(argv) == 0
    assert (outdir / "000000.png").read_bytes() != b"keep me"


def _pixels(folder, seeds):
    return np.stack([np.asarray(Image.open(pathlib.Path(folder) / f"{seed:06d}.png")) for seed in seeds])


def test_outputs_and_batch_size_independence(tmp_path, tiny_model):
    seeds = [3, 0, 7, 1, 2]
    runs = {}
    for batch_size in (2, 5):
        outdir = tmp_path / f"b{batch_size}"
        argv = ["--model", tiny_model, "--seeds", "3,0,7,1-2", "--steps", "3", "--batch-size", str(batch_size),
                "--outdir", str(outdir), "--no-progress"]
        assert cli.main(argv) == 0
        runs[batch_size] = _pixels(outdir, seeds)
    np.testing.assert_array_equal(runs[2], runs[5])
    assert len({runs[2][i].tobytes() for i in range(5)}) == 5  # different seeds, different images
    record = json.loads((tmp_path / "b5" / "run.json").read_text())
    assert record["nfe"] == 3 and record["network_passes_per_sample"] == 6  # guidance doubles the passes
    assert record["arguments"]["seeds"] == [3, 0, 7, 1, 2] and record["versions"]["jax"]
    assert record["arguments"]["solver"] == "dpm++2m" and record["arguments"]["grid"] == "logsnr"  # resolved defaults
    assert record["arguments"]["guidance_scale"] == 2.0 and record["arguments"]["batch_size"] == 5
    assert record["wall_time_s"] > 0
    grid = Image.open(tmp_path / "b5" / "grid.png")
    assert grid.size == (3 * 65 + 1, 2 * 65 + 1)  # 3 x 2 tiles of 8 x 8 pixels upscaled 8 times
    assert not list(tmp_path.glob("**/*.tmp"))


def test_seed_lists():
    assert cli.parse_seeds("0-3,7,10-11") == [0, 1, 2, 3, 7, 10, 11]
    for bad in ("", "1-", "-3", "x", "1,1"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.parse_seeds(bad)


def test_default_command_writes_recognisable_digits(tmp_path):
    """`python scripts/sample.py` with no arguments, in a fresh folder, with the shipped model."""
    script = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "sample.py"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    run = {"cwd": tmp_path, "capture_output": True, "text": True, "env": env, "timeout": 600}
    done = subprocess.run([sys.executable, str(script)], **run)
    assert done.returncode == 0, done.stderr[-2000:]
    outdir = tmp_path / "samples"
    assert len(list(outdir.glob("0000*.png"))) == 64 and (outdir / "grid.png").is_file()
    pixels = _pixels(outdir, range(64)).astype(np.float32)[..., None] / 127.5 - 1.0
    from samplax import metrics

    assert metrics.label_accuracy(pixels, np.arange(64) % 10) >= 0.9
    again = subprocess.run([sys.executable, str(script)], **run)
    assert again.returncode == 2 and "--force" in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_adaptive_solver_records_its_per_sample_evaluations(tmp_path, tiny_model):
    outdir = tmp_path / "adaptive"
    argv = ["--model", tiny_model, "--solver", "dpm-solver-adaptive", "--seeds", "0-2", "--outdir", str(outdir),
            "--no-progress"]
    assert cli.main(argv) == 0
    record = json.loads((outdir / "run.json").read_text())
    assert 0 < record["nfe_mean"] <= record["nfe"] and record["network_passes_per_sample"] == 2 * record["nfe"]


def test_run_configuration_is_frozen_and_leaves_the_parsed_options_alone(tmp_path, tiny_model):
    args = cli.parser().parse_args(["--model", tiny_model, "--outdir", str(tmp_path / "out")])
    before = dict(vars(args))
    config = from_arguments(args)
    # The default guidance scale depends on the model, so with_model sets it.
    assert config.seeds == tuple(range(64)) and config.batch_size == 64 and config.guidance_scale is None
    assert config.solver is None and config.grid is None and config.mode == "sample"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.steps = 3
    final, solver = with_model(config, Model.load(tiny_model))
    assert final.solver == "dpm++2m" and final.grid == "logsnr" and solver is samplax.solvers.get("dpm++2m")
    assert vars(args) == before  # nothing filled into the namespace
    assert list(final.arguments()) == list(vars(args))  # run.json's "arguments": every option, in order
    assert not (tmp_path / "out").exists()


def test_default_solver_follows_the_schedule():
    flow, diffusion = samplax.schedules.RectifiedFlow(), samplax.schedules.get("ddpm")
    assert cli.default_solver(flow) == "euler" and cli.default_solver(flow, "edit") == "rf-solver-2"
    assert cli.default_solver(diffusion) == "dpm++2m" and cli.default_solver(diffusion, "invert") == "dpm++2m"
    assert cli.default_solver("rectified-flow", "invert") == "rf-solver-2"  # a registry name works too


def test_stochastic_solver_options_and_noise(capsys, tmp_path, tiny_model):
    """Stochastic solvers: each seed's image independent of the batch size, its settings
    and noise source in run.json; their options refused where they do not apply."""
    seeds = [4, 1, 2]
    runs = {}
    for batch_size in (1, 3):
        outdir = tmp_path / f"b{batch_size}"
        argv = ["--model", tiny_model, "--solver", "dpm++2m-sde", "--eta", "0.5", "--noise-source", "brownian",
                "--seeds", "4,1-2", "--steps", "3", "--batch-size", str(batch_size), "--outdir", str(outdir),
                "--no-progress"]
        assert cli.main(argv) == 0
        runs[batch_size] = _pixels(outdir, seeds)
    np.testing.assert_array_equal(runs[1], runs[3])
    record = json.loads((tmp_path / "b3" / "run.json").read_text())
    assert record["noise_source"] == "brownian" and "eta=0.5" in record["solver_settings"]
    assert record["arguments"]["eta"] == 0.5 and record["solver_noise_keys"].startswith("fold_in")
    for argv, message in [
        (["--solver", "dpm++2m", "--eta", "0.5"], "--eta applies to"),
        (["--solver", "ddpm", "--churn", "3"], "--churn applies to edm-churn"),
        (["--solver", "dpm++2m", "--noise-source", "brownian"], "--noise-source applies to stochastic"),
        (["--solver", "ddpm", "--eta", "3"], "eta must lie in [0, 1]"),
        (["--solver", "ddpm", "--invert", "digits:3:0"], "is stochastic"),
    ]:
        code, err = _error(capsys, ["--model", tiny_model, *argv, "--outdir", str(tmp_path / "bad")])
        assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "bad").exists()
