"""Run the two JAX peers, DPM-Solver's `dpm_solver_jax.py` (LuChengTHU/dpm-solver) and
`jax_deis` (qsh-zh/deis), on an exact Gaussian-mixture problem.

Runs in the JAX peers' own environment (built by build_jax_peers.sh, with the patches
that let them run on current JAX), never with samplax. Usage:

    /work/jax-peers/venv/bin/python benchmarks/peers/jax_peer_runner.py \
        --problem problem.npz --out results.npz --sources /work/jax-peers/src

The output npz has the fields of peer_runner.py (samples, nfe, timesteps, sigmas,
final_sigma, model_t, wall_s per config and NFE; configs; versions). Both run as a user
would run them, in float32 (jax's default), like samplax in the benchmark; wall_s is
one compiled run. The model is the mixture's exact noise prediction, as each peer's schedule defines
alpha at the times it asks for: DPM-Solver's discrete schedule interpolates log alpha
linearly between the DDPM indices (its model input is the fractional index 1000 (t -
1/1000)); jax_deis's DiscreteVPSDE interpolates alpha-bar linearly and asks only for the
integer indices of its rounded grids, where both are exact.
"""

import hashlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from runner_files import parse_arguments, run_jobs, save_results  # noqa: E402

DPM_SOLVER_SKIPS = ("logSNR", "time_uniform", "time_quadratic")
DEIS_GRIDS = {"t": ("t", 1.0), "t2": ("t", 2.0), "log": ("log", 1.0), "rho7": ("rho", 7.0)}


class MixtureNoiseModel:
    """eps(x, index) of the isotropic mixture, with alpha at DDPM index `index` given by
    `alpha_of_index`; records the index of every call (a host callback, so calls inside the
    peers' compiled loops count)."""

    def __init__(self, problem, alpha_of_index):
        self.means = jnp.asarray(problem["means"], jnp.float32)
        self.variances = jnp.asarray(problem["stds"], jnp.float32) ** 2
        self.log_weights = jnp.log(jnp.asarray(problem["weights"], jnp.float32))
        self.alpha_of_index = alpha_of_index
        self.calls = []

    def _record(self, index):
        self.calls.append(float(np.asarray(index).reshape(-1)[0]))

    def __call__(self, x, index):
        index = jnp.broadcast_to(jnp.asarray(index, jnp.float32).reshape(-1), x.shape[:1])
        jax.debug.callback(self._record, index)
        alpha = self.alpha_of_index(index)[:, None]
        sigma = jnp.sqrt(1.0 - alpha**2)
        variance = alpha[:, :, None] ** 2 * self.variances[None, :, None] + sigma[:, :, None] ** 2  # (B, K, 1)
        difference = x[:, None, :] - alpha[:, :, None] * self.means[None]
        log_probability = self.log_weights - 0.5 * jnp.sum(difference**2 / variance, -1) \
            - 0.5 * x.shape[-1] * jnp.log(2 * jnp.pi * variance[..., 0])
        weights = jax.nn.softmax(log_probability, axis=-1)[..., None]
        return jnp.sum(weights * sigma[:, :, None] / variance * difference, axis=1)


def timed_run(sample, noise):
    """(samples, seconds) of one call of jit(sample), compiled beforehand (compiling calls
    no model, so the model's call log holds the sampling run only)."""
    compiled = jax.jit(sample).lower(noise).compile()
    start = time.perf_counter()
    x = np.asarray(jax.block_until_ready(compiled(noise)))
    return x, time.perf_counter() - start


def log_alphas(problem):
    return 0.5 * np.log(np.cumprod(1.0 - np.asarray(problem["betas"], np.float64)))


def load_module(path, name):
    sys.path.insert(0, path)
    return __import__(name)


# ---------------------------------------------------------------- dpm_solver_jax.py


def dpm_solver_configs():
    configs = {}
    for method, order in (("multistep", 2), ("multistep", 3), ("singlestep", 3)):
        for skip_type in DPM_SOLVER_SKIPS:
            for denoise in (False, True):
                name = f"dpmsolverjax_{method}_o{order}_{skip_type}" + ("_denoise" if denoise else "")
                configs[name] = dict(method=method, order=order, skip_type=skip_type, denoise=denoise)
    return configs


def run_dpm_solver(params, problem, noise, nfe, dpm):
    """DPM-Solver++ (predict_x0=True) with steps such that NFE == nfe (its `denoise` adds one
    call at t_end)."""
    table = jnp.asarray(log_alphas(problem), jnp.float32)
    schedule = dpm.NoiseScheduleVP("discrete", betas=jnp.asarray(problem["betas"]))
    model = MixtureNoiseModel(problem, lambda index: jnp.exp(jnp.interp(index, jnp.arange(table.shape[0]), table)))
    model_fn = dpm.model_wrapper(model, schedule, model_type="noise")
    solver = dpm.DPM_Solver(model_fn, schedule, predict_x0=True)
    steps = nfe - 1 if params["denoise"] else nfe
    # Its schedule methods call .reshape on t: Python floats fail there, so the end points
    # are arrays.
    t_T, t_0 = jnp.asarray(1.0), jnp.asarray(1.0 / schedule.total_N)
    if params["method"] == "multistep":
        grid = solver.get_time_steps(params["skip_type"], t_T, t_0, steps)
    else:
        grid, _ = solver.get_orders_and_timesteps_for_singlestep_solver(steps, params["order"], params["skip_type"],
                                                                         t_T, t_0)
    x, wall = timed_run(lambda x: solver.sample(x, steps=steps, t_start=t_T, t_end=t_0, order=params["order"],
                                                skip_type=params["skip_type"], method=params["method"],
                                                denoise=params["denoise"]), noise)
    grid = np.asarray(grid, np.float64)
    index = (grid - float(t_0)) * schedule.total_N
    alpha = np.exp(np.interp(index, np.arange(schedule.total_N), log_alphas(problem)))
    sigmas = np.sqrt(1.0 - alpha**2) / alpha
    if params["denoise"]:
        sigmas = np.append(sigmas, 0.0)
    return dict(samples=x, nfe=len(model.calls), timesteps=index, sigmas=sigmas,
                model_t=np.array(model.calls), wall_s=wall)


# ---------------------------------------------------------------- jax_deis


def deis_configs():
    configs = {}
    for method in ("t_ab", "rho_ab"):
        for order in (1, 2, 3):
            for grid, (phase, power) in DEIS_GRIDS.items():
                name = f"jaxdeis_{method.replace('_', '')}{order}_{grid}"
                configs[name] = dict(method=method, ab_order=order, ts_phase=phase, ts_order=power)
    configs["jaxdeis_ipndm"] = dict(method="ipndm", ab_order=3, ts_phase="t", ts_order=1.0)
    return configs


def run_deis(params, problem, noise, nfe, deis):
    """One jax_deis sampler with num_step = nfe (every method here calls the model once per
    step). Its discrete schedule runs over the integer DDPM indices 999 .. 0."""
    alpha_bar = np.exp(2.0 * log_alphas(problem))
    sde = deis.DiscreteVPSDE(alpha_bar)
    table = jnp.asarray(alpha_bar, jnp.float32)
    model = MixtureNoiseModel(problem,
                              lambda index: jnp.sqrt(jnp.interp(index, jnp.arange(table.shape[0]), table)))
    sampler = deis.get_sampler(sde, model, ts_phase=params["ts_phase"], ts_order=params["ts_order"],
                               num_step=nfe, method=params["method"], ab_order=params["ab_order"])
    from jax_deis.sde import get_rev_ts

    grid = np.asarray(get_rev_ts(sde, nfe, 1.0 if params["method"] == "ipndm" else params["ts_order"],
                                 ts_phase=params["ts_phase"]), np.float64)
    x, wall = timed_run(sampler, noise)
    abar = np.interp(grid, np.arange(alpha_bar.size), alpha_bar)
    return dict(samples=x, nfe=len(model.calls), timesteps=grid, sigmas=np.sqrt((1.0 - abar) / abar),
                model_t=np.array(model.calls), wall_s=wall)


# ---------------------------------------------------------------- driver


def source_hashes(sources):
    hashes = {}
    for relative in ("dpm_solver_jax.py", "jax_deis/sampler.py", "jax_deis/multistep.py", "jax_deis/vpsde.py",
                     "jax_deis/sde.py"):
        with open(os.path.join(sources, relative), "rb") as handle:
            hashes[f"{relative} sha256 (as run)"] = hashlib.sha256(handle.read()).hexdigest()
    return hashes


def main():
    args, problem = parse_arguments(__doc__.split("\n")[0], "means, stds, weights, betas, noise, nfes",
                                    [("--sources", "folder with dpm_solver_jax.py and jax_deis/ (build_jax_peers.sh)")])
    if not args.sources:
        raise SystemExit("--sources is required: the folder build_jax_peers.sh filled")
    dpm = load_module(args.sources, "dpm_solver_jax")
    deis = load_module(args.sources, "jax_deis")
    noise = jnp.asarray(problem["noise"], jnp.float32)
    nfes = [int(n) for n in problem["nfes"]]
    versions = {"python": sys.version.split()[0], "jax": jax.__version__, "numpy": np.__version__,
                **source_hashes(args.sources)}
    with open(os.path.join(args.sources, "SOURCES.json")) as handle:
        versions["sources"] = json.load(handle)
    jobs = {}
    for name, params in dpm_solver_configs().items():
        jobs[name] = dict(library="dpm_solver_jax.py (LuChengTHU/dpm-solver)", parameters=params,
                          notes="DPM-Solver++ (predict_x0=True), discrete schedule, t from 1 to 1/1000",
                          run=lambda nfe, p=params: run_dpm_solver(p, problem, noise, nfe, dpm))
    for name, params in deis_configs().items():
        jobs[name] = dict(library="jax_deis (qsh-zh/deis)", parameters=params,
                          notes="DiscreteVPSDE(alphas_cumprod); grids rounded to integer indices, ending at 0",
                          run=lambda nfe, p=params: run_deis(p, problem, noise, nfe, deis))
    arrays, configs = run_jobs(jobs, args.only, lambda job: nfes)
    save_results(args.out, arrays, configs, versions)


if __name__ == "__main__":
    main()
