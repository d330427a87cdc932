"""The README's Python tour runs as written (so the first code a reader copies works)."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tour_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # diffusion: sample, invert, exact endpoint
    assert int(namespace["info"].nfe) == 10
    error = np.sqrt(np.mean((np.asarray(namespace["x0"]) - np.asarray(namespace["exact"])) ** 2))
    assert error < 0.05, error
    exec(compile("\n".join(blocks[1:]), str(README), "exec"), namespace)  # flows and editing
    assert namespace["eights"].shape == (6, 8, 8, 1)
