"""Probe: does a grid concentrated at the end point beat samplax's "quadratic" grid at t_min?

jax_deis's `ts_order=2` grid on a discrete schedule is uniform in the square root of the
step index (rounded to integers), i.e. roughly uniform in sqrt(t - t_min); samplax's
"quadratic" grid is uniform in sqrt(t). This prints, for both benchmark mixtures (seeds 0
and 1, 1000 samples), the RMS error at t_min = 1e-3 of DEIS order 4 (no lower-order final),
UniPC-bh2-3 and DPM-Solver++3S (at NFE divisible by 3) on the three grids:

    python benchmarks/deis_end_grid_probe.py      # about 8 minutes on 2 CPU cores

It is a probe for docs/benchmarks.md ("The JAX peers"), not a grid samplax offers.
"""

import jax.numpy as jnp
import numpy as np
from problems import diffusion_problem

import samplax as sx

T_END = 1e-3
NFES = (5, 6, 8, 10, 15, 20)


def grids(schedule, nfe):
    fraction = np.linspace(0.0, 1.0, nfe + 1)
    index = (np.sqrt(999.0) + fraction * (np.sqrt(0.1) - np.sqrt(999.0))) ** 2
    return {
        "quadratic": np.asarray(sx.solvers.time_grid(schedule, nfe, "quadratic", t_end=T_END)),
        "sqrt(t - t_min)": T_END + (1.0 - T_END) * (1.0 - fraction) ** 2,
        "jax_deis integer": (np.unique(index.astype(int))[::-1] + 1.0) / 1000.0,
    }


def main():
    solvers = {
        "deis-tab4 (no lower-order final)": sx.solvers.DEIS(order=4, lower_order_final=False),
        "unipc-bh2-3": sx.solvers.registry.get("unipc-bh2-3"),
        "dpm++3s": sx.solvers.registry.get("dpm++3s"),
    }
    for seed in (0, 1):
        mixture, schedule, noise, _ = diffusion_problem(1000, seed=seed)
        model = mixture.denoiser(schedule, "noise")
        reference = mixture.flow_map(np.asarray(schedule.sigma(1.0)) * noise, schedule, 1.0, T_END)
        for name, solver in solvers.items():
            for grid_name in grids(schedule, 5):
                errors = []
                for nfe in NFES:
                    if name == "dpm++3s" and nfe % 3:
                        errors.append("   -    ")
                        continue
                    times = jnp.asarray(grids(schedule, nfe)[grid_name], jnp.float32)
                    x, _ = sx.sample(model, solver, noise, grid=times)
                    error = np.sqrt(np.mean((np.asarray(x, np.float64) - reference) ** 2))
                    errors.append(f"{error:.3e}")
                print(f"seed {seed}  {name:34s} {grid_name:17s}", " ".join(errors), flush=True)


if __name__ == "__main__":
    main()
