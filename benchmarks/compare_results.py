"""Compare the samplax numbers of two result files of the same benchmark: a stored one and
a rerun, so that anyone can check that a benchmark still reproduces its results.

    python benchmarks/dpm_benchmark.py --out /tmp/dpm_benchmark.json
    python benchmarks/compare_results.py benchmarks/results/dpm_benchmark.json /tmp/dpm_benchmark.json

    python benchmarks/flow_benchmark.py --output /tmp/flow_benchmark.json --markdown /tmp/FLOW_RESULTS.md
    python benchmarks/compare_results.py benchmarks/results/flow_benchmark.json /tmp/flow_benchmark.json

Compared: every error, NFE and step count that samplax produced (dpm_benchmark.py: the
sweep and the adaptive solvers; flow_benchmark.py: sampling, inversion and adaptive
rows). Not compared: wall times, and the peers' results (a rerun without --peers has
none). Prints the largest relative difference, every entry that differs by more than
--tolerance and the entries found in only one file; exits with status 1 if any entry
differs or the rerun lacks one.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import sys

# Row fields that identify a row of flow_benchmark.py, and the numbers compared in it.
FLOW_PARTS = {
    "sampling": (("solver", "nfe", "grid"), ("steps", "rms_error")),
    "inversion": (
        ("solver", "nfe_per_direction", "grid"),
        ("steps", "noise_error", "round_trip_error", "round_trip_max"),
    ),
    "adaptive": (("solver", "tolerance"), ("mean_nfe", "rms_error")),
}


def samplax_numbers(results: dict) -> dict:
    """{key: number} of every samplax result in a results file, the key naming where it is."""
    numbers = {}
    if "samplax" in results:  # dpm_benchmark.py
        for config, by_grid in results["samplax"].items():
            for grid, by_nfe in by_grid.items():
                for nfe, error in by_nfe.items():
                    numbers[f"samplax / {config} / {grid} / NFE {nfe}"] = error
        for name, entry in results.get("adaptive", {}).items():
            for field, value in entry.items():
                numbers[f"adaptive / {name} / {field}"] = value
        return numbers
    if "sampling" in results:  # flow_benchmark.py
        for part, (identity, fields) in FLOW_PARTS.items():
            for row in results.get(part, []):
                name = " / ".join(f"{row[key]}" for key in identity)
                for field in fields:
                    numbers[f"{part} / {name} / {field}"] = row[field]
        return numbers
    raise SystemExit("not a result file of dpm_benchmark.py or flow_benchmark.py (no 'samplax' or 'sampling')")


def relative_difference(a, b) -> float:
    """|a - b| / max(|a|, |b|); 0 where both are equal (NaN with NaN included), inf where
    only one is NaN."""
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    if math.isnan(a) or math.isnan(b):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b))


def samples(results: dict):
    return results.get("samples", results.get("problem", {}).get("samples"))


def compare(stored: dict, rerun: dict, tolerance: float) -> bool:
    """Print the comparison; True where every stored number is in the rerun and agrees."""
    if samples(stored) != samples(rerun):
        print(f"the files are of different problems: {samples(stored)} and {samples(rerun)} samples")
        return False
    ours, theirs = samplax_numbers(stored), samplax_numbers(rerun)
    common = [key for key in ours if key in theirs]
    differences = {key: relative_difference(float(ours[key]), float(theirs[key])) for key in common}
    worst = max(differences, key=differences.get, default=None)
    print(f"{len(common)} numbers in both files; largest relative difference "
          + (f"{differences[worst]:.3g} ({worst})" if worst else "-"))
    over = [key for key in common if differences[key] > tolerance]
    for key in over:
        print(f"  differs: {key}: stored {ours[key]!r}, rerun {theirs[key]!r} (relative {differences[key]:.3g})")
    missing = [key for key in ours if key not in theirs]
    added = [key for key in theirs if key not in ours]
    for label, keys in (("only in the stored file", missing), ("only in the rerun", added)):
        if keys:
            print(f"{len(keys)} numbers {label}:")
            groups = collections.Counter(" / ".join(key.split(" / ")[:2]) for key in keys)
            for group, count in groups.items():
                print(f"  {group}: {count}")
    identical = not over and not missing
    print(("identical" if identical else "NOT identical: see above") + f" (relative tolerance {tolerance:g})")
    return identical


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stored", help="the stored results (e.g. benchmarks/results/dpm_benchmark.json)")
    parser.add_argument("rerun", help="the results of a rerun of the same benchmark")
    parser.add_argument("--tolerance", type=float, default=1e-12, help="largest relative difference accepted")
    args = parser.parse_args()
    with open(args.stored) as file:
        stored = json.load(file)
    with open(args.rerun) as file:
        rerun = json.load(file)
    sys.exit(0 if compare(stored, rerun, args.tolerance) else 1)


if __name__ == "__main__":
    main()
