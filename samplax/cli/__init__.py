"""`samplax-sample` (also `python -m samplax`, `python scripts/sample.py`): sample, invert
(--invert) or edit (--edit) images with a shipped or saved model; see docs/cli.md.

Modules, in the order a run uses them:
    options     the parser and the types of the option values
    config      the frozen run configuration (defaults resolved, checked), run.json's arguments
    model       the loaded model and the one way to build its Denoiser
    inputs      reading the images given to --invert/--edit
    outdir      the output folder: claimed for the run, progress.json, --resume
    sampling, inversion, editing    one runner per mode (transform: what the last two share)
    images      pixels, PNG files and the grid.png mosaics
    records     run.json and noise.npz
    command     main: start-up (--distributed), dispatch, exit statuses
"""

from samplax.cli.command import main
from samplax.cli.config import default_solver
from samplax.cli.options import parse_seeds, parser

__all__ = ["default_solver", "main", "parse_seeds", "parser"]
