"""Every notebook runs from start to finish in its fast mode (SAMPLAX_FAST=1)."""

import os
import pathlib
import subprocess
import sys

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.py"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs(path, tmp_path):
    environment = dict(os.environ, SAMPLAX_FAST="1", MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_paired_with_its_ipynb(path):
    """Each percent script has an .ipynb twin with the same cells and no stored outputs
    (edit either and run `jupytext --sync notebooks/*.py`)."""
    import jupytext

    twin = path.with_suffix(".ipynb")
    assert twin.is_file(), f"{twin.name} is missing: run jupytext --sync {path}"
    script, notebook = jupytext.read(path), jupytext.read(twin)
    assert [(c.cell_type, c.source) for c in script.cells] == [(c.cell_type, c.source) for c in notebook.cells]
    assert all(not cell.get("outputs") for cell in notebook.cells)
