"""The frozen run configuration: every option of one run with its default resolved.

It is built in two steps, because the checks that need no JAX computation must run
before `jax.distributed` starts, and the defaults of --solver and --grid depend on the
model: `from_arguments` (the parsed options, checked, with the defaults of the mode) and
`with_model` (checked against the loaded model, with the solver and the grid chosen).
The argparse namespace is only read; run.json's "arguments" is `RunConfig.arguments()`.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib

from samplax import schedules, solvers
from samplax.cli.model import Model
from samplax.cli.options import DEFAULTS, SOLVER_SETTINGS, UNCONDITIONAL, UsageError, parse_seeds
from samplax.models import pretrained
from samplax.samplers import editing
from samplax.samplers.inputs import end_points
from samplax.solvers.grids import GRIDS

__all__ = ["REVERSIBLE_SOLVER", "RunConfig", "default_solver", "from_arguments", "with_model"]

REVERSIBLE_SOLVER = "reversible-heun"  # what --reversible runs


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The options of one run, one field per option of `parser()` in the same order.

    `solver` and `grid` are None until `with_model` chooses them; `seeds` is None unless
    sampling and `inject` None unless editing.
    """

    invert: tuple[str, ...] | None
    edit: tuple[str, ...] | None
    model: str
    solver: str | None
    steps: int | None  # None for adaptive solvers, which choose their own
    grid: str | None
    t_end: float | None
    eta: float | None
    tau: float | None
    churn: float | None
    diffusion: float | None
    snr: float | None
    noise_source: str | None
    guidance_scale: float | None  # None until with_model sets the default for the model
    label: int | str | None
    source_label: int | str | None
    inject: int | None
    reversible: bool
    dark_ink: bool
    seeds: tuple[int, ...] | None
    batch_size: int
    outdir: str
    force: bool
    resume: bool
    distributed: bool
    coordinator_address: str | None
    num_processes: int | None
    process_id: int | None
    no_progress: bool

    @property
    def mode(self) -> str:
        """ "sample", "invert" or "edit"."""
        return "edit" if self.edit else "invert" if self.invert else "sample"

    @property
    def inputs(self) -> tuple[str, ...]:
        """The INPUTs of --invert or --edit (empty when sampling)."""
        return self.edit or self.invert or ()

    def arguments(self) -> dict:
        """The resolved value of every option, keyed like the argparse namespace (run.json)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


def default_solver(schedule, mode: str = "sample") -> str:
    """The solver a run uses when --solver is not given.

    Args:
        schedule: the model's `samplax.schedules.Schedule`, or its registry name.
        mode: "sample", "invert" or "edit".

    Returns:
        "dpm++2m" for diffusion. For flows, whose log-SNR is infinite at both ends of the
        path (exponential integrators need t inside (0, 1)): "euler" for sampling and
        "rf-solver-2" (second order, as RF-Edit uses) for inversion and editing.
    """
    if isinstance(schedule, str):
        schedule = schedules.get(schedule)
    if schedule.is_flow:
        return "euler" if mode == "sample" else "rf-solver-2"
    return "dpm++2m"


def _mode(args: argparse.Namespace) -> str:
    return "edit" if args.edit else "invert" if args.invert else "sample"


def _check_mode_options(args: argparse.Namespace, mode: str) -> None:
    """Refuse options given in a mode they do not apply to."""
    misplaced = [
        ("--source-label", args.source_label is not None, mode != "edit", "--edit"),
        ("--inject", args.inject is not None, mode != "edit", "--edit"),
        ("--reversible", args.reversible, mode != "invert", "--invert"),
        ("--dark-ink", args.dark_ink, mode == "sample", "--invert and --edit"),
        ("--seeds", args.seeds is not None, mode != "sample", "sampling, not --" + mode),
        ("--resume", args.resume, mode != "sample", "sampling, not --" + mode),
        ("--distributed", args.distributed, mode != "sample", "sampling, not --" + mode),
    ]
    for option, given, wrong_mode, allowed in misplaced:
        if given and wrong_mode:
            raise UsageError(f"{option} applies to {allowed} only")


def _resolved(args: argparse.Namespace, mode: str) -> RunConfig:
    """The options with the defaults that depend on the mode (solver and grid not yet)."""
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(RunConfig)}
    default_model = pretrained.DEFAULT_EDITING if mode == "edit" else pretrained.DEFAULT_GENERATIVE
    seeds = (args.seeds or parse_seeds(DEFAULTS["seeds"])) if mode == "sample" else None
    inject = (args.steps if args.inject is None else args.inject) if mode == "edit" else None
    values.update(
        invert=None if args.invert is None else tuple(args.invert),
        edit=None if args.edit is None else tuple(args.edit),
        model=args.model or default_model,
        guidance_scale=args.guidance_scale,  # None: the default, which depends on the model (with_model)
        seeds=None if seeds is None else tuple(seeds),
        inject=inject,
        batch_size=args.batch_size or DEFAULTS["batch_size"],
    )
    return RunConfig(**values)


def _check_names(config: RunConfig) -> None:
    """The solver, grid and model must be known (the model a generative one)."""
    if config.solver is not None and config.solver not in solvers.names():
        raise UsageError(f"unknown --solver {config.solver!r}; choose one of {', '.join(solvers.names())}")
    if config.grid is not None and config.grid not in GRIDS:
        raise UsageError(f"unknown --grid {config.grid!r}; choose one of {', '.join(GRIDS)}")
    models = ", ".join(pretrained.GENERATIVE)
    if config.model not in pretrained.GENERATIVE:
        if config.model in pretrained.NAMES:
            raise UsageError(f"--model {config.model!r} is not a generative model; choose {models} or a path")
        if not pathlib.Path(config.model).is_file():
            raise UsageError(f"--model {config.model!r} is not one of {models} nor an existing checkpoint file")


def _check_values(config: RunConfig, args: argparse.Namespace) -> None:
    """Values that are wrong whatever the model (the output folder: `samplax.cli.outdir`)."""
    if config.guidance_scale is not None and config.guidance_scale < 0:
        raise UsageError(f"--guidance-scale must be >= 0, got {config.guidance_scale}")
    if config.label == UNCONDITIONAL and config.guidance_scale not in (None, 1.0):
        raise UsageError(f"--guidance-scale {config.guidance_scale:g} guides towards a label; with --label none there "
                         "is none (drop --guidance-scale, or give --label)")
    for option, label in (("--label", config.label), ("--source-label", config.source_label)):
        if label not in (None, UNCONDITIONAL) and label < 0:
            raise UsageError(f"{option} must be a class index >= 0 or 'none', got {label}")
    if config.mode == "edit" and config.label in (None, UNCONDITIONAL):
        raise UsageError("--edit needs --label, the target class")
    if config.mode == "edit" and config.inject > config.steps:
        raise UsageError(f"--inject must lie in 0-{config.steps} (--steps), got {config.inject}")
    if config.reversible and config.solver is not None:
        raise UsageError("--reversible chooses its own solver (reversible Heun); drop --solver")
    if not config.distributed and any(v is not None for v in (args.coordinator_address, args.num_processes,
                                                              args.process_id)):
        raise UsageError("--coordinator-address, --num-processes and --process-id need --distributed")
    if config.resume and config.force:
        raise UsageError("--resume finishes the run in --outdir, --force starts it afresh: give one of them")


def from_arguments(args: argparse.Namespace) -> RunConfig:
    """Check the parsed options without any JAX computation and resolve the mode's defaults.

    Args:
        args: the namespace of `parser().parse_args`; it is not modified.

    Returns:
        The configuration with `solver` and `grid` as given (None when not given).
        Raises `UsageError` for a bad option.
    """
    mode = _mode(args)
    _check_mode_options(args, mode)
    config = _resolved(args, mode)
    _check_names(config)
    _check_values(config, args)
    return config


def _choose_solver(config: RunConfig, model: Model):
    """The one place the solver is chosen: --reversible, else --solver, else the default."""
    if config.reversible:
        name = REVERSIBLE_SOLVER
    else:
        name = config.solver or default_solver(model.schedule, config.mode)
    solver = solvers.get(name)
    if solver.adaptive and config.mode != "sample":
        raise UsageError(f"--solver {name} is adaptive; --invert and --edit need a fixed-grid solver")
    if solver.stochastic and config.mode != "sample":
        raise UsageError(f"--solver {name} is stochastic; --invert and --edit run the probability-flow ODE")
    solver = _with_settings(config, name, solver)
    if config.mode == "edit":
        try:
            editing.check_solver(solver)
        except ValueError as error:
            raise UsageError(f"--solver {name}: {error}") from None
    if not solver.adaptive and config.steps < solver.min_steps():
        raise UsageError(f"--solver {name} needs --steps >= {solver.min_steps()}, got {config.steps}")
    return name, solver


def _with_settings(config: RunConfig, name: str, solver):
    """The solver with the settings given on the command line (--eta, --churn, ...), each
    refused for a solver that has no such field; --noise-source only for stochastic ones."""
    if config.noise_source is not None and not solver.stochastic:
        raise UsageError(f"--noise-source applies to stochastic solvers; --solver {name} is deterministic")
    fields = {field.name for field in dataclasses.fields(solver)}
    changes = {}
    for option, (field, _) in SOLVER_SETTINGS.items():
        value = getattr(config, option)
        if value is None:
            continue
        if field not in fields:
            having = [n for n in solvers.names() if field in {f.name for f in dataclasses.fields(solvers.get(n))}]
            raise UsageError(f"--{option} applies to {', '.join(having)}; not to --solver {name}")
        changes[field] = value
    if not changes:
        return solver
    try:
        return dataclasses.replace(solver, **changes)
    except ValueError as error:
        raise UsageError(f"--solver {name}: {error}") from None


def _check_labels(config: RunConfig, model: Model) -> None:
    """The classes asked for must be classes of the model; --edit needs a conditional flow."""
    known = f" (classes 0-{model.classes - 1})" if model.conditional else " (it is unconditional; use --label none)"
    for option, label in (("--label", config.label), ("--source-label", config.source_label)):
        if label not in (None, UNCONDITIONAL) and (not model.conditional or label >= model.classes):
            raise UsageError(f"{option} {label} is not a class of this model{known}")
    if not model.conditional and config.guidance_scale not in (None, 1.0):
        raise UsageError(f"--guidance-scale {config.guidance_scale:g} needs a class-conditional model; "
                         f"{config.model!r} is unconditional")
    if config.mode == "edit" and (model.prediction != "velocity" or not model.conditional):
        raise UsageError(
            "--edit needs a class-conditional flow model (velocity prediction), e.g. --model digits-flow; "
            f"{config.model!r} predicts {model.prediction!r}" + ("" if model.conditional else " and is unconditional")
        )


def with_model(config: RunConfig, model: Model):
    """Check the configuration against the loaded model and choose the solver and grid.

    Args:
        config: the result of `from_arguments`.
        model: the loaded model of `config.model`.

    Returns:
        (the final configuration, the solver object it names). Raises `UsageError`.
    """
    _check_labels(config, model)
    if config.guidance_scale is None:  # guidance by default only where there is a label to guide towards
        guided = config.mode == "sample" and model.conditional and config.label != UNCONDITIONAL
        config = dataclasses.replace(config, guidance_scale=DEFAULTS["sample_guidance_scale"] if guided else 1.0)
    name, solver = _choose_solver(config, model)
    try:
        end_points(model.schedule, None, config.t_end)
    except ValueError as error:
        raise UsageError(f"--t-end: {error}") from None
    if solver.adaptive:
        if config.grid is not None:
            raise UsageError(f"--grid applies to fixed-grid solvers; --solver {name} chooses its own steps")
        return dataclasses.replace(config, solver=name, steps=None), solver
    return dataclasses.replace(config, solver=name, grid=config.grid or model.schedule.default_grid), solver
