"""The training loop: it learns, a run killed mid-way resumes to exactly the weights of an
uninterrupted run, and checkpoints fail clearly when wrong or corrupt."""

import json

import flax.nnx as nnx
import jax
import numpy as np
import pytest

from samplax.models import checkpoints, data, losses, networks, training
from samplax.schedules import VPCosine

KWARGS = {"dimension": 2, "width": 16, "depth": 1, "time_features": 8}
# One loss object and one config for all runs, so the jitted step compiles once.
LOSS = losses.denoising_loss(VPCosine(), "noise")
CONFIG = training.TrainConfig(steps=20, batch_size=32, warmup_steps=2, checkpoint_every=5, learning_rate=1e-2)


def _setup():
    model = networks.build("MLP", KWARGS, seed=0)
    return model, LOSS, {"x": data.toy("moons", 256, seed=0)}, CONFIG


def _params(module):
    return jax.tree.leaves(nnx.state(module, nnx.Param))


class Killed(Exception):
    pass


def test_resume_after_kill_gives_identical_weights(tmp_path):
    model, loss, points, config = _setup()
    reference = training.train(model, loss, points, config, progress=False)

    def kill(step, value):
        if step == 12:  # after the checkpoint at step 10, before the one at 15
            raise Killed

    path = tmp_path / "run.msgpack"
    model, *_ = _setup()
    with pytest.raises(Killed):
        training.train(model, loss, points, config, checkpoint=path, progress=False, callback=kill)
    assert checkpoints.read_config(path)["kind"] == "training"
    model, *_ = _setup()  # a fresh process would rebuild the model from scratch
    resumed = training.train(model, loss, points, config, checkpoint=path, progress=False)
    expected = _params(reference.model) + _params(reference.ema)
    for a, b in zip(expected, _params(resumed.model) + _params(resumed.ema), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(resumed.losses) == 20 - 10  # only the remaining steps ran
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary files


def test_training_lowers_the_loss_and_ema_lags():
    model, loss, points, _ = _setup()
    config = training.TrainConfig(steps=100, batch_size=64, warmup_steps=10, learning_rate=1e-2, ema_decay=0.9)
    result = training.train(model, loss, points, config, progress=False)
    assert np.mean(result.losses[-3:]) < 0.8 * result.losses[0]
    assert any(not np.array_equal(a, b) for a, b in zip(_params(result.model), _params(result.ema), strict=True))


def test_resume_refuses_a_different_config(tmp_path):
    model, loss, points, config = _setup()
    path = tmp_path / "run.msgpack"
    training.train(model, loss, points, config, checkpoint=path, progress=False)
    other = training.TrainConfig(steps=6, batch_size=32, warmup_steps=2, checkpoint_every=5, learning_rate=1e-2)
    with pytest.raises(ValueError, match="different training config"):
        training.train(model, loss, points, other, checkpoint=path, progress=False)


def test_model_checkpoint_round_trip_and_clear_errors(tmp_path):
    module = networks.build("MLP", KWARGS, seed=3)
    config = {"network": "MLP", "network_kwargs": KWARGS, "seed": 3}
    path = checkpoints.save_model(tmp_path / "m.msgpack", module, config)
    assert json.loads((tmp_path / "m.json").read_text())["format_version"] == checkpoints.FORMAT_VERSION
    loaded, config = checkpoints.load_model(path)
    x = np.ones((3, 2), np.float32)
    np.testing.assert_array_equal(np.asarray(module(x, 0.5)), np.asarray(loaded(x, 0.5)))
    assert config["seed"] == 3

    corrupt = tmp_path / "corrupt.msgpack"
    corrupt.write_bytes(path.read_bytes()[:200])
    with pytest.raises(checkpoints.CheckpointError, match="corrupt"):
        checkpoints.load_model(corrupt)
    foreign = tmp_path / "foreign.msgpack"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n not a checkpoint")
    with pytest.raises(checkpoints.CheckpointError):
        checkpoints.load_model(foreign)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoints.load_model(tmp_path / "missing.msgpack")
    wrong = networks.build("MLP", {**KWARGS, "width": 8}, seed=0)
    with pytest.raises(checkpoints.CheckpointError, match="shape"):
        checkpoints.load(path, nnx.state(wrong, nnx.Param))
    with pytest.raises(checkpoints.CheckpointError, match="missing"):
        checkpoints.load(path, {"other": np.zeros(3)})
    with pytest.raises(ValueError, match="network"):
        checkpoints.save_model(tmp_path / "x.msgpack", module, {})
