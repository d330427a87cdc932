"""CODE against SDEdit on corrupted held-out digits, at equal NFE, across their control
parameter (the noise level the input is taken to).

    python benchmarks/digits_code_vs_sdedit.py [--nfe 20] [--out benchmarks/results/digits_code_vs_sdedit.json]

The 360 test digits are corrupted (Gaussian noise of std 0.5, clipped to [-1, 1]) and
restored by the unconditional digits-flow model with Euler: SDEdit (`sx.sdedit`) at
strength s with round(nfe / s) grid steps, so that it runs nfe of them from t = s; CODE
(`sx.code`) inverted to level s in nfe / 4 steps, nfe / 2 Langevin steps there, and
regenerated in nfe / 4 steps (nfe evaluations in all). Realism: the shipped classifier's
mean confidence and the Frechet distance of its features to the test digits; fidelity:
RMS to the corrupted input, and to the clean digit.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import problems  # noqa: E402

import samplax as sx  # noqa: E402
from samplax.metrics import classifier_confidence, digits_frechet_distance  # noqa: E402
from samplax.models import data, pretrained  # noqa: E402

LEVELS = (0.3, 0.5, 0.7)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nfe", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/digits_code_vs_sdedit.json")
    args = parser.parse_args()
    clean = jnp.asarray(data.digits("test").images)
    corrupted = jnp.clip(clean + 0.5 * jax.random.normal(jax.random.key(0), clean.shape), -1.0, 1.0)
    model = pretrained.denoiser("digits-flow", labels=None)
    key = jax.random.key(1)
    rows = []

    def record(method, level, restored, nfe):
        row = {"method": method, "level": level, "nfe": int(nfe),
               "confidence": float(np.mean(classifier_confidence(restored))),
               "frechet_distance": digits_frechet_distance(restored),
               "rms_to_input": float(jnp.sqrt(jnp.mean((restored - corrupted) ** 2))),
               "rms_to_clean": float(jnp.sqrt(jnp.mean((restored - clean) ** 2)))}
        rows.append(row)
        print(f"{method:7s} level {level:.1f} nfe {row['nfe']:3d} confidence {row['confidence']:.3f} "
              f"FD {row['frechet_distance']:.2f} rms-input {row['rms_to_input']:.3f} "
              f"rms-clean {row['rms_to_clean']:.3f}", flush=True)

    record("input", 0.0, corrupted, 0)
    for level in LEVELS:
        steps = round(args.nfe / level)
        restored, info = sx.sdedit(model, "euler", corrupted, strength=level, key=key, steps=steps)
        record("SDEdit", level, restored, info.nfe)
        restored, info = sx.code(model, "euler", corrupted, key=key, level=level, steps=args.nfe // 4,
                                 langevin_steps=args.nfe // 2)
        record("CODE", level, restored, info.nfe)
    problems.write_json(args.out, {"nfe": args.nfe, "rows": rows})
    table = problems.markdown_table(
        ["method", "level", "NFE", "confidence", "Frechet distance", "RMS to input", "RMS to clean"],
        [[row["method"], f"{row['level']:.1f}", f"{row['nfe']}", f"{row['confidence']:.3f}",
          f"{row['frechet_distance']:.2f}", f"{row['rms_to_input']:.3f}", f"{row['rms_to_clean']:.3f}"]
         for row in rows],
        ["---", "---:", "---:", "---:", "---:", "---:", "---:"],
    )
    text = "\n".join(table) + "\n"
    problems.write_text(pathlib.Path(args.out).with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
