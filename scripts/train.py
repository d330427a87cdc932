"""Train the shipped digits models: a VP diffusion model (noise prediction, DDPM discrete
schedule), a rectified-flow model (velocity) and the classifier used by the metrics.

    python scripts/train.py diffusion --steps 20000 --out samplax/models/pretrained/digits-diffusion.msgpack
    python scripts/train.py flow --steps 20000 --out samplax/models/pretrained/digits-flow.msgpack
    python scripts/train.py classifier --steps 3000 --out samplax/models/pretrained/digits-classifier.msgpack

The training state is checkpointed every --checkpoint-every steps to --checkpoint (default
outputs/NAME.train.msgpack for --out NAME.msgpack); running the same command again resumes
from it. The
exported model records the exact command, seed, final loss and training time in its config.
A checkpoint that cannot be resumed (corrupt, or from other settings) and a file that
cannot be written are one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import sys
import time

import numpy as np

TASKS = ("diffusion", "flow", "classifier")


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected levels such as 0 or 0,1, got {text!r}") from None
    if any(level < 0 for level in levels):
        raise argparse.ArgumentTypeError(f"levels must be >= 0, got {text!r}")
    return levels


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 32,64, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return widths


def parser() -> argparse.ArgumentParser:
    from samplax.cli.options import OneLineParser

    p = OneLineParser(prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=TASKS, help="which model to train")
    p.add_argument("--out", required=True, help="model file to write (.msgpack; a .json config goes beside it)")
    p.add_argument("--steps", type=int, default=20_000, help="optimiser steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=128, help="(default: %(default)s)")
    p.add_argument("--learning-rate", type=float, default=2e-3, help="peak AdamW learning rate (default: %(default)s)")
    p.add_argument("--warmup-steps", type=int, default=200, help="(default: %(default)s)")
    p.add_argument("--ema-decay", type=float, default=0.999, help="(default: %(default)s)")
    p.add_argument("--widths", type=_widths, default=(32, 64), help="UNet channels per level (default: 32,64)")
    p.add_argument("--attention-levels", type=_levels, default=(),
                   help="UNet levels (0 = full resolution) with self-attention after each block, besides the "
                   "middle one, e.g. 0 or 0,1 (default: none)")
    p.add_argument("--label-dropout", type=float, default=0.1,
                   help="null-label probability for guidance (default: %(default)s)")
    p.add_argument("--time-density", choices=("uniform", "logit-normal"), default="logit-normal",
                   help="flow-matching time density (default: %(default)s)")
    p.add_argument("--fokker-planck-weight", type=float, default=0.0,
                   help="weight of the Fokker-Planck penalty on the learned score (diffusion only; default: 0, off)")
    p.add_argument("--fokker-planck-divergence", choices=("exact", "hutchinson"), default="hutchinson",
                   help="how the penalty takes the score's divergence (default: %(default)s)")
    p.add_argument("--fokker-planck-samples", type=int, default=16,
                   help="samples of each batch the penalty is evaluated on; it differentiates the network three "
                   "times (default: %(default)s)")
    p.add_argument("--checkpoint", help="training checkpoint to save and resume (default: outputs/NAME.train.msgpack)")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _network(task: str, args) -> tuple[str, dict]:
    if task == "classifier":
        return "Classifier", {"channels": 1, "width": 32, "features": 128, "num_classes": 10, "image_size": 8}
    return "UNet", {
        "channels": 1,
        "widths": list(args.widths),
        "blocks_per_level": 1,
        "attention_levels": list(args.attention_levels),
        "heads": 1,
        "groups": 8,
        "time_features": 32,
        # DDPM step indices run over [0, 999]; flow time over [0, 1].
        "time_scale": 1.0 if task == "diffusion" else 1000.0,
        "num_classes": 10,
    }


def main(argv=None) -> int:
    """Run train.py: 0 done; 2 a bad argument; 1 a failure such as a corrupt checkpoint
    (one line on stderr)."""
    args = parser().parse_args(argv)
    out = pathlib.Path(args.out)
    if out.suffix != ".msgpack":
        parser().error(f"--out must end in .msgpack, got {args.out!r}")
    if args.fokker_planck_weight != 0.0 and args.task != "diffusion":
        parser().error("--fokker-planck-weight applies to the diffusion task only")
    if args.fokker_planck_weight < 0.0 or args.fokker_planck_samples < 1:
        parser().error("--fokker-planck-weight must be >= 0 and --fokker-planck-samples positive")

    from samplax.models import training

    try:
        config = training.TrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            warmup_steps=args.warmup_steps,
            ema_decay=args.ema_decay,
            seed=args.seed,
            checkpoint_every=args.checkpoint_every,
        )
    except ValueError as error:
        parser().error(str(error))
    try:
        return _train(args, config, out, argv)
    except (ValueError, OSError) as error:  # a CheckpointError is a ValueError
        print(f"train.py: error: {error}", file=sys.stderr)
        return 1


def _train(args: argparse.Namespace, config, out: pathlib.Path, argv) -> int:
    """Train with `config`, export the EMA model to `out` and print its summary as JSON."""
    import flax.nnx as nnx
    import jax
    import jax.numpy as jnp

    from samplax.models import checkpoints, data, losses, networks, training
    from samplax.schedules import VPDiscrete

    checkpoint = pathlib.Path(args.checkpoint or pathlib.Path("outputs") / (out.stem + ".train.msgpack"))
    if checkpoint.exists():
        checkpoints.read_config(checkpoint)  # a corrupt checkpoint fails before any work
    train_set = data.digits("train")
    network, network_kwargs = _network(args.task, args)
    model = networks.build(network, network_kwargs, seed=args.seed)
    if args.task == "diffusion":
        schedule = VPDiscrete.ddpm_linear()
        loss = losses.denoising_loss(
            schedule, "noise", "discrete", label_dropout=args.label_dropout, null_label=10,
            fokker_planck_weight=args.fokker_planck_weight, fokker_planck_divergence=args.fokker_planck_divergence,
            fokker_planck_samples=args.fokker_planck_samples,
        )
        spec = {"schedule": "ddpm", "prediction": "noise", "time_input": "discrete", "null_label": 10}
    elif args.task == "flow":
        loss = losses.flow_matching_loss(args.time_density, label_dropout=args.label_dropout, null_label=10)
        spec = {"schedule": "rectified-flow", "prediction": "velocity", "time_input": "continuous", "null_label": 10}
    else:
        loss = training.cross_entropy_loss
        spec = {}
    metadata = {
        "network": network,
        "network_kwargs": network_kwargs,
        "task": args.task,
        **spec,
        "command": "python scripts/train.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "seed": args.seed,
    }
    started = time.perf_counter()
    result = training.train(
        model,
        loss,
        {"x": train_set.images, "label": train_set.labels},
        config,
        checkpoint=checkpoint,
        metadata=metadata,
        progress=not args.no_progress,
    )
    exported = {
        **metadata,
        "training": {**vars(config), "final_loss": result.losses[-1] if result.losses else None,
                     "seconds_this_run": round(time.perf_counter() - started, 1)},
        "jax_version": jax.__version__,
        "parameters": int(sum(np.size(p) for p in jax.tree.leaves(nnx.state(result.ema, nnx.Param)))),
    }
    if args.task == "classifier":
        test = data.digits("test")
        logits = result.ema(jnp.asarray(test.images))
        exported["test_accuracy"] = float(np.mean(np.argmax(np.asarray(logits), axis=1) == test.labels))
    path = checkpoints.save_model(out, result.ema, exported)
    print(json.dumps({"model": str(path), **{k: exported[k] for k in ("parameters",)}, "training": exported["training"],
                      **({"test_accuracy": exported["test_accuracy"]} if "test_accuracy" in exported else {})}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
