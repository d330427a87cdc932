"""--distributed: two processes on localhost (CPU) each sample their share of the seeds,
and together write exactly the images of a single-process run."""

import os
import socket
import subprocess
import sys

import numpy as np
from PIL import Image
from tiny_models import save_tiny

from samplax import cli


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_share_the_seeds(tmp_path):
    model = save_tiny(tmp_path / "tiny.msgpack", "diffusion", seed=2)
    common = ["--model", model, "--seeds", "0-4", "--steps", "3", "--batch-size", "2", "--no-progress"]
    address = f"localhost:{_free_port()}"
    env = {**os.environ, "XLA_FLAGS": ""}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "samplax", *common, "--outdir", str(tmp_path / "multi"), "--distributed",
             "--coordinator-address", address, "--num-processes", "2", "--process-id", str(rank)],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    for p, (_, err) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    record = __import__("json").loads((tmp_path / "multi" / "run.json").read_text())
    assert record["processes"] == 2 and record["rank"] == 0

    assert cli.main([*common, "--outdir", str(tmp_path / "single")]) == 0
    for seed in range(5):
        name = f"{seed:06d}.png"
        a = np.asarray(Image.open(tmp_path / "multi" / name))
        b = np.asarray(Image.open(tmp_path / "single" / name))
        np.testing.assert_array_equal(a, b)
    grid_multi = np.asarray(Image.open(tmp_path / "multi" / "grid.png"))
    grid_single = np.asarray(Image.open(tmp_path / "single" / "grid.png"))
    np.testing.assert_array_equal(grid_multi, grid_single)
