"""Run peer diffusion samplers on an exact Gaussian-mixture problem.

Runs in a separate environment with torch, diffusers and k-diffusion (see README.md),
never with samplax or jax. Usage:

    /work/peers-venv/bin/python benchmarks/peers/peer_runner.py \
        --problem problem.npz --out results.npz \
        [--dpm-solver-path /work/peers/dpm_solver_pytorch.py]

The output npz holds, for every config name C and model-call count N (the NFE the
peer actually used):

    samples/C/N      (B, D) float64  final state, VP scale: x = alpha x0 + sigma eps
                                     at the final noise level (k-diffusion's VE output
                                     is divided by sqrt(1 + final_sigma^2))
    nfe/C/N          int             model calls counted in the model wrapper
    timesteps/C/N    float64         the solver's grid in DDPM index units (0..999,
                                     fractional where the peer's grid is continuous);
                                     diffusers: scheduler.timesteps; DPM-Solver:
                                     1000 * (t - 1/1000); k-diffusion: the unquantised
                                     index of each nonzero grid sigma
    sigmas/C/N       float64         the solver's VE noise levels sigma/alpha, final
                                     level included (0 when it ends on clean data)
    final_sigma/C/N  float64         last entry of sigmas
    model_t/C/N      float64         the time input of each model call, in order
                                     (DDPM index units, as the model received it)
    wall_s/C/N       float64         wall time of the sampling call in seconds
    configs          JSON string     {C: library, version, parameters, notes}
    versions         JSON string     library versions
"""

import hashlib
import importlib
import importlib.metadata
import importlib.util
import math
import sys
import time
import types

import diffusers
import numpy as np
import torch
from runner_files import parse_arguments, run_jobs, save_results


class MixturePosterior:
    """Exact posterior means of an isotropic Gaussian mixture, in float64, with a call log."""

    def __init__(self, problem):
        self.means = torch.as_tensor(problem["means"], dtype=torch.float64)
        self.stds = torch.as_tensor(problem["stds"], dtype=torch.float64)
        self.log_weights = torch.log(torch.as_tensor(problem["weights"], dtype=torch.float64))
        self.calls = []

    def posterior_means(self, x, alpha, sigma):
        """(E[x0 | x], E[eps | x]) for x = alpha x0 + sigma eps; alpha, sigma of shape (B,).

        E[eps | x] is written without dividing by sigma, so it is finite at sigma = 0.
        """
        a, s = alpha[:, None], sigma[:, None]
        s2 = self.stds[None, :] ** 2
        var = a**2 * s2 + s**2
        diff = x[:, None, :] - a[:, :, None] * self.means[None]
        dim = x.shape[-1]
        log_prob = self.log_weights - 0.5 * (diff**2).sum(-1) / var - 0.5 * dim * torch.log(2 * math.pi * var)
        weights = torch.softmax(log_prob, dim=-1)[:, :, None]
        x0 = (weights * (self.means[None] + (a * s2 / var)[:, :, None] * diff)).sum(1)
        eps = (weights * (s / var)[:, :, None] * diff).sum(1)
        return x0, eps


class MixtureEpsModel(MixturePosterior):
    """Exact noise prediction of the mixture under the problem's DDPM schedule.

    Called as model(x, t) with t in DDPM index units (0..999); fractional t uses
    log(alpha) interpolated linearly between the integer indices, which is exact at
    the integers and equal to DPM-Solver's 'discrete' schedule in between.
    Computes in float64 and returns float32, like a network.
    """

    def __init__(self, problem):
        super().__init__(problem)
        alphas_cumprod = np.cumprod(1.0 - np.asarray(problem["betas"], dtype=np.float64))
        self.log_alpha = torch.as_tensor(0.5 * np.log(alphas_cumprod))

    def alpha_at(self, t):
        """alpha for DDPM index t (tensor of shape (B,)), float64."""
        t = t.to(torch.float64).clamp(0, len(self.log_alpha) - 1)
        low = t.floor().long().clamp(max=len(self.log_alpha) - 2)
        w = t - low
        return torch.exp((1 - w) * self.log_alpha[low] + w * self.log_alpha[low + 1])

    def __call__(self, x, t):
        t = torch.as_tensor(t).reshape(-1).expand(x.shape[0])
        self.calls.append(float(t[0]))
        alpha = self.alpha_at(t)
        _, eps = self.posterior_means(x.to(torch.float64), alpha, torch.sqrt(1 - alpha**2))
        return eps.to(torch.float32)


def load_k_diffusion():
    """Import k_diffusion.sampling and k_diffusion.external without the package __init__.

    The package __init__ imports training modules (wandb, clip, kornia, torchvision...).
    The samplers need only sampling.py, external.py and utils.py; utils.py imports
    torchvision for PIL conversions the samplers never call, so an empty placeholder
    stands in for torchvision during the import when it is not installed (and is
    removed again, so that other libraries still see torchvision as absent).
    """
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        raise ImportError("k-diffusion is not installed: pip install --no-deps k-diffusion")
    package = types.ModuleType("k_diffusion")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["k_diffusion"] = package
    placeholders = {}
    if importlib.util.find_spec("torchvision") is None:
        placeholders = {name: types.ModuleType(name) for name in
                        ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")}
        placeholders["torchvision"].transforms = placeholders["torchvision.transforms"]
        placeholders["torchvision.transforms"].functional = placeholders["torchvision.transforms.functional"]
    sys.modules.update(placeholders)
    try:
        return importlib.import_module("k_diffusion.sampling"), importlib.import_module("k_diffusion.external")
    finally:
        for name in placeholders:
            del sys.modules[name]


def load_dpm_solver(path):
    """Import the official dpm_solver_pytorch.py from a file path."""
    spec = importlib.util.spec_from_file_location("dpm_solver_pytorch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- diffusers


def diffusers_configs():
    """Scheduler configs: name -> (scheduler class name, constructor kwargs)."""
    configs = {}
    for order in (2, 3):
        base = dict(algorithm_type="dpmsolver++", solver_order=order, solver_type="midpoint")
        configs[f"diffusers_dpmpp_{order}m_linspace"] = (
            "DPMSolverMultistepScheduler", dict(base, timestep_spacing="linspace")
        )
        configs[f"diffusers_dpmpp_{order}m_trailing"] = (
            "DPMSolverMultistepScheduler", dict(base, timestep_spacing="trailing")
        )
        configs[f"diffusers_dpmpp_{order}m_karras"] = (
            "DPMSolverMultistepScheduler", dict(base, use_karras_sigmas=True)
        )
        configs[f"diffusers_dpmpp_{order}m_lu"] = ("DPMSolverMultistepScheduler", dict(base, use_lu_lambdas=True))
        for variant in ("bh1", "bh2"):
            # bh1 with final_sigmas_type="zero" returns NaN in diffusers 0.42.1: its last
            # (order-1) predictor step multiplies B_h = -h = -inf by a zero correction.
            base = dict(solver_order=order, solver_type=variant)
            if variant == "bh1":
                base["final_sigmas_type"] = "sigma_min"
            configs[f"diffusers_unipc_{variant}_o{order}_linspace"] = ("UniPCMultistepScheduler", dict(base))
            configs[f"diffusers_unipc_{variant}_o{order}_karras"] = (
                "UniPCMultistepScheduler", dict(base, use_karras_sigmas=True)
            )
        configs[f"diffusers_deis_o{order}_linspace"] = ("DEISMultistepScheduler", dict(solver_order=order))
        configs[f"diffusers_deis_o{order}_karras"] = (
            "DEISMultistepScheduler", dict(solver_order=order, use_karras_sigmas=True)
        )
    return configs


def make_scheduler(class_name, kwargs, betas):
    """Construct a diffusers scheduler for the problem's betas and an eps model."""
    return getattr(diffusers, class_name)(
        num_train_timesteps=len(betas), trained_betas=np.asarray(betas), prediction_type="epsilon", **kwargs)


def run_diffusers(class_name, kwargs, problem, noise, nfe):
    """Run one diffusers scheduler with nfe inference steps."""
    scheduler = make_scheduler(class_name, kwargs, problem["betas"])
    scheduler.set_timesteps(nfe)
    model = MixtureEpsModel(problem)
    x = noise.clone() * scheduler.init_noise_sigma
    start = time.perf_counter()
    for t in scheduler.timesteps:
        eps = model(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(eps, t, x).prev_sample
    wall = time.perf_counter() - start
    sigmas = scheduler.sigmas.double().numpy()
    return dict(
        samples=x.double().numpy(),
        nfe=len(model.calls),
        timesteps=scheduler.timesteps.double().numpy(),
        sigmas=sigmas,
        model_t=np.array(model.calls),
        wall_s=wall,
    )


# ---------------------------------------------------------------- k-diffusion


KDIFF_ADAPTIVE_TOLS = (1e-1, 1e-2, 1e-3)


def kdiff_configs():
    """k-diffusion configs: name -> parameters."""
    configs = {
        "kdiff_dpmpp_2m_karras": dict(sampler="sample_dpmpp_2m", sigmas="karras", rho=7.0),
        "kdiff_dpmpp_3m_sde_eta0_karras": dict(sampler="sample_dpmpp_3m_sde", sigmas="karras", rho=7.0, eta=0.0),
        "kdiff_heun_karras": dict(sampler="sample_heun", sigmas="karras", rho=7.0),
        "kdiff_lms_karras": dict(sampler="sample_lms", sigmas="karras", rho=7.0, order=4),
        "kdiff_dpm_fast": dict(sampler="sample_dpm_fast", eta=0.0),
    }
    for tol in KDIFF_ADAPTIVE_TOLS:
        configs[f"kdiff_dpm_adaptive_o3_tol{tol:g}"] = dict(sampler="sample_dpm_adaptive", order=3, rtol=tol, atol=tol)
    return configs


def run_kdiff(params, problem, noise, nfe, k_sampling, k_external):
    """Run one k-diffusion sampler; nfe is the target (adaptive ignores it)."""
    model = MixtureEpsModel(problem)
    alphas_cumprod = torch.as_tensor(np.cumprod(1.0 - np.asarray(problem["betas"])), dtype=torch.float32)
    denoiser = k_external.DiscreteEpsDDPMDenoiser(model, alphas_cumprod, quantize=True)
    sigma_min, sigma_max = denoiser.sigma_min, denoiser.sigma_max
    x = noise * torch.sqrt(1 + sigma_max**2)
    sampler = getattr(k_sampling, params["sampler"])
    sigmas = None
    start = time.perf_counter()
    if params["sampler"] in ("sample_dpm_fast", "sample_dpm_adaptive"):
        if params["sampler"] == "sample_dpm_fast":
            x = sampler(denoiser, x, sigma_min.item(), sigma_max.item(), nfe, eta=params["eta"], disable=True)
        else:
            x = sampler(denoiser, x, sigma_min.item(), sigma_max.item(), order=params["order"],
                        rtol=params["rtol"], atol=params["atol"], disable=True)
        final_sigma = sigma_min.item()
    else:
        steps = (nfe + 1) // 2 if params["sampler"] == "sample_heun" else nfe
        sigmas = k_sampling.get_sigmas_karras(steps, sigma_min.item(), sigma_max.item(), rho=params["rho"])
        extra = {"eta": params["eta"]} if "eta" in params else {}
        if "order" in params:
            extra["order"] = params["order"]
        x = sampler(denoiser, x, sigmas, disable=True, **extra)
        final_sigma = sigmas[-1].item()
    wall = time.perf_counter() - start
    if sigmas is None:
        sigmas = torch.tensor([sigma_max.item(), final_sigma])
    nonzero = sigmas[sigmas > 0]
    return dict(
        samples=x.double().numpy() / math.sqrt(1 + final_sigma**2),
        nfe=len(model.calls),
        timesteps=denoiser.sigma_to_t(nonzero, quantize=False).double().numpy(),
        sigmas=sigmas.double().numpy(),
        model_t=np.array(model.calls),
        wall_s=wall,
    )


# ---------------------------------------------------------------- official DPM-Solver


def dpm_solver_configs():
    """Official DPM-Solver++ configs: name -> parameters."""
    configs = {}
    for method, order in (("multistep", 2), ("multistep", 3), ("singlestep", 3)):
        for skip_type in ("time_uniform", "logSNR"):
            for denoise in (False, True):
                name = f"dpmsolver_{method}_o{order}_{skip_type}" + ("_denoise" if denoise else "")
                configs[name] = dict(method=method, order=order, skip_type=skip_type, denoise_to_zero=denoise)
    return configs


def run_dpm_solver(params, problem, noise, nfe, dpm):
    """Run the official DPM-Solver++ with steps chosen so that NFE == nfe."""
    betas = torch.as_tensor(np.asarray(problem["betas"]), dtype=torch.float64)
    schedule = dpm.NoiseScheduleVP("discrete", betas=betas)
    model = MixtureEpsModel(problem)
    model_fn = dpm.model_wrapper(model, schedule, model_type="noise")
    solver = dpm.DPM_Solver(model_fn, schedule, algorithm_type="dpmsolver++")
    steps = nfe - 1 if params["denoise_to_zero"] else nfe
    t_T, t_0 = 1.0, 1.0 / schedule.total_N
    if params["method"] == "multistep":
        grid = solver.get_time_steps(params["skip_type"], t_T, t_0, steps, "cpu")
    else:
        grid, _ = solver.get_orders_and_timesteps_for_singlestep_solver(
            steps, params["order"], params["skip_type"], t_T, t_0, "cpu")
    start = time.perf_counter()
    x = solver.sample(noise.clone(), steps=steps, t_start=t_T, t_end=t_0, order=params["order"],
                      skip_type=params["skip_type"], method=params["method"],
                      denoise_to_zero=params["denoise_to_zero"])
    wall = time.perf_counter() - start
    sigmas = (schedule.marginal_std(grid) / schedule.marginal_alpha(grid)).double().numpy()
    if params["denoise_to_zero"]:
        sigmas = np.append(sigmas, 0.0)
    return dict(
        samples=x.double().numpy(),
        nfe=len(model.calls),
        timesteps=((grid.double() - t_0) * 1000.0).numpy(),
        sigmas=sigmas,
        model_t=np.array(model.calls),
        wall_s=wall,
    )


# ---------------------------------------------------------------- driver


def read_arguments(description, problem_fields, extra=()):
    """`parse_arguments`, then torch on one thread. Returns (args, problem, noise)."""
    args, problem = parse_arguments(description, problem_fields, extra)
    torch.set_num_threads(1)
    return args, problem, torch.as_tensor(problem["noise"], dtype=torch.float32)


def main():
    args, problem, noise = read_arguments(
        __doc__.split("\n")[0], "means, stds, weights, betas, noise, nfes",
        [("--dpm-solver-path", "path to the official dpm_solver_pytorch.py")],
    )
    nfes = [int(n) for n in problem["nfes"]]
    k_sampling, k_external = load_k_diffusion()
    versions = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "diffusers": importlib.metadata.version("diffusers"),
        "k-diffusion": importlib.metadata.version("k-diffusion"),
        "numpy": np.__version__,
    }

    jobs = {}
    for name, (class_name, kwargs) in diffusers_configs().items():
        config = make_scheduler(class_name, kwargs, problem["betas"]).config
        jobs[name] = dict(
            library="diffusers", version=versions["diffusers"], scheduler=class_name, arguments=kwargs,
            parameters={key: value for key, value in config.items() if key != "trained_betas"},
            notes="trained_betas = problem betas; parameters is the scheduler's full config",
            run=lambda nfe, c=class_name, k=kwargs: run_diffusers(c, k, problem, noise, nfe))
    for name, params in kdiff_configs().items():
        jobs[name] = dict(
            library="k-diffusion", version=versions["k-diffusion"], parameters=params,
            notes="DiscreteEpsDDPMDenoiser(quantize=True): the model sees the nearest integer timestep; "
                  "x_ve starts at noise * sqrt(1 + sigma_max^2); heun uses (nfe + 1) // 2 Karras sigmas",
            run=lambda nfe, p=params: run_kdiff(p, problem, noise, nfe, k_sampling, k_external))
    if args.dpm_solver_path:
        dpm = load_dpm_solver(args.dpm_solver_path)
        with open(args.dpm_solver_path, "rb") as handle:
            versions["dpm_solver_pytorch.py sha256"] = hashlib.sha256(handle.read()).hexdigest()
        for name, params in dpm_solver_configs().items():
            jobs[name] = dict(
                library="dpm_solver_pytorch.py (LuChengTHU/dpm-solver)",
                version=versions["dpm_solver_pytorch.py sha256"],
                parameters=dict(params, algorithm_type="dpmsolver++", model_type="noise", schedule="discrete",
                                t_start=1.0, t_end=1e-3, lower_order_final=True, solver_type="dpmsolver"),
                notes="steps = nfe - 1 with denoise_to_zero, else nfe; model gets fractional t_input = "
                "1000 (t - 1/1000)",
                run=lambda nfe, p=params: run_dpm_solver(p, problem, noise, nfe, dpm))

    def targets(job):
        return nfes[:1] if job["parameters"].get("sampler") == "sample_dpm_adaptive" else nfes

    arrays, configs = run_jobs(jobs, args.only, targets)
    save_results(args.out, arrays, configs, versions)


if __name__ == "__main__":
    main()
