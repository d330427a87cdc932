"""Make the small PNGs the documentation shows, from committed benchmark results.

    python scripts/make_figures.py [--out docs/images]

Writes error_vs_nfe.png (from benchmarks/results/dpm_benchmark.json). Existing files are
replaced only with --force.
"""

from __future__ import annotations

import argparse
import io
import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from samplax.models.checkpoints import write_atomic  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAIN_SOLVERS = ("ddim", "dpm++2m", "dpm++3m", "dpm++3m-taylor", "dpm++3s", "unipc-bh2-3", "deis-tab4", "ipndm")


def _save(figure, path: pathlib.Path, force: bool) -> None:
    if path.exists() and not force:
        raise SystemExit(f"{path} exists; pass --force to replace it")
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=110)
    write_atomic(path, image.getvalue())
    plt.close(figure)
    print("wrote", path)


def _best(tables):
    """NFEs and the lowest error at each over several {nfe: error} tables (JSON keys)."""
    nfes = sorted({int(n) for table in tables for n in table})
    return nfes, [min(table.get(str(n), float("inf")) for table in tables) for n in nfes]


def error_versus_nfe(results: dict, path: pathlib.Path, force: bool) -> None:
    """Best error over grids for the main solvers, and the best of each peer library."""
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for name in MAIN_SOLVERS:
        by_grid = results["samplax"].get(name)
        if not by_grid:
            continue
        nfes, best = _best(by_grid.values())
        axis.loglog(nfes, best, marker="o", label=f"samplax {name}")
    peers = results.get("peers", {})
    styles = {"diffusers": "--", "k-diffusion": ":", "DPM-Solver": "-."}
    for library, prefix in (("diffusers", "diffusers_"), ("k-diffusion", "kdiff_"), ("DPM-Solver", "dpmsolver_")):
        subset = [v for k, v in peers.items() if k.startswith(prefix) and "adaptive" not in k]
        if subset:
            nfes, best = _best(subset)
            axis.loglog(
                nfes, best, linestyle=styles[library], marker="x", color="gray", label=f"{library} (best config)"
            )
    axis.set_xlabel("NFE")
    axis.set_ylabel("RMS error against the exact ODE")
    axis.set_title("64-D sharp Gaussian mixture, DDPM schedule")
    axis.legend(fontsize=7)
    figure.tight_layout()
    _save(figure, path, force)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"))
    parser.add_argument("--force", action="store_true", help="replace existing images")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = json.loads((ROOT / "benchmarks" / "results" / "dpm_benchmark.json").read_text())
    error_versus_nfe(results, out / "error_vs_nfe.png", args.force)


if __name__ == "__main__":
    main()
