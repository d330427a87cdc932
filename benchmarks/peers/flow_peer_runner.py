"""Run diffusers' flow-matching samplers on an exact Gaussian-mixture rectified flow.

Runs in the peer environment with torch and diffusers (see README.md), never with
samplax or jax. Usage:

    /work/peers-venv/bin/python benchmarks/peers/flow_peer_runner.py \
        --problem problem.npz --out results.npz

The path is x_t = (1 - t) x0 + t noise, from t = 1 (noise) to t = 0 (data). diffusers'
flow sigma is t, and its flow models predict v = noise - x0 = dx/dt. The problem npz
holds means (K, D), stds (K,) and weights (K,) of the mixture, noise (B, D) float32 at
t = 1, and nfes. The output npz holds, for every config name C and model-call count N:

    samples/C/N      (B, D) float64  final state, at t = final_sigma
    nfe/C/N          int             model calls counted in the model wrapper
    timesteps/C/N    float64         scheduler.timesteps (t * 1000; int64 for DPM-Solver++, UniPC)
    sigmas/C/N       float64         scheduler.sigmas, final one included
    final_sigma/C/N  float64         last entry of sigmas (0: ends on clean data)
    model_t/C/N      float64         the time t of each model call, in order
    wall_s/C/N       float64         wall time of the sampling loop in seconds
    configs          JSON string     {C: library, version, scheduler, parameters, notes}
    versions         JSON string     library versions
"""

import importlib.metadata
import sys
import time

import diffusers
import numpy as np
import torch
from peer_runner import MixturePosterior, read_arguments
from runner_files import save_results, store_result


class MixtureVelocityModel(MixturePosterior):
    """Exact rectified-flow velocity E[noise | x_t] - E[x0 | x_t] of the mixture.

    Called as model(x, t) with t in [0, 1]; finite at t = 0. Computes in float64 and
    returns float32, like a network.
    """

    def __call__(self, x, t):
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(x.shape[0])
        self.calls.append(float(t[0]))
        x0, noise = self.posterior_means(x.to(torch.float64), 1 - t, t)
        return (noise - x0).to(torch.float32)


FLOW_SHIFTS = (1.0, 3.0)


def flow_configs():
    """Configs: name -> (scheduler class name, constructor kwargs, model time).

    Model time "timestep" calls the model at scheduler.timesteps / 1000, as a pipeline
    does; "sigma" calls it at the scheduler's own float sigma for that step.
    """
    configs = {}
    for shift in FLOW_SHIFTS:
        tag = f"shift{shift:g}"
        configs[f"diffusers_flowmatch_euler_{tag}"] = ("FlowMatchEulerDiscreteScheduler", dict(shift=shift), "timestep")
        flow = dict(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift)
        for order in (2, 3):
            dpm = ("DPMSolverMultistepScheduler", dict(flow, algorithm_type="dpmsolver++", solver_order=order))
            configs[f"diffusers_dpmpp_{order}m_{tag}"] = (*dpm, "timestep")
            configs[f"diffusers_dpmpp_{order}m_{tag}_sigma_t"] = (*dpm, "sigma")
            for variant in ("bh1", "bh2"):
                # bh1 with final_sigmas_type="zero" returns NaN in diffusers 0.42.1 (B_h = -h = -inf
                # in the last step); "sigma_min" ends with a zero-length step at the last grid sigma.
                final = "sigma_min" if variant == "bh1" else "zero"
                unipc = ("UniPCMultistepScheduler",
                         dict(flow, solver_type=variant, solver_order=order, final_sigmas_type=final))
                configs[f"diffusers_unipc_{variant}_o{order}_{tag}"] = (*unipc, "timestep")
                configs[f"diffusers_unipc_{variant}_o{order}_{tag}_sigma_t"] = (*unipc, "sigma")
    return configs


def run_flow(class_name, kwargs, model_time, problem, noise, nfe):
    """Run one diffusers scheduler with nfe inference steps from the noise at t = 1."""
    scheduler = getattr(diffusers, class_name)(**kwargs)
    scheduler.set_timesteps(nfe)
    model = MixtureVelocityModel(problem)
    x = noise.clone()
    start = time.perf_counter()
    for index, timestep in enumerate(scheduler.timesteps):
        t = scheduler.sigmas[index] if model_time == "sigma" else timestep / 1000
        x = scheduler.step(model(x, t), timestep, x).prev_sample
    wall = time.perf_counter() - start
    return dict(
        samples=x.double().numpy(),
        nfe=len(model.calls),
        timesteps=scheduler.timesteps.double().numpy(),
        sigmas=scheduler.sigmas.double().numpy(),
        model_t=np.array(model.calls),
        wall_s=wall,
    )


def main():
    args, problem, noise = read_arguments(__doc__.split("\n")[0], "means, stds, weights, noise, nfes")
    versions = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "diffusers": importlib.metadata.version("diffusers"),
        "numpy": np.__version__,
    }
    arrays, configs = {}, {}
    for name, (class_name, kwargs, model_time) in flow_configs().items():
        if args.only not in name:
            continue
        configs[name] = dict(
            library="diffusers", version=versions["diffusers"], scheduler=class_name, arguments=kwargs,
            model_time=model_time, parameters=dict(getattr(diffusers, class_name)(**kwargs).config),
            notes="model called at t = " + ("scheduler.sigmas[i]" if model_time == "sigma" else "timestep / 1000")
                  + "; starts from the noise as given; parameters is the scheduler's full config")
        for target in problem["nfes"]:
            store_result(arrays, name, run_flow(class_name, kwargs, model_time, problem, noise, int(target)))
    save_results(args.out, arrays, configs, versions)


if __name__ == "__main__":
    main()
