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
from samplax.cli.masks import regenerated_region
from samplax.cli.model import Model
from samplax.cli.options import DEFAULTS, METHODS, SOLVER_SETTINGS, UNCONDITIONAL, UsageError, parse_seeds
from samplax.models import pretrained
from samplax.samplers import editing, img2img
from samplax.samplers.inputs import end_points, resolve_grid
from samplax.samplers.sampling import check_plan
from samplax.solvers.grids import GRIDS, time_grid

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
    init_image: tuple[str, ...] | None
    restore: tuple[str, ...] | None
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
    strength: float | None  # None unless --init-image without --mask, or --restore --method code
    mask: str | None
    resample: int | None  # None unless --init-image with --mask, like jump
    jump: int | None
    method: str | None  # None unless --restore, like the options below
    downsample: int | None
    noise_std: float | None
    likelihood_scale: float | None
    langevin_steps: int | None
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
        """ "sample", "invert", "edit", "img2img" (--init-image) or "restore"."""
        return _mode(self)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The INPUTs of the mode (empty when sampling)."""
        return self.edit or self.invert or self.init_image or self.restore or ()

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
        path (exponential integrators need t inside (0, 1)): "euler" for sampling, img2img
        and restoration, and "rf-solver-2" (second order, as RF-Edit uses) for inversion
        and editing.
    """
    if isinstance(schedule, str):
        schedule = schedules.get(schedule)
    if schedule.is_flow:
        return "rf-solver-2" if mode in ("invert", "edit") else "euler"
    return "dpm++2m"


# Each mode besides sampling: the option that selects it (its INPUTs) and that option's field.
MODE_OPTIONS = {"invert": ("--invert", "invert"), "edit": ("--edit", "edit"),
                "img2img": ("--init-image", "init_image"), "restore": ("--restore", "restore")}


def _mode(options) -> str:
    """The mode of parsed options or of a RunConfig: the mode option given, else "sample"."""
    return next((mode for mode, (_, field) in MODE_OPTIONS.items() if getattr(options, field)), "sample")


def _check_mode_options(args: argparse.Namespace, mode: str) -> None:
    """Refuse options given in a mode (or with a --method) they do not apply to."""
    code = mode == "restore" and args.method == "code"
    inpainting = mode == "img2img" and args.mask is not None
    not_sampling = "sampling, not " + MODE_OPTIONS.get(mode, ("",))[0]
    misplaced = [
        ("--source-label", args.source_label is not None, mode != "edit", "--edit"),
        ("--inject", args.inject is not None, mode != "edit", "--edit"),
        ("--reversible", args.reversible, mode != "invert", "--invert"),
        ("--dark-ink", args.dark_ink, mode == "sample", "--invert, --edit, --init-image and --restore"),
        ("--seeds", args.seeds is not None, mode != "sample", not_sampling),
        ("--resume", args.resume, mode != "sample", not_sampling),
        ("--distributed", args.distributed, mode != "sample", not_sampling),
        ("--strength", args.strength is not None, not (mode == "img2img" and not inpainting or code),
         "--init-image without --mask (inpainting runs the whole grid) and --restore --method code"),
        ("--mask", args.mask is not None, mode not in ("img2img", "restore") or code,
         "--init-image and --restore with --method flowchef or dps"),
        ("--resample", args.resample is not None, not inpainting, "--init-image with --mask"),
        ("--jump", args.jump is not None, not inpainting, "--init-image with --mask"),
        ("--method", args.method is not None, mode != "restore", "--restore"),
        ("--downsample", args.downsample is not None, mode != "restore" or code,
         "--restore with --method flowchef or dps"),
        ("--noise-std", args.noise_std is not None, mode != "restore" or code,
         "--restore with --method flowchef or dps (CODE is blind to the degradation)"),
        ("--likelihood-scale", args.likelihood_scale is not None, mode != "restore" or code,
         "--restore with --method flowchef or dps"),
        ("--langevin-steps", args.langevin_steps is not None, not code, "--restore --method code"),
    ]
    for option, given, wrong_mode, allowed in misplaced:
        if given and wrong_mode:
            raise UsageError(f"{option} applies to {allowed} only")


def _editing_defaults(args: argparse.Namespace, mode: str) -> dict:
    """The defaults of the --init-image and --restore options in the mode (None elsewhere)."""
    code = mode == "restore" and (args.method or METHODS[0]) == "code"
    inpainting = mode == "img2img" and args.mask is not None
    guided = mode == "restore" and not code

    def default(name, applies):
        value = getattr(args, name)
        return (DEFAULTS[name] if value is None else value) if applies else None

    return {
        "strength": default("strength", mode == "img2img" and not inpainting or code),
        "resample": default("resample", inpainting),
        "jump": default("jump", inpainting),
        "method": (args.method or METHODS[0]) if mode == "restore" else None,
        "noise_std": default("noise_std", guided),
        "likelihood_scale": default("likelihood_scale", guided),
        "langevin_steps": default("langevin_steps", code),
    }


def _resolved(args: argparse.Namespace, mode: str) -> RunConfig:
    """The options with the defaults that depend on the mode (solver and grid not yet)."""
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(RunConfig)}
    default_model = pretrained.DEFAULT_EDITING if mode == "edit" else pretrained.DEFAULT_GENERATIVE
    seeds = (args.seeds or parse_seeds(DEFAULTS["seeds"])) if mode == "sample" else None
    inject = (args.steps if args.inject is None else args.inject) if mode == "edit" else None
    values.update(
        **{name: None if getattr(args, name) is None else tuple(getattr(args, name))
           for name in ("invert", "edit", "init_image", "restore")},
        **_editing_defaults(args, mode),
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
        if pathlib.Path(config.model).is_dir():
            if config.mode != "sample":
                raise UsageError(f"--model {config.model!r} is a folder (a diffusers checkpoint), which samples only; "
                                 f"{MODE_OPTIONS[config.mode][0]} needs {models} or a samplax checkpoint")
        elif not pathlib.Path(config.model).is_file():
            raise UsageError(f"--model {config.model!r} is not one of {models}, an existing checkpoint file nor a "
                             "diffusers folder")


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
    _check_editing_values(config)
    if config.reversible and config.solver is not None:
        raise UsageError("--reversible chooses its own solver (reversible Heun); drop --solver")
    if not config.distributed and any(v is not None for v in (args.coordinator_address, args.num_processes,
                                                              args.process_id)):
        raise UsageError("--coordinator-address, --num-processes and --process-id need --distributed")
    if config.resume and config.force:
        raise UsageError("--resume finishes the run in --outdir, --force starts it afresh: give one of them")


def _check_editing_values(config: RunConfig) -> None:
    """The values of the --init-image and --restore options (those that do not apply are None)."""
    if config.strength is not None:
        try:
            img2img.begin_index(config.steps, config.strength)
        except ValueError as error:
            raise UsageError(f"--strength: {error}") from None
    if config.mask is not None:
        try:
            regenerated_region(config.mask, pretrained.IMAGE_SHAPE)
        except ValueError as error:
            raise UsageError(str(error)) from None
    if config.mask is not None and config.downsample is not None:
        raise UsageError("--restore observes either the pixels outside --mask or --downsample's box averages: "
                         "give one of them")
    height, width = pretrained.IMAGE_SHAPE[:2]
    if config.downsample is not None and (config.downsample < 2 or height % config.downsample
                                          or width % config.downsample):
        divisors = [f for f in range(2, min(height, width) + 1) if height % f == 0 and width % f == 0]
        raise UsageError(f"--downsample must be a factor > 1 that divides the {height}x{width} images "
                         f"({', '.join(map(str, divisors))}), got {config.downsample}")
    if config.noise_std is not None and config.noise_std <= 0:
        raise UsageError(f"--noise-std must be > 0 (a small value for an observation without noise), "
                         f"got {config.noise_std}")
    if config.likelihood_scale is not None and config.likelihood_scale < 0:
        raise UsageError(f"--likelihood-scale must be >= 0, got {config.likelihood_scale}")


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
    option = MODE_OPTIONS.get(config.mode, ("",))[0]
    if solver.adaptive and config.mode != "sample":
        raise UsageError(f"--solver {name} is adaptive; {option} needs a fixed-grid solver")
    along_the_ode = config.mode in ("invert", "edit") or config.method == "code"
    if solver.stochastic and along_the_ode:
        raise UsageError(f"--solver {name} is stochastic; {option}{' --method code' * (config.method == 'code')} "
                         "runs the probability-flow ODE")
    if solver.reversible and config.mode in ("img2img", "restore"):
        raise UsageError(f"--solver {name} is reversible (it carries a companion state); {option} needs another "
                         "fixed-grid solver")
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
    if model.conditional and model.null_label is None and config.label == UNCONDITIONAL:
        raise UsageError(f"--label none: {config.model!r} has no null label (a class meaning 'no class'); give "
                         f"a class in 0-{model.classes - 1}")
    if model.null_label is None and config.guidance_scale not in (None, 1.0):
        raise UsageError(f"--guidance-scale {config.guidance_scale:g}: {config.model!r} has no null label (a class "
                         "meaning 'no class'), so classifier-free guidance is not defined for it")
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
        labelled = config.label not in (None, UNCONDITIONAL)
        guided = model.null_label is not None and (config.mode == "sample" and config.label != UNCONDITIONAL
                                        or config.mode == "img2img" and labelled)
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
    config = dataclasses.replace(config, solver=name, grid=config.grid or model.schedule.default_grid)
    _check_grids(config, model, solver)
    return config, solver


def _solved_grids(config: RunConfig, model: Model, solver) -> list[tuple[str, object]]:
    """(what, times) for every solve the run makes, in the direction it runs (increasing
    times invert): the grids the runners of each mode build from the same options."""
    try:
        times = resolve_grid(model.schedule, solver, config.steps, config.grid, None, config.t_end).concrete(
            model.schedule)
    except ValueError as error:
        raise UsageError(f"--grid {config.grid} cannot be built on {config.model!r}'s schedule: {error}") from None
    if config.mode in ("invert", "edit"):
        return [("the inversion", times[::-1]), ("the sampling", times)]
    if config.mode == "img2img" and config.mask is None:
        return [("the sampling", times[img2img.begin_index(config.steps, config.strength):])]
    if config.method == "code":  # as samplax.code builds it from the level of restoration._code_level
        begin = img2img.begin_index(config.steps, config.strength)
        times = time_grid(model.schedule, config.steps - begin, config.grid, times[begin], times[-1])
        return [("the inversion", times[::-1]), ("the regeneration", times)]
    return [("the sampling", times)]


def _check_grids(config: RunConfig, model: Model, solver) -> None:
    """Refuse, before any network evaluation, a solver that cannot step the run's grids
    (an exponential integrator where lambda = log(alpha / sigma) is infinite)."""
    for what, times in _solved_grids(config, model, solver):
        try:
            check_plan(model.schedule, solver, times)
        except ValueError:
            raise UsageError(
                f"--solver {config.solver} cannot step {what} from t = {float(times[0]):g} to t = "
                f"{float(times[-1]):g} on {config.model!r}: its coefficients are infinite where lambda = "
                f"log(alpha / sigma) is (t = 1 and t = 0 on a flow); {_remedy(config, model, solver)}"
            ) from None


def _steppable(config: RunConfig, model: Model, solver) -> bool:
    """Whether the solver can step every grid of the run `config` describes."""
    try:
        for _, times in _solved_grids(config, model, solver):
            check_plan(model.schedule, solver, times)
    except (ValueError, UsageError):
        return False
    return True


def _remedy(config: RunConfig, model: Model, solver) -> str:
    """--t-end > 0 where that alone makes the grids steppable, else the flow solvers."""
    if config.t_end in (None, 0.0) and _steppable(dataclasses.replace(config, t_end=1e-3), model, solver):
        return "give --t-end > 0 (such as 1e-3), or choose a flow solver"
    named = {name: solvers.get(name) for name in solvers.names()}
    flow_solvers = [name for name, flow in named.items() if flow.prediction == "velocity"
                    and not (flow.adaptive or flow.stochastic or flow.reversible)]
    return f"choose a flow solver ({', '.join(flow_solvers)})"
