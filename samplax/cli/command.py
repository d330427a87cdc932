"""`main`: parse, check and resolve the options, start the distributed runtime, load the
model, claim the output folder, run the mode's runner and write run.json; errors become
one line and an exit status."""

from __future__ import annotations

import pathlib
import sys

import jax

from samplax.cli import outdir
from samplax.cli.config import RunConfig, from_arguments, with_model
from samplax.cli.editing import run_edit
from samplax.cli.img2img import run_img2img
from samplax.cli.inversion import run_invert
from samplax.cli.model import Model
from samplax.cli.options import UsageError, parser
from samplax.cli.records import write_run_record
from samplax.cli.restoration import run_restore
from samplax.cli.sampling import run_sample

__all__ = ["main"]

PROG = "samplax-sample"
RUNNERS = {"sample": run_sample, "invert": run_invert, "edit": run_edit, "img2img": run_img2img,
           "restore": run_restore}


def _start_distributed(config: RunConfig) -> None:
    """With --distributed, start JAX's multi-process runtime (before any JAX computation);
    options not given are auto-detected by `jax.distributed.initialize`."""
    if not config.distributed:
        return
    options = {
        "coordinator_address": config.coordinator_address,
        "num_processes": config.num_processes,
        "process_id": config.process_id,
    }
    jax.distributed.initialize(**{k: v for k, v in options.items() if v is not None})


def _run(config: RunConfig) -> tuple[RunConfig, str | None]:
    """Start up, load the model, resolve the solver and grid, claim the output folder, run
    the mode and write run.json (on process 0).

    Returns:
        (the final configuration, what was written for the closing line, or None on the
        processes other than 0 of a distributed run).
    """
    _start_distributed(config)
    model = Model.load(config.model)
    config, solver = with_model(config, model)
    rank, processes = jax.process_index(), jax.process_count()
    with outdir.claimed(config, rank, processes, model.weights_sha256) as folder:
        outcome = RUNNERS[config.mode](config, model, solver, folder)
        if outcome is None:
            return config, None
        record, written = outcome
        write_run_record(config, record)
        folder.finish()
    return config, written


def _one_line(error: BaseException, text: str | None = None) -> str:
    """The error (or `text`) and its notes (what a failed run left behind) on one line."""
    return "; ".join([text or str(error), *getattr(error, "__notes__", ())]).replace("\n", " ")


def main(argv=None) -> int:
    """Run samplax-sample.

    Args:
        argv: the arguments (default: the process's).

    Returns:
        The exit status: 0 done; 2 a bad argument (one line on stderr, nothing written);
        1 a failure while computing or writing (one line on stderr, saying what the
        interrupted run left; a folder the run made is removed if it holds no image);
        130 interrupted (Ctrl-C).
    """
    args = parser().parse_args(argv)
    try:
        config = from_arguments(args)
        outdir.check(config)
        config, written = _run(config)
    except UsageError as error:
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError, ValueError, TypeError, MemoryError) as error:
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:
        print(f"{PROG}: {_one_line(error, 'interrupted')}", file=sys.stderr)
        return 130
    if written is not None:  # None: a process other than 0 of a distributed run
        print(f"wrote {written}, grid.png and run.json to {pathlib.Path(config.outdir)}/")
    return 0
