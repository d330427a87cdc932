"""`main`: parse, check and resolve the options, start the distributed runtime, load the
model, run the mode's runner and write run.json; errors become one line and an exit status."""

from __future__ import annotations

import pathlib
import sys

from samplax.cli.config import RunConfig, from_arguments, with_model
from samplax.cli.editing import run_edit
from samplax.cli.inversion import run_invert
from samplax.cli.model import Model
from samplax.cli.options import UsageError, parser
from samplax.cli.records import write_run_record
from samplax.cli.sampling import run_sample

__all__ = ["main"]

PROG = "samplax-sample"
RUNNERS = {"sample": run_sample, "invert": run_invert, "edit": run_edit}


def _start_distributed(config: RunConfig) -> None:
    """With --distributed, start JAX's multi-process runtime (before any JAX computation);
    options not given are auto-detected by `jax.distributed.initialize`."""
    if not config.distributed:
        return
    import jax

    options = {
        "coordinator_address": config.coordinator_address,
        "num_processes": config.num_processes,
        "process_id": config.process_id,
    }
    jax.distributed.initialize(**{k: v for k, v in options.items() if v is not None})


def _run(config: RunConfig):
    """Start up, load the model, resolve the solver and grid, and run the mode.

    Returns:
        (the final configuration, the runner's (record, written) or None).
    """
    _start_distributed(config)
    model = Model.load(config.model)
    config, solver = with_model(config, model)
    return config, RUNNERS[config.mode](config, model, solver)


def main(argv=None) -> int:
    """Run samplax-sample.

    Args:
        argv: the arguments (default: the process's).

    Returns:
        The exit status: 0 done, 2 a bad argument (one line on stderr, nothing written),
        1 a failure while computing (one line on stderr).
    """
    args = parser().parse_args(argv)
    try:
        config, outcome = _run(from_arguments(args))
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError, ValueError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    if outcome is None:  # a process other than 0 of a distributed run
        return 0
    record, written = outcome
    write_run_record(config, record)
    print(f"wrote {written}, grid.png and run.json to {pathlib.Path(config.outdir)}/")
    return 0
