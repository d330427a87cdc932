"""The options of `samplax-sample`: the parser, the types of its values, and the one error
every later check raises. Parsing only reads the command line; defaults that depend on
the mode or the model are resolved by `samplax.cli.config`."""

from __future__ import annotations

import argparse
import math

from samplax.models import pretrained

__all__ = [
    "DEFAULTS", "MAX_SEEDS", "METHODS", "UNCONDITIONAL", "USAGE", "OneLineParser", "UsageError", "format_seeds",
    "parse_seeds", "parser",
]

USAGE = """\
`samplax-sample`: write images from a shipped or saved model, invert images to noise,
or edit them.

    samplax-sample                                    # 64 digits into ./samples
    samplax-sample --model digits-flow --solver heun --steps 8 --outdir flow
    samplax-sample --label 3 --seeds 0-15 --guidance-scale 3 --outdir threes
    samplax-sample --model outputs/my-model.msgpack --seeds 0,5,10-20 --outdir mine
    samplax-sample --edit digits:3:0-5 --label 8 --outdir three-to-eight
    samplax-sample --model digits-flow --invert threes/000003.png --label 3 --reversible --outdir inverted
    samplax-sample --model digits-flow --init-image digits:3:0-7 --strength 0.5 --label 8 --outdir img2img
    samplax-sample --model digits-flow --init-image digits:3:0-7 --mask left --outdir inpainted
    samplax-sample --model digits-flow --restore low/*.png --downsample 2 --steps 20 --outdir restored

Sampling: each sample's noise comes from its own seed (`fold_in(PRNGKey(0), seed)`), so
sample `i` is the same whatever the batch size, device count or process count. The batch
is sharded over all local devices; with --distributed, JAX's multi-process runtime is
initialised and each process samples its share of the seeds (seeds[rank::processes]).
Writes OUTDIR/{seed:06d}.png, OUTDIR/grid.png (upscaled for viewing) and OUTDIR/run.json;
OUTDIR/progress.json says which seeds are done and whether the run is complete, and
--resume finishes an interrupted run. One run at a time holds a folder.

Inversion (--invert INPUT...) runs the probability-flow ODE from each image to noise and
back: OUTDIR/noise.npz, OUTDIR/{name}.png (the round trip), grid.png and run.json (with
the round-trip errors). Editing (--edit INPUT... --label TARGET) inverts each image under
its source class and regenerates it under the target class, sharing attention values
(RF-Edit, `samplax.edit`): OUTDIR/{name}.png, grid.png (sources beside results), run.json.
img2img (--init-image INPUT... --strength S) noises each input to where the last
floor(S * steps) steps of the grid begin and solves from there (SDEdit); with --mask it
regenerates the masked region around the rest (inpainting). Restoration (--restore
INPUT... --method flowchef|dps|code) takes each input as an observation: its pixels
outside --mask, its --downsample box averages, or all of it (denoising). Both write
OUTDIR/{name}.png, grid.png and run.json.
An INPUT is an image file, a .npy array in [-1, 1], or digits:LABEL[:INDICES] (held-out
scikit-learn digits of one class).
"""

DEFAULTS = {"steps": 15, "sample_guidance_scale": 2.0, "seeds": "0-63", "batch_size": 64, "strength": 0.6,
            "resample": 1, "jump": 1, "noise_std": 0.05, "likelihood_scale": 4.0, "langevin_steps": 10}
UNCONDITIONAL = "none"  # the --label value that asks for no class
# The most seeds of one run: grid.png holds every sample, upscaled, in memory (4 KiB each,
# 400 MiB at the limit), and the seeds are held as a list; split larger runs over folders.
MAX_SEEDS = 100_000


class UsageError(ValueError):
    """A bad argument found after parsing; reported as one line with exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (and exit status 2); scripts/train.py uses it too."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_seeds(text: str) -> list[int]:
    """Seeds such as "0-63", "7" or "0,4,10-19" (ranges inclusive), in the given order.

    Args:
        text: the comma-separated seeds and inclusive ranges.

    Returns:
        The seeds in order; raises `argparse.ArgumentTypeError` on a malformed, negative,
        too large or repeated seed, or on more than `MAX_SEEDS` seeds (counted before the
        ranges are expanded, so a huge range fails at once).
    """
    ranges = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                low, high = part.split("-", 1) if not part.startswith("-") else (part, "")
                low, high = int(low), int(high)
                if high < low:
                    raise ValueError
                ranges.append((low, high))
            else:
                ranges.append((int(part), int(part)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid seeds {text!r}: use a list like 0-63 or 0,4,10-19") from None
    if min(low for low, _ in ranges) < 0 or max(high for _, high in ranges) >= 2**31:
        raise argparse.ArgumentTypeError(f"seeds must lie in [0, 2^31), got {text!r}")
    count = sum(high - low + 1 for low, high in ranges)
    if count > MAX_SEEDS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is {count} seeds; one run takes at most {MAX_SEEDS} (split it over several --outdir)"
        )
    seeds = [seed for low, high in ranges for seed in range(low, high + 1)]
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds must not repeat, got {text!r}")
    return seeds


def format_seeds(seeds) -> str:
    """Seeds in the syntax of `parse_seeds`, runs of consecutive seeds as ranges ("" for none)."""
    parts, seeds = [], list(seeds)
    start = 0
    for k in range(1, len(seeds) + 1):
        if k == len(seeds) or seeds[k] != seeds[k - 1] + 1:
            low, high = seeds[start], seeds[k - 1]
            parts.append(str(low) if low == high else f"{low}-{high}")
            start = k
    return ",".join(parts)


def _finite(text: str) -> float:
    """A finite float (nan and inf would only fail, or mislead, once the run is under way)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _integer_at_least(text: str, low: int, wanted: str) -> int:
    """`text` as an integer >= `low`, else an argparse error that says `wanted`."""
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
    return value


def _positive(text: str) -> int:
    return _integer_at_least(text, 1, "a positive integer")


def _non_negative(text: str) -> int:
    return _integer_at_least(text, 0, "an integer >= 0")


def _label(text: str):
    if text == UNCONDITIONAL:
        return UNCONDITIONAL
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a class index or 'none', got {text!r}") from None


def _add_mode_options(p: argparse.ArgumentParser) -> None:
    """The two modes besides sampling, and the options that belong to them."""
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--invert", nargs="+", metavar="INPUT",
                      help="invert these images to noise and sample them back "
                      "(image files, .npy arrays, digits:LABEL[:INDICES])")
    mode.add_argument("--edit", nargs="+", metavar="INPUT",
                      help="edit these images from --source-label to --label "
                      "(RF-Edit; needs a class-conditional flow model)")
    mode.add_argument("--init-image", nargs="+", metavar="INPUT",
                      help="img2img: noise these images part of the way (--strength) and sample them back "
                      "(SDEdit), or with --mask regenerate the masked region (inpainting)")
    mode.add_argument("--restore", nargs="+", metavar="INPUT",
                      help="restore these degraded images (--method; --mask, --downsample or neither for "
                      "missing pixels, low resolution or noise)")


METHODS = ("flowchef", "dps", "code")  # --restore's methods; the first is the default


def _add_editing_options(p: argparse.ArgumentParser) -> None:
    """The options of --init-image and --restore."""
    p.add_argument("--strength", type=_finite, default=None,
                   help="--init-image: the fraction of the grid's steps that is run, in (0, 1]; --restore "
                   f"--method code: the same, for the level CODE inverts to (default: {DEFAULTS['strength']})")
    p.add_argument("--mask", default=None,
                   help="--init-image/--restore: the region regenerated (missing): left, right, top, bottom, "
                   "random:FRACTION, or an image/.npy file, white or 1 where regenerated")
    p.add_argument("--resample", type=_positive, default=None,
                   help="--init-image with --mask: RePaint's r, solves of each block of --jump intervals (default: 1)")
    p.add_argument("--jump", type=_positive, default=None,
                   help="--init-image with --mask: RePaint's j, intervals noised back up per block (default: 1)")
    p.add_argument("--method", choices=METHODS, default=None,
                   help="--restore: flowchef (posterior guidance without the network's gradient), dps (with it) or "
                   f"code (blind: invert, Langevin steps, regenerate) (default: {METHODS[0]})")
    p.add_argument("--downsample", type=_positive, default=None,
                   help="--restore: the inputs are observed as FACTOR x FACTOR box averages (super-resolution)")
    p.add_argument("--noise-std", type=_finite, default=None,
                   help=f"--restore: the observation noise's standard deviation (default: {DEFAULTS['noise_std']})")
    p.add_argument("--likelihood-scale", type=_finite, default=None,
                   help="--restore (flowchef, dps): the weight of the observation's log-likelihood gradient "
                   f"(default: {DEFAULTS['likelihood_scale']})")
    p.add_argument("--langevin-steps", type=_non_negative, default=None,
                   help=f"--restore --method code: Langevin steps at the level (default: {DEFAULTS['langevin_steps']})")


# Options that set a field of the stochastic solvers: option -> (field, help).
SOLVER_SETTINGS = {
    "eta": ("eta", "the posterior noise of ddim-eta/ddpm (0 DDIM, 1 DDPM) or the SDE strength of dpm++*-sde"),
    "tau": ("tau", "sa-solver: the noise strength tau (eta = tau^2)"),
    "churn": ("churn", "edm-churn: S_churn, the total churn over the grid"),
    "diffusion": ("diffusion", "euler-maruyama: the noise scale relative to the reverse SDE (0: Euler on the ODE)"),
    "snr": ("snr", "pc: the Langevin corrector's signal-to-noise ratio"),
}


def _add_stochastic_options(p: argparse.ArgumentParser) -> None:
    """The settings of stochastic solvers and where their noise comes from."""
    for option, (_, text) in SOLVER_SETTINGS.items():
        p.add_argument(f"--{option}", type=_finite, default=None, help=text + " (default: the solver's)")
    p.add_argument("--noise-source", choices=("independent", "brownian"), default=None,
                   help="stochastic solvers: fresh normals at every step, or one Brownian path per seed that "
                   "stays the same when --steps changes (default: independent)")


def parser() -> argparse.ArgumentParser:
    """The argument parser of samplax-sample (every option is described in docs/cli.md).

    Returns:
        A parser whose errors are one line with exit status 2; it fills in no default
        that depends on the mode or the model (those are None until resolved).
    """
    p = OneLineParser(prog="samplax-sample", description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_mode_options(p)
    p.add_argument("--model", help=f"{', '.join(pretrained.GENERATIVE)}, a checkpoint path (.msgpack), or a "
                   "diffusers pipeline folder (unet/ and scheduler/, safetensors weights) "
                   f"(default: {pretrained.DEFAULT_EDITING} with --edit, else {pretrained.DEFAULT_GENERATIVE})")
    p.add_argument("--solver", help="solver registry name, see samplax.solvers.names() "
                   "(default: dpm++2m for diffusion; for flows euler, or rf-solver-2 with --invert/--edit)")
    p.add_argument("--steps", type=_positive, default=DEFAULTS["steps"], help="grid intervals (default: %(default)s)")
    p.add_argument("--grid", help="time grid: logsnr, uniform, quadratic, karras, shifted "
                   "(default: logsnr for diffusion, uniform for flow)")
    p.add_argument("--t-end", type=_finite, default=None, help="final time (default: the schedule's t_min)")
    _add_stochastic_options(p)
    _add_editing_options(p)
    p.add_argument("--guidance-scale", type=_finite, default=None,
                   help=f"classifier-free guidance weight, 1 for none (default: {DEFAULTS['sample_guidance_scale']} "
                   "for sampling, 1 with --invert/--edit)")
    p.add_argument("--label", type=_label, default=None,
                   help="sampling: class of every sample, or 'none' (default: seed mod the number of classes); "
                   "--edit: the target class; "
                   "--invert: the class to invert under (default: the input's digits:LABEL, else none)")
    p.add_argument("--source-label", type=_label, default=None,
                   help="--edit: the class of the inputs (default: LABEL of digits:LABEL inputs)")
    p.add_argument("--inject", type=_non_negative, default=None,
                   help="--edit: steps whose attention values are shared, 0 to --steps (default: --steps)")
    p.add_argument("--reversible", action="store_true",
                   help="--invert: use reversible Heun, whose round trip is exact to rounding "
                   "(noise.npz then also holds its companion state)")
    p.add_argument("--dark-ink", action="store_true",
                   help="--invert/--edit: input images have dark strokes on a light background (scans); "
                   "outputs are written the same way")
    p.add_argument("--seeds", type=parse_seeds, default=None,
                   help=f"sampling: seeds such as 0-63 or 0,4,10-19 (default: {DEFAULTS['seeds']})")
    p.add_argument("--batch-size", type=_positive, default=None,
                   help=f"images per batch, a multiple of the local device count (default: {DEFAULTS['batch_size']})")
    p.add_argument("--outdir", default="samples",
                   help="output folder; must not exist unless --force or --resume (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="write into an existing output folder, replacing files")
    p.add_argument("--resume", action="store_true",
                   help="sampling: finish an interrupted run in --outdir (same options): only the seeds its "
                   "progress.json does not list as done")
    p.add_argument("--distributed", action="store_true",
                   help="sampling: initialise jax.distributed; each process samples seeds[rank::processes]")
    p.add_argument("--coordinator-address", help="with --distributed: host:port of process 0 (default: auto-detect)")
    p.add_argument("--num-processes", type=_positive,
                   help="with --distributed: number of processes (default: auto-detect)")
    p.add_argument("--process-id", type=int, help="with --distributed: this process's rank (default: auto-detect)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p
