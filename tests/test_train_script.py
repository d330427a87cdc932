"""scripts/train.py end to end on a tiny UNet: the exported model records its command and
network, loads back, and has the attention blocks asked for."""

import importlib.util
import json
import pathlib

import pytest

from samplax.models import pretrained

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "train.py"


def _train_module():
    spec = importlib.util.spec_from_file_location("train_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_flow_model_with_full_resolution_attention(tmp_path):
    # One level of 8 channels: the compiled training step costs half that of 8,16 (which
    # levels get attention is checked on a two-level UNet in test_models_networks.py).
    out = tmp_path / "tiny-flow.msgpack"
    argv = ["flow", "--steps", "3", "--warmup-steps", "1", "--batch-size", "8", "--widths", "8",
            "--attention-levels", "0", "--checkpoint-every", "2", "--no-progress", "--out", str(out),
            "--checkpoint", str(tmp_path / "state.msgpack")]
    assert _train_module().main(argv) == 0
    config = json.loads(out.with_suffix(".json").read_text())
    assert config["network_kwargs"]["attention_levels"] == [0] and config["prediction"] == "velocity"
    assert "--attention-levels 0" in config["command"]
    module, _ = pretrained.load(out)
    assert module.attention_names() == ["down0.0", "middle", "up0.0", "up0.1"]  # level 0 and the middle


def test_bad_attention_levels_are_refused(capsys):
    with pytest.raises(SystemExit):
        _train_module().parser().parse_args(["flow", "--out", "x.msgpack", "--attention-levels", "a"])
    assert "levels such as 0 or 0,1" in capsys.readouterr().err


def test_fokker_planck_options_are_checked(capsys, tmp_path):
    out = str(tmp_path / "x.msgpack")
    for argv, message in (
        (["flow", "--out", out, "--fokker-planck-weight", "1"], "diffusion task only"),
        (["diffusion", "--out", out, "--fokker-planck-weight", "-1"], "must be >= 0"),
        (["diffusion", "--out", out, "--fokker-planck-samples", "0"], "positive"),
    ):
        with pytest.raises(SystemExit):
            _train_module().main(argv)
        assert message in capsys.readouterr().err
