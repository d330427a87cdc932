"""Run the stochastic samplers of k-diffusion and diffusers on an exact Gaussian-mixture problem.

Runs in the peers environment with torch, diffusers, k-diffusion and torchsde (see
README.md), never with samplax or jax. Usage:

    /work/peers-venv/bin/python benchmarks/peers/sde_peer_runner.py \
        --problem problem.npz --out results.npz [--only SUBSTRING] [--force]

The problem npz holds means (K, D), stds (K,) and weights (K,) of the mixture, the DDPM
betas (1000,), noise (B, D) float32 at DDPM index 999 (VP scale), nfes (target numbers
of model calls) and seeds (seeds of the samplers' own noise). Every config runs for
every NFE and every seed and ends on clean data (sigma = 0). The output npz holds, for
every config name C, model-call count N (the NFE the peer actually used) and seed S:

    samples/C/N/S    (B, D) float64  final state in data units (x0)
    nfe/C/N/S        int             model calls counted in the model wrapper
    wall_s/C/N/S     float64         wall time of the sampling call in seconds
    configs          JSON string     {C: library, version, parameters, notes}
    versions         JSON string     library versions
"""

import importlib.metadata
import math
import os
import sys
import time

import diffusers
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_runner import MixtureEpsModel, load_k_diffusion, make_scheduler, read_arguments  # noqa: E402
from runner_files import save_results  # noqa: E402

# ---------------------------------------------------------------- k-diffusion


KDIFF_GRIDS = ("karras", "exponential")
KDIFF_CHURNS = (1.0, 5.0, 20.0)
# Samplers that call the model twice per step, except on the last step (to sigma = 0).
KDIFF_TWO_CALLS = ("sample_dpmpp_sde", "sample_dpmpp_2s_ancestral", "sample_heun")
# Samplers whose noise comes from a Brownian tree (the others draw torch.randn_like).
KDIFF_BROWNIAN = ("sample_dpmpp_sde", "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde")


def kdiff_configs():
    """k-diffusion configs: name -> parameters (sampler, grid and the sampler's keyword arguments)."""
    samplers = {
        "euler_ancestral": dict(sampler="sample_euler_ancestral", eta=1.0),
        "dpmpp_2m_sde_midpoint": dict(sampler="sample_dpmpp_2m_sde", eta=1.0, solver_type="midpoint"),
        "dpmpp_2m_sde_heun": dict(sampler="sample_dpmpp_2m_sde", eta=1.0, solver_type="heun"),
        "dpmpp_3m_sde": dict(sampler="sample_dpmpp_3m_sde", eta=1.0),
        "dpmpp_sde": dict(sampler="sample_dpmpp_sde", eta=1.0),
        "dpmpp_2s_ancestral": dict(sampler="sample_dpmpp_2s_ancestral", eta=1.0),
    }
    for churn in KDIFF_CHURNS:
        samplers[f"euler_churn{churn:g}"] = dict(sampler="sample_euler", s_churn=churn)
        samplers[f"heun_churn{churn:g}"] = dict(sampler="sample_heun", s_churn=churn)
    configs = {}
    for grid in KDIFF_GRIDS:
        for name, params in samplers.items():
            configs[f"kdiff_{name}_{grid}"] = dict(params, grid=grid, **({"rho": 7.0} if grid == "karras" else {}))
    return configs


def kdiff_notes(params):
    """What a k-diffusion config does beyond its parameters."""
    two_calls = params["sampler"] in KDIFF_TWO_CALLS
    notes = [
        "DiscreteEpsDDPMDenoiser(quantize=True): the model sees the nearest integer timestep",
        "x_ve starts at noise * sqrt(1 + sigma_max^2)",
        f"sigmas = get_sigmas_{params['grid']}(n, sigma_min, sigma_max"
        + (", rho=7)" if params["grid"] == "karras" else ")")
        + " with a 0 appended, so the last step lands on x0",
        "n = (nfe + 1) // 2: two model calls per step, one on the last step, nfe = 2n - 1"
        if two_calls else "n = nfe: one model call per step",
    ]
    if params["sampler"] in KDIFF_BROWNIAN:
        notes.append("noise_sampler = BrownianTreeNoiseSampler(x, smallest nonzero sigma, sigma_max, seed=seed)")
    else:
        notes.append("noise from torch.randn_like after torch.manual_seed(seed)")
    if "s_churn" in params:
        notes.append("gamma = min(s_churn / n, sqrt(2) - 1) at every step (s_tmin = 0, s_tmax = inf, "
                     "s_noise = 1); at the first step sigma_hat = (1 + gamma) sigma_max is above the model's "
                     "range, and the quantized model is called at t = 999")
    return "; ".join(notes)


def kdiff_denoiser(model, betas, k_external):
    """k-diffusion's wrapper of the eps model, as in peer_runner.py (float32 schedule, quantized t)."""
    alphas_cumprod = torch.as_tensor(np.cumprod(1.0 - np.asarray(betas)), dtype=torch.float32)
    return k_external.DiscreteEpsDDPMDenoiser(model, alphas_cumprod, quantize=True)


def kdiff_sigmas(params, steps, sigma_min, sigma_max, k_sampling):
    """The sampler's grid: `steps` nonzero sigmas from sigma_max down to sigma_min, then 0."""
    if params["grid"] == "karras":
        return k_sampling.get_sigmas_karras(steps, sigma_min, sigma_max, rho=params["rho"])
    return k_sampling.get_sigmas_exponential(steps, sigma_min, sigma_max)


def run_kdiff(params, problem, noise, nfe, seed, k_sampling, k_external):
    """Run one k-diffusion sampler with at most nfe model calls; its noise is seeded by seed."""
    model = MixtureEpsModel(problem)
    denoiser = kdiff_denoiser(model, problem["betas"], k_external)
    steps = (nfe + 1) // 2 if params["sampler"] in KDIFF_TWO_CALLS else nfe
    sigmas = kdiff_sigmas(params, steps, denoiser.sigma_min.item(), denoiser.sigma_max.item(), k_sampling)
    x = noise * torch.sqrt(1 + denoiser.sigma_max**2)
    kwargs = {key: value for key, value in params.items() if key not in ("sampler", "grid", "rho")}
    sampler = getattr(k_sampling, params["sampler"])
    torch.manual_seed(seed)
    start = time.perf_counter()
    if params["sampler"] in KDIFF_BROWNIAN:
        kwargs["noise_sampler"] = k_sampling.BrownianTreeNoiseSampler(
            x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seed)
    x = sampler(denoiser, x, sigmas, disable=True, **kwargs)
    wall = time.perf_counter() - start
    return dict(samples=x.double().numpy(), nfe=len(model.calls), wall_s=wall)


# ---------------------------------------------------------------- diffusers


def diffusers_configs():
    """diffusers configs: name -> dict(scheduler, arguments, step_arguments, denoise_to_zero)."""

    def config(scheduler, arguments, step_arguments=None, denoise_to_zero=False):
        return dict(scheduler=scheduler, arguments=arguments, step_arguments=step_arguments or {},
                    denoise_to_zero=denoise_to_zero)

    configs = {}
    for spacing in ("leading", "trailing"):
        configs[f"diffusers_ddpm_{spacing}"] = config(
            "DDPMScheduler", dict(clip_sample=False, timestep_spacing=spacing))
        configs[f"diffusers_ddim_eta1_{spacing}"] = config(
            "DDIMScheduler", dict(clip_sample=False, timestep_spacing=spacing), dict(eta=1.0))
    for order in (2, 3):
        base = dict(algorithm_type="sde-dpmsolver++", solver_order=order)
        for grid, arguments in (("linspace", dict(timestep_spacing="linspace")),
                                ("trailing", dict(timestep_spacing="trailing")),
                                ("karras", dict(use_karras_sigmas=True))):
            configs[f"diffusers_sde_dpmpp_{order}m_{grid}"] = config(
                "DPMSolverMultistepScheduler", dict(base, **arguments))
    configs["diffusers_sasolver"] = config("SASolverScheduler", {}, denoise_to_zero=True)
    configs["diffusers_sasolver_p3c4"] = config(
        "SASolverScheduler", dict(predictor_order=3, corrector_order=4), denoise_to_zero=True)
    for spacing in ("linspace", "trailing"):
        configs[f"diffusers_euler_ancestral_{spacing}"] = config(
            "EulerAncestralDiscreteScheduler", dict(timestep_spacing=spacing))
    return configs


DIFFUSERS_NOTES = {
    "DDPMScheduler": "clip_sample=False (the data is not in [-1, 1]); variance_type fixed_small; "
    "the last step (t = 0 for leading, t = 1000 / nfe - 1 for trailing) goes to alpha_bar = 1 and adds no noise, "
    "so it returns x0; leading spacing starts at t = 1000 - 1000 / nfe, not at 999 where the noise is",
    "DDIMScheduler": "clip_sample=False; step(..., eta=1.0); set_alpha_to_one=True, so the last step goes to "
    "alpha_bar = 1 with zero variance and returns x0; leading spacing starts at t = 1000 - 1000 / nfe; DDIM "
    "takes the previous timestep as t - 1000 // nfe, right for these spacings only when nfe divides 1000",
    "DPMSolverMultistepScheduler": "final_sigmas_type='zero' (default): sigmas end with 0 and the last step is "
    "first order to x0; Karras: the model is called at the rounded timestep of each continuous sigma",
    "SASolverScheduler": "SASolver has no final_sigmas_type: its sigmas end at the sigma of index 0 (about 0.01), "
    "not 0, and its last corrector never runs. So it runs nfe - 1 steps and one more model call at t = 0 "
    "denoises: x0 = (x - sqrt(1 - alpha_bar_0) eps) / sqrt(alpha_bar_0) (counted in nfe); default "
    "tau_func: stochastic (tau = 1) for 200 <= t <= 800 only",
    "EulerAncestralDiscreteScheduler": "sigmas end with 0 (the last step has sigma_up = 0 and returns x0); "
    "init_noise_sigma is sigma_max for linspace and trailing, not sqrt(1 + sigma_max^2); linspace timesteps are "
    "fractional for most nfe (the scheduler interpolates sigma linearly, the model log alpha)",
}


def landing_sigma(scheduler):
    """VE noise level sigma / alpha of the state that a diffusers scheduler's last step returns."""
    if hasattr(scheduler, "sigmas"):
        return float(scheduler.sigmas[-1])
    last = int(scheduler.timesteps[-1])
    if isinstance(scheduler, diffusers.DDPMScheduler):
        previous, final_alpha_bar = int(scheduler.previous_timestep(last)), scheduler.one
    else:  # DDIM's own rule for the previous timestep
        previous = last - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        final_alpha_bar = scheduler.final_alpha_cumprod
    alpha_bar = scheduler.alphas_cumprod[previous] if previous >= 0 else final_alpha_bar
    return float(((1 - alpha_bar) / alpha_bar) ** 0.5)


def check_landing(scheduler, denoise_to_zero):
    """Raise unless the scheduler landed on sigma 0, or, before a denoising call, on the sigma of index 0."""
    alpha_bar = float(scheduler.alphas_cumprod[0])
    expected = math.sqrt((1 - alpha_bar) / alpha_bar) if denoise_to_zero else 0.0
    landed = landing_sigma(scheduler)
    if not math.isclose(landed, expected, rel_tol=1e-6):
        raise RuntimeError(f"{type(scheduler).__name__} lands at sigma {landed}, expected {expected}")


def denoise_at_index0(model, x):
    """One model call at DDPM index 0: Tweedie's x0 = (x - sigma eps) / alpha, in float64."""
    alpha = model.alpha_at(torch.zeros(1))
    eps = model(x, torch.zeros(1)).double()
    return (x.double() - torch.sqrt(1 - alpha**2) * eps) / alpha


def run_diffusers(spec, problem, noise, nfe, seed):
    """Run one diffusers scheduler with nfe model calls; its noise comes from a generator seeded by seed."""
    scheduler = make_scheduler(spec["scheduler"], spec["arguments"], problem["betas"])
    scheduler.set_timesteps(nfe - 1 if spec["denoise_to_zero"] else nfe)
    model = MixtureEpsModel(problem)
    generator = torch.Generator().manual_seed(seed)
    x = noise.clone() * scheduler.init_noise_sigma
    torch.manual_seed(seed)
    start = time.perf_counter()
    for t in scheduler.timesteps:
        eps = model(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(eps, t, x, generator=generator, **spec["step_arguments"]).prev_sample
    if spec["denoise_to_zero"]:
        x = denoise_at_index0(model, x)
    wall = time.perf_counter() - start
    check_landing(scheduler, spec["denoise_to_zero"])
    return dict(samples=x.double().numpy(), nfe=len(model.calls), wall_s=wall)


# ---------------------------------------------------------------- driver


def library_versions():
    """Versions of python and of the libraries whose samplers run."""
    versions = {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__}
    for package in ("diffusers", "k-diffusion", "torchsde"):
        versions[package] = importlib.metadata.version(package)
    return versions


def make_jobs(problem, noise, versions):
    """name -> dict(library, version, parameters, notes, run), run(nfe, seed) -> result dict."""
    k_sampling, k_external = load_k_diffusion()
    jobs = {}
    for name, params in kdiff_configs().items():
        jobs[name] = dict(
            library="k-diffusion", version=versions["k-diffusion"], parameters=params, notes=kdiff_notes(params),
            run=lambda nfe, seed, p=params: run_kdiff(p, problem, noise, nfe, seed, k_sampling, k_external))
    for name, spec in diffusers_configs().items():
        config = make_scheduler(spec["scheduler"], spec["arguments"], problem["betas"]).config
        jobs[name] = dict(
            library="diffusers", version=versions["diffusers"], scheduler=spec["scheduler"],
            arguments=spec["arguments"], step_arguments=spec["step_arguments"],
            parameters={key: value for key, value in config.items() if key != "trained_betas"},
            notes="trained_betas = problem betas; parameters is the scheduler's full config; x starts at "
            "noise * init_noise_sigma; step(..., generator=torch.Generator().manual_seed(seed)); "
            + DIFFUSERS_NOTES[spec["scheduler"]],
            run=lambda nfe, seed, s=spec: run_diffusers(s, problem, noise, nfe, seed))
    return jobs


def run_jobs(jobs, nfes, seeds):
    """Run every job for every target NFE and seed: (arrays, configs) for the results npz."""
    arrays, configs = {}, {}
    for name, job in jobs.items():
        run = job.pop("run")
        configs[name] = job
        for target in nfes:
            for seed in seeds:
                result = run(target, seed)
                key = f"{name}/{result['nfe']}/{seed}"
                if f"samples/{key}" in arrays:
                    continue
                for field in ("samples", "nfe", "wall_s"):
                    arrays[f"{field}/{key}"] = np.asarray(result[field])
                finite = np.isfinite(result["samples"]).all()
                print(f"{name:40s} nfe={result['nfe']:3d} seed={seed} wall={result['wall_s']:.3f}s"
                      + ("" if finite else "  NON-FINITE SAMPLES"), flush=True)
    return arrays, configs


def main():
    args, problem, noise = read_arguments(__doc__.split("\n")[0], "means, stds, weights, betas, noise, nfes, seeds")
    versions = library_versions()
    jobs = {name: job for name, job in make_jobs(problem, noise, versions).items() if args.only in name}
    arrays, configs = run_jobs(jobs, [int(n) for n in problem["nfes"]], [int(s) for s in problem["seeds"]])
    save_results(args.out, arrays, configs, versions)


if __name__ == "__main__":
    main()
