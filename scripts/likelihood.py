"""Bits per dimension of a shipped or saved generative model on the held-out digits.

    python scripts/likelihood.py digits-diffusion
    python scripts/likelihood.py digits-flow --repeats 3 --json outputs/digits-flow-bpd.json
    python scripts/likelihood.py path/to/model.msgpack --divergence exact

The digits have 17 grey levels (0..16, seen by the models as level / 8 - 1); each pass
dequantises them uniformly and integrates the probability-flow ODE with
`samplax.bits_per_dim(levels=17)`, whose docstring states the offset. With several
repeats (fresh dequantisation and probes each, as score_sde's five passes over the test
set) the mean and its standard error over all of them are reported. A class-conditional
model is evaluated unconditionally (its null label).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

LEVELS = 17


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="likelihood.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("model", help="a shipped model name (digits-diffusion, digits-flow, ...) or a model file")
    p.add_argument("--divergence", choices=("hutchinson", "exact"), default="hutchinson",
                   help="exact costs 64 forward-mode products per evaluation (default: %(default)s)")
    p.add_argument("--probes", type=int, default=1, help="Hutchinson probes per image (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=1, help="passes over the held-out set (default: %(default)s)")
    p.add_argument("--rtol", type=float, default=1e-5, help="(default: %(default)s)")
    p.add_argument("--atol", type=float, default=1e-5, help="(default: %(default)s)")
    p.add_argument("--limit", type=int, help="use only the first LIMIT held-out digits")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--json", help="also write the result to this file (refuses to overwrite)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.probes < 1 or args.repeats < 1 or (args.limit is not None and args.limit < 1):
        parser().error("--probes, --repeats and --limit must be positive")
    if args.json and pathlib.Path(args.json).exists():
        parser().error(f"{args.json} exists; choose another --json path")

    import jax
    import numpy as np

    import samplax as sx
    from samplax.models import checkpoints, data, pretrained

    model = pretrained.denoiser(args.model)
    test = data.digits("test").images[: args.limit]
    images = np.rint((test + 1.0) * (LEVELS - 1) / 2.0).astype(np.int32)
    divergence = sx.Hutchinson(args.probes) if args.divergence == "hutchinson" else sx.ExactDivergence()
    started = time.perf_counter()
    bits, nfe = [], []
    for repeat in range(args.repeats):
        values, info = sx.bits_per_dim(
            model, images, key=jax.random.fold_in(jax.random.key(args.seed), repeat), levels=LEVELS,
            divergence=divergence, rtol=args.rtol, atol=args.atol,
        )
        bits.append(np.asarray(values))
        nfe.append(np.asarray(info.nfe))
    bits, nfe = np.concatenate(bits), np.concatenate(nfe)
    if not np.all(np.isfinite(bits)):
        print(f"error: {int(np.sum(~np.isfinite(bits)))} of {bits.size} values are not finite", file=sys.stderr)
        return 1
    result = {
        "model": args.model,
        "bits_per_dim": float(bits.mean()),
        "standard_error": float(bits.std(ddof=1) / np.sqrt(bits.size)) if bits.size > 1 else None,
        "images": int(images.shape[0]),
        "repeats": args.repeats,
        "divergence": args.divergence,
        "probes": args.probes if args.divergence == "hutchinson" else None,
        "rtol": args.rtol,
        "atol": args.atol,
        "mean_nfe": float(nfe.mean()),
        "seconds": round(time.perf_counter() - started, 1),
        "command": "python scripts/likelihood.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    print(json.dumps(result))
    if args.json:
        checkpoints.write_atomic(args.json, (json.dumps(result, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
