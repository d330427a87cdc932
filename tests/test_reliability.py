"""Bad inputs to the Python API: each gives an exception of the expected type, raised by
samplax itself (not from inside jax or diffrax), whose message names the argument. The
table is generated: every workflow against every kind of bad argument it takes."""

import dataclasses
import pathlib
import traceback
import warnings

import flax.serialization as serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplax as sx
from samplax import metrics
from samplax.models import checkpoints, data, losses, pretrained
from samplax.samplers import sharding
from samplax.solvers import grids

MIXTURE = sx.GaussianMixture.random(1, 3, 3, std_range=(0.4, 0.8))
SCHEDULE = sx.schedules.VPLinear()
MODEL = MIXTURE.denoiser(SCHEDULE, "noise")
FLOW = MIXTURE.denoiser(sx.schedules.RectifiedFlow(), "velocity")
NOISE = jnp.ones((2, 3))
KEY = jax.random.key(0)

# (label, keyword arguments of sample/invert, exception, text the message must contain)
BAD_GRID_ARGUMENTS = [
    ("steps=0", {"steps": 0}, ValueError, "steps"),
    ("steps=-3", {"steps": -3}, ValueError, "steps"),
    ("steps=2.5", {"steps": 2.5}, TypeError, "steps"),
    ("steps='4'", {"steps": "4"}, TypeError, "steps"),
    ("steps=True", {"steps": True}, TypeError, "steps"),
    ("steps=None", {"steps": None}, ValueError, "steps"),
    ("grid='cosine'", {"steps": 4, "grid": "cosine"}, ValueError, "grid"),
    ("grid=''", {"steps": 4, "grid": ""}, ValueError, "grid"),
    ("grid one time", {"grid": jnp.array([0.5])}, ValueError, "grid"),
    ("grid 2-D", {"grid": jnp.ones((3, 2))}, ValueError, "grid"),
    ("grid with NaN", {"grid": jnp.array([1.0, jnp.nan, 0.01])}, ValueError, "non-finite"),
    ("grid increasing", {"grid": jnp.linspace(0.01, 1.0, 5)}, ValueError, "decreasing"),
    ("grid not monotone", {"grid": jnp.array([1.0, 0.2, 0.5, 0.01])}, ValueError, "strictly"),
    ("grid outside range", {"grid": jnp.array([2.0, 0.5, 0.01])}, ValueError, "range"),
    ("steps disagree with grid", {"steps": 3, "grid": jnp.linspace(1.0, 0.01, 6)}, ValueError, "steps"),
    ("t_start < t_end", {"steps": 4, "t_start": 0.1, "t_end": 0.5}, ValueError, "t_start"),
    ("t_start = t_end", {"steps": 4, "t_start": 0.5, "t_end": 0.5}, ValueError, "t_start"),
    ("t_end below range", {"steps": 4, "t_end": -0.1}, ValueError, "range"),
    ("t_start above range", {"steps": 4, "t_start": 3.0}, ValueError, "range"),
    ("t_end NaN", {"steps": 4, "t_end": float("nan")}, ValueError, "t_end"),
    ("t_start disagrees with grid", {"grid": jnp.linspace(1.0, 0.1, 5), "t_start": 0.9}, ValueError, "t_start"),
]
BAD_ARRAYS = [
    ("1-D", jnp.ones(3), ValueError, "batch"),
    ("scalar", jnp.asarray(1.0), ValueError, "batch"),
    ("int32", jnp.ones((2, 3), jnp.int32), TypeError, "floating-point"),
    ("bool", jnp.ones((2, 3), bool), TypeError, "floating-point"),
    ("complex", jnp.ones((2, 3), jnp.complex64), TypeError, "floating-point"),
]
BAD_SOLVERS = [
    ("None", None, TypeError, "solver"),
    ("int", 3, TypeError, "solver"),
    ("unknown name", "dpm++7m", ValueError, "solver"),
    ("a class", sx.solvers.DPMSolver, TypeError, "solver"),
]
WORKFLOWS = {
    "sample": lambda solver, x, **options: sx.sample(MODEL, solver, x, **options),
    "invert": lambda solver, x, **options: sx.invert(MODEL, solver, x, **options),
}


def _raised_by_samplax(error: BaseException) -> bool:
    """Whether the innermost frame of the traceback is samplax's own code."""
    frames = traceback.extract_tb(error.__traceback__)
    return "samplax" in pathlib.Path(frames[-1].filename).parts


def _assert_clear(call, exception, text):
    with pytest.raises(exception) as raised:
        call()
    assert text.lower() in str(raised.value).lower(), str(raised.value)
    assert _raised_by_samplax(raised.value), traceback.format_exception(raised.value)[-3:]


@pytest.mark.parametrize("workflow", sorted(WORKFLOWS))
@pytest.mark.parametrize("case", BAD_GRID_ARGUMENTS, ids=[case[0] for case in BAD_GRID_ARGUMENTS])
@pytest.mark.parametrize("solver", ["dpm++2m", "ddim", "deis-tab3", "unipc-bh2-2", "dpm++3s"])
def test_bad_grid_arguments_are_named(workflow, case, solver):
    _, options, exception, text = case
    _assert_clear(lambda: WORKFLOWS[workflow](solver, NOISE, **options), exception, text)


@pytest.mark.parametrize("workflow", ["sample", "invert", "reversible_invert", "optimize_noise", "log_likelihood"])
@pytest.mark.parametrize("case", BAD_ARRAYS, ids=[case[0] for case in BAD_ARRAYS])
def test_bad_arrays_are_named(workflow, case):
    _, x, exception, text = case
    calls = {
        "sample": lambda: sx.sample(MODEL, "dpm++2m", x, steps=4),
        "invert": lambda: sx.invert(MODEL, "dpm++2m", x, steps=4),
        "reversible_invert": lambda: sx.reversible_invert(FLOW, x, steps=4),
        "optimize_noise": lambda: sx.optimize_noise(MODEL, "dpm++2m", x, lambda samples: jnp.sum(samples), steps=4),
        "log_likelihood": lambda: sx.log_likelihood(MODEL, x),
    }
    _assert_clear(calls[workflow], exception, text)


@pytest.mark.parametrize("workflow", sorted(WORKFLOWS))
@pytest.mark.parametrize("case", BAD_SOLVERS, ids=[case[0] for case in BAD_SOLVERS])
def test_bad_solvers_are_named(workflow, case):
    _, solver, exception, text = case
    _assert_clear(lambda: WORKFLOWS[workflow](solver, NOISE, steps=4), exception, text)


@pytest.mark.parametrize("kind", ["karras", "shifted"])
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_grid_parameters_must_be_positive_and_finite(kind, value):
    name = "rho" if kind == "karras" else "shift"
    _assert_clear(lambda: grids.time_grid(SCHEDULE, 5, kind, **{name: value}), ValueError, name)


def test_adaptive_dpm_solver_refuses_rectified_flow_instead_of_returning_the_noise():
    for solver in ("dpm-solver-adaptive", "dpm++12", "dpm-solver-23"):
        _assert_clear(lambda solver=solver: sx.sample(FLOW, solver, NOISE), ValueError, "lambda")
    # Inside (0, 1) lambda is finite and the solve runs.
    samples, info = sx.sample(FLOW, "dpm-solver-adaptive", NOISE, t_start=0.99, t_end=0.01)
    assert np.all(np.asarray(info.nfe) > 0) and np.all(np.isfinite(samples))


def test_adaptive_solvers_that_stop_short_raise():
    short = sx.solvers.AdaptiveDPMSolver(max_attempts=2)
    _assert_clear(lambda: sx.sample(MODEL, short, NOISE), RuntimeError, "max_attempts")
    flow = sx.solvers.FlowAdaptive(max_steps=2)
    _assert_clear(lambda: sx.sample(FLOW, flow, NOISE), RuntimeError, "max_steps")
    # Under the caller's jit nothing can raise: the unfinished samples are NaN, not returned as samples.
    samples, _ = jax.jit(lambda x: sx.sample(MODEL, short, x))(NOISE)
    assert np.all(np.isnan(samples))


def _guided_pair(scale):
    """A guided model of the batch of NOISE: the network shifted by a per-sample condition c
    (1 conditional, 0 unconditional)."""
    network = jax.tree_util.Partial(lambda x, t, c: MODEL.network(x, t) + 0.1 * c[:, None])
    model = sx.Denoiser(network, SCHEDULE, condition={"c": jnp.ones(2)})
    return model, sx.classifier_free_guidance(model, {"c": jnp.ones(2)}, {"c": jnp.zeros(2)}, scale)


def test_non_finite_guidance_scale_is_named():
    for scale in (float("nan"), float("inf")):
        _, guided = _guided_pair(scale)
        _assert_clear(lambda guided=guided: sx.sample(guided, "dpm++2m", NOISE, steps=3), ValueError, "guidance_scale")


def test_nan_parameters_are_reported_as_such():
    def network(means, x, t):
        return x * jnp.sum(means)

    model = sx.Denoiser(jax.tree_util.Partial(network, jnp.array([1.0, jnp.nan])), SCHEDULE, "noise")
    _assert_clear(lambda: sx.sample(model, "dpm++2m", NOISE, steps=3), FloatingPointError, "network's parameters")


def test_condition_rows_must_match_the_batch():
    model = sx.Denoiser(lambda x, t, shift: x + shift[:, None], SCHEDULE, "noise", condition={"shift": jnp.ones(3)})
    _assert_clear(lambda: sx.sample(model, "dpm++2m", NOISE, steps=3), ValueError, "condition['shift']")


@pytest.fixture(scope="module")
def digits():
    return pretrained.denoiser("digits-diffusion", labels=jnp.array([1, 2]))


def test_shipped_model_checks_labels_and_shape(digits):
    noise = jnp.zeros((2, 8, 8, 1))
    for labels in ([-1, 3], [11, 3], [10, 3]):
        model = pretrained.denoiser("digits-diffusion", labels=jnp.array(labels))
        _assert_clear(lambda model=model: sx.sample(model, "dpm++2m", noise, steps=2), ValueError, "labels")
    _assert_clear(lambda: sx.sample(digits, "dpm++2m", jnp.zeros((2, 16, 16, 1)), steps=2), ValueError, "(8, 8, 1)")
    _assert_clear(lambda: sx.sample(digits, "dpm++2m", jnp.zeros((3, 8, 8, 1)), steps=2), ValueError, "label")
    _assert_clear(lambda: sx.tune_grid(digits, "dpm++2m", 2, KEY, shape=(4, 4, 1)), ValueError, "shape")


def test_grid_files_refuse_nan_and_name_the_path(tmp_path):
    _assert_clear(lambda: sx.save_grid(tmp_path / "nan.json", jnp.array([1.0, jnp.nan, 0.01])), ValueError, "NaN")
    assert not (tmp_path / "nan.json").exists()
    np.savez(tmp_path / "arrays.npz", y=np.ones(3))
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "nan_times.json").write_text('{"format": "samplax-time-grid-1", "times": [1.0, NaN, 0.1]}')
    (tmp_path / "no_times.json").write_text('{"format": "samplax-time-grid-1"}')
    for name in ("arrays.npz", "list.json", "nan_times.json", "no_times.json"):
        _assert_clear(lambda name=name: sx.load_grid(tmp_path / name), ValueError, name)


def test_tune_grid_refuses_a_non_finite_learning_rate():
    for rate in (float("nan"), 0.0, -1.0):
        _assert_clear(lambda rate=rate: sx.tune_grid(MODEL, "dpm++2m", 3, KEY, shape=(3,), learning_rate=rate),
                      ValueError, "learning_rate")


def test_checkpoints_verify_their_checksum(tmp_path):
    path = checkpoints.save(tmp_path / "model.msgpack", {"w": np.arange(64, dtype=np.float32)}, {"note": "test"})
    template = {"w": np.zeros(64, np.float32)}
    tree, _ = checkpoints.load(path, template)
    np.testing.assert_array_equal(tree["w"], np.arange(64))
    # Flip bytes inside the weights: either unreadable or a checksum mismatch, never loaded.
    data = bytearray(path.read_bytes())
    position = data.find(np.arange(64, dtype=np.float32).tobytes()) + 40
    data[position : position + 4] = bytes(b ^ 0xFF for b in data[position : position + 4])
    flipped = tmp_path / "flipped.msgpack"
    flipped.write_bytes(bytes(data))
    _assert_clear(lambda: checkpoints.load(flipped, template), checkpoints.CheckpointError, "checksum")
    # NaN weights are refused when saving; in a file written otherwise, with a matching
    # checksum, they are refused by name when loading.
    _assert_clear(lambda: checkpoints.save(tmp_path / "nan.msgpack", {"w": np.full(64, np.nan, np.float32)}, {}),
                  ValueError, "holds NaN")
    payload = serialization.msgpack_restore(path.read_bytes())
    payload["arrays"] = {"['w']": np.full(64, np.nan, np.float32)}
    payload["checksum"] = checkpoints._checksum(payload["arrays"])
    nan_path = tmp_path / "nan.msgpack"
    nan_path.write_bytes(serialization.msgpack_serialize(payload))
    _assert_clear(lambda: checkpoints.load(nan_path, template), checkpoints.CheckpointError, "NaN")
    # A file written before checksums loads, with a warning.
    payload = serialization.msgpack_restore(path.read_bytes())
    del payload["checksum"]
    old = tmp_path / "old.msgpack"
    old.write_bytes(serialization.msgpack_serialize(payload))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tree, _ = checkpoints.load(old, template)
    assert any("no checksum" in str(warning.message) for warning in caught)
    np.testing.assert_array_equal(tree["w"], np.arange(64))


def test_shipped_models_carry_checksums():
    for name in pretrained.NAMES:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            pretrained.load(name)


class _NotASchedule:
    pass


def _edit_digits(source, target, model=None):
    model = model or pretrained.denoiser("digits-flow", labels=None)
    return sx.edit(model, "euler", jnp.zeros((1, 8, 8, 1)), source, target, 3, 1)


def _no_attention_network(x, t, label=None, values=None, return_values=False):
    return (-x, {}) if return_values else -x


# A second trial of bad inputs as a new user makes them (beyond the list), each
# (label, call, exception, text the message must contain).
FRESH_TRIAL_CASES = [
    ("Denoiser schedule=None", lambda: sx.Denoiser(lambda x, t: x, None), TypeError, "schedule"),
    ("Denoiser schedule name", lambda: sx.Denoiser(lambda x, t: x, "vp-linear"), TypeError, "schedule"),
    ("Denoiser schedule class", lambda: sx.Denoiser(lambda x, t: x, sx.schedules.VPLinear), TypeError, "schedule"),
    ("Denoiser non-schedule", lambda: sx.Denoiser(lambda x, t: x, _NotASchedule()), TypeError, "schedule"),
    ("mixture schedule=None", lambda: MIXTURE.denoiser(None), TypeError, "schedule"),
    ("Denoiser sample_shape int", lambda: sx.Denoiser(lambda x, t: x, SCHEDULE, sample_shape=3), TypeError,
     "sample_shape"),
    ("Denoiser classes=0", lambda: sx.Denoiser(lambda x, t: x, SCHEDULE, classes=0), ValueError, "classes"),
    ("network returns a scalar",
     lambda: sx.sample(sx.Denoiser(lambda x, t: jnp.sum(x), SCHEDULE), "dpm++2m", NOISE, steps=3), ValueError,
     "shaped like"),
    ("network returns the wrong shape",
     lambda: sx.sample(sx.Denoiser(lambda x, t: x[:, :2], SCHEDULE), "dpm++2m", NOISE, steps=3), ValueError,
     "shape (2, 2)"),
    ("noise with an extra axis", lambda: sx.sample(MODEL, "dpm++2m", jnp.ones((2, 3, 1)), steps=3), ValueError,
     "(3,)"),
    ("noise of another dimension", lambda: sx.sample(MODEL, "dpm++2m", jnp.ones((2, 5)), steps=3), ValueError,
     "(3,)"),
    ("invert data of another dimension", lambda: sx.invert(MODEL, "dpm++2m", jnp.ones((2, 5)), steps=3), ValueError,
     "(3,)"),
    ("noise as a list", lambda: sx.sample(MODEL, "dpm++2m", [[0.5, 0.5, 0.5]], steps=3), TypeError, "noise"),
    ("reversible noise as a list", lambda: sx.reversible_sample(FLOW, [[0.1, 0.2, 0.3]], steps=3), TypeError,
     "noise"),
    ("t_start a string", lambda: sx.sample(MODEL, "dpm++2m", NOISE, steps=3, t_start="1"), TypeError, "t_start"),
    ("t_end an array", lambda: sx.sample(MODEL, "dpm++2m", NOISE, steps=3, t_end=jnp.array([0.01, 0.02])),
     ValueError, "t_end"),
    ("guidance scale a string",
     lambda: sx.sample(_guided_pair("7")[1], "dpm++2m", NOISE, steps=3), TypeError,
     "guidance_scale"),
    ("denoise_to_zero a string", lambda: sx.sample(MODEL, "dpm++2m", NOISE, steps=3, denoise_to_zero="yes"),
     TypeError, "denoise_to_zero"),
    ("return_trajectory an int", lambda: sx.invert(MODEL, "dpm++2m", NOISE, steps=3, return_trajectory=1),
     TypeError, "return_trajectory"),
    ("time_grid schedule=None", lambda: grids.time_grid(None, 4), TypeError, "schedule"),
    ("grid the pair load_grid returns",
     lambda: sx.sample(MODEL, "dpm++2m", NOISE, grid=(np.linspace(1.0, 0.01, 4), {})), TypeError, "load_grid"),
    ("adaptive solver with return_trajectory",
     lambda: sx.sample(MODEL, "dpm-solver-adaptive", NOISE, return_trajectory=True), ValueError, "return_trajectory"),
    ("adaptive solver with a grid",
     lambda: sx.sample(MODEL, "dpm-solver-adaptive", NOISE, grid=jnp.linspace(1.0, 0.001, 4)), ValueError, "grid"),
    ("float labels", lambda: pretrained.denoiser("digits-flow", labels=jnp.array([1.5, 2.0])), TypeError, "integer"),
    ("float labels in a condition",
     lambda: sx.sample(dataclasses.replace(pretrained.denoiser("digits-flow", labels=jnp.array([1, 2])),
                                           condition={"label": jnp.array([1.5, 2.0])}), "euler",
                       jnp.zeros((2, 8, 8, 1)), steps=2), TypeError, "integer"),
    ("edit source_condition=None", lambda: _edit_digits(None, {"label": jnp.array([2])}), TypeError,
     "source_condition"),
    ("edit target label out of classes", lambda: _edit_digits({"label": jnp.array([1])}, {"label": jnp.array([42])}),
     ValueError, "labels"),
    ("edit network without attention values",
     lambda: _edit_digits({"label": jnp.array([1])}, {"label": jnp.array([2])},
                          sx.Denoiser(_no_attention_network, sx.schedules.RectifiedFlow(), "velocity")),
     ValueError, "attention"),
    ("log_likelihood rtol=-1", lambda: sx.log_likelihood(MODEL, NOISE, rtol=-1.0), ValueError, "rtol"),
    ("log_likelihood rtol=atol=0", lambda: sx.log_likelihood(MODEL, NOISE, rtol=0.0, atol=0.0), ValueError, "atol"),
    ("log_likelihood max_steps=0", lambda: sx.log_likelihood(MODEL, NOISE, max_steps=0), ValueError, "max_steps"),
    ("log_likelihood max_steps too few", lambda: sx.log_likelihood(MODEL, NOISE, max_steps=2), RuntimeError,
     "max_steps=2"),
    ("log_likelihood prior returns a vector", lambda: sx.log_likelihood(MODEL, NOISE, prior=lambda x: -x**2),
     ValueError, "prior"),
    ("bits_per_dim levels=1", lambda: sx.bits_per_dim(MODEL, jnp.zeros((2, 3), jnp.int32), key=KEY, levels=1),
     ValueError, "levels"),
    ("bits_per_dim levels=0", lambda: sx.bits_per_dim(MODEL, jnp.zeros((2, 3), jnp.int32), key=KEY, levels=0),
     ValueError, "levels"),
    ("optimize_noise learning_rate a string",
     lambda: sx.optimize_noise(MODEL, "dpm++2m", NOISE, lambda s: -jnp.sum(s**2, 1), steps=3, learning_rate="0.1"),
     TypeError, "learning_rate"),
    ("optimize_noise typicality=nan",
     lambda: sx.optimize_noise(MODEL, "dpm++2m", NOISE, lambda s: -jnp.sum(s**2, 1), steps=3, typicality=np.nan),
     ValueError, "typicality"),
    ("optimize_noise reward not callable", lambda: sx.optimize_noise(MODEL, "dpm++2m", NOISE, 1.0, steps=3),
     TypeError, "reward"),
    ("optimize_noise reward NaN",
     lambda: sx.optimize_noise(MODEL, "dpm++2m", NOISE, lambda s: jnp.sum(s, 1) * jnp.nan, steps=3, iterations=2),
     FloatingPointError, "reward"),
    ("tune_grid shape an int", lambda: sx.tune_grid(MODEL, "dpm++2m", 3, KEY, shape=3), TypeError, "shape"),
    ("tune_grid key=None", lambda: sx.tune_grid(MODEL, "dpm++2m", 3, None, shape=(3,)), TypeError, "key"),
    ("tune_grid reference_steps=0",
     lambda: sx.tune_grid(MODEL, "dpm++2m", 3, KEY, shape=(3,), reference_steps=0), ValueError, "reference_steps"),
    ("tune_grid stochastic solver", lambda: sx.tune_grid(MODEL, "ddpm", 3, KEY, shape=(3,)), ValueError,
     "stochastic"),
    ("tune_grid lambda spacing on a flow to t = 0",
     lambda: sx.tune_grid(FLOW, "euler", 3, KEY, shape=(3,), spacing="lambda", samples=8), ValueError, "spacing"),
    ("tune_grid NaN reference",
     lambda: sx.tune_grid(MODEL, "dpm++2m", 3, KEY, shape=(3,), samples=8, reference=jnp.full((8, 3), jnp.nan)),
     ValueError, "reference"),
    ("tune_grid stochastic reference_solver",
     lambda: sx.tune_grid(MODEL, "dpm++2m", 3, KEY, shape=(3,), samples=8, reference_solver="ddpm"),
     ValueError, "reference_solver"),
    ("tune_grid adaptive reference_solver",
     lambda: sx.tune_grid(MODEL, "dpm++2m", 3, KEY, shape=(3,), samples=8, reference_solver="dpm-solver-adaptive"),
     ValueError, "reference_solver"),
    ("tune_grid reference and reference_solver",
     lambda: sx.tune_grid(MODEL, "dpm++2m", 3, KEY, shape=(3,), samples=8, reference=jnp.zeros((8, 3)),
                          reference_solver="rk4"), ValueError, "reference_solver"),
    ("tune_grid init on other end points",
     lambda: sx.tune_grid(MODEL, "dpm++2m", 4, KEY, shape=(3,), samples=8, init=jnp.linspace(1.0, 0.5, 5)),
     ValueError, "init"),
    ("save_grid overwrite a string", lambda: sx.save_grid("/tmp/never-written.json", jnp.linspace(1.0, 0.1, 4),
                                                          overwrite="no"), TypeError, "overwrite"),
    ("save_grid path and times swapped", lambda: sx.save_grid(jnp.linspace(1.0, 0.1, 4), "grid.json"), TypeError,
     "path"),
    ("save_grid the (times, info) pair", lambda: sx.save_grid("/tmp/never-written.json", (jnp.ones(3), None)),
     TypeError, "tune_grid returns"),
    ("save_grid metadata not JSON", lambda: sx.save_grid("/tmp/never-written.json", jnp.linspace(1.0, 0.1, 4),
                                                         model=object()), TypeError, "metadata"),
    ("load_grid an integer", lambda: sx.load_grid(3), TypeError, "path"),
    ("guidance without unconditional",
     lambda: sx.sample(sx.Denoiser(MODEL.network, SCHEDULE, guidance_scale=5.0), "dpm++2m", NOISE, steps=3),
     ValueError, "unconditional"),
    ("Denoiser condition a list", lambda: sx.Denoiser(MODEL.network, SCHEDULE, condition=[1, 2]), TypeError,
     "condition"),
    ("Denoiser threshold_ratio a string", lambda: sx.Denoiser(MODEL.network, SCHEDULE, threshold_ratio="0.9"),
     TypeError, "threshold_ratio"),
    ("digits guidance without labels", lambda: pretrained.denoiser("digits-diffusion", guidance_scale=3.0),
     ValueError, "labels"),
    ("time_grid steps a bool", lambda: sx.solvers.time_grid(SCHEDULE, True), ValueError, "steps"),
    ("time_grid increasing", lambda: sx.solvers.time_grid(SCHEDULE, 4, "uniform", t_start=0.1, t_end=0.9),
     ValueError, "t_start"),
    ("mixture with no components", lambda: sx.GaussianMixture.random(0, 8, 0), ValueError, "component"),
    ("mixture with no dimension", lambda: sx.GaussianMixture.random(0, 0, 4), ValueError, "dimension"),
    ("mixture with negative stds", lambda: sx.GaussianMixture.random(0, 8, 4, std_range=(-0.2, -0.1)), ValueError,
     "std_range"),
    ("mixture seed a float", lambda: sx.GaussianMixture.random(0.5, 8, 4), TypeError, "seed"),
    ("fine_tune shape an int",
     lambda: sx.fine_tune(MODEL, "dpm++2m", jnp.mean, trainable=lambda path: True, shape=3, key=KEY, steps=3),
     TypeError, "shape"),
    ("VPLinear t_min > t_max", lambda: sx.schedules.VPLinear(t_min=0.9, t_max=0.1), ValueError, "t_min"),
    ("VPLinear t_min=0", lambda: sx.schedules.VPLinear(t_min=0.0), ValueError, "denoise_to_zero"),
    ("VPLinear beta_min < 0", lambda: sx.schedules.VPLinear(beta_min=-1.0), ValueError, "beta_min"),
    ("VPLinear t_max a string", lambda: sx.schedules.VPLinear(t_max="1"), TypeError, "t_max"),
    ("VPCosine t_max=1", lambda: sx.schedules.VPCosine(t_max=1.0), ValueError, "t_max"),
    ("EDM t_max=-1", lambda: sx.schedules.EDM(t_max=-1.0), ValueError, "t_max"),
    ("EDM t_min=nan", lambda: sx.schedules.EDM(t_min=float("nan")), ValueError, "t_min"),
    ("RectifiedFlow t_max=2", lambda: sx.schedules.RectifiedFlow(t_max=2.0), ValueError, "t_max"),
]


@pytest.mark.parametrize("case", FRESH_TRIAL_CASES, ids=[case[0] for case in FRESH_TRIAL_CASES])
def test_fresh_trial_cases_are_clear(case):
    _, call, exception, text = case
    _assert_clear(call, exception, text)


def test_save_grid_refuses_increasing_times(tmp_path):
    path = tmp_path / "increasing.json"
    _assert_clear(lambda: sx.save_grid(path, jnp.array([0.01, 0.5, 1.0])), ValueError, "decrease")
    assert not path.exists()


def test_reversible_state_remembers_its_grid():
    state, _ = sx.reversible_invert(FLOW, NOISE, steps=6)
    back, _ = sx.reversible_sample(FLOW, state, steps=6)
    np.testing.assert_allclose(back, NOISE, atol=1e-5)
    _assert_clear(lambda: sx.reversible_sample(FLOW, state, steps=4), ValueError, "same grid")
    # A pair without its grid samples over any grid.
    other, _ = sx.reversible_sample(FLOW, sx.ReversibleState(state.x, state.x_hat), steps=4)
    assert np.all(np.isfinite(other))


def test_log_likelihood_that_runs_out_of_steps_is_nan_under_jit():
    log_p, info = jax.jit(lambda x: sx.log_likelihood(MODEL, x, max_steps=2))(NOISE)
    assert np.all(np.isnan(log_p)) and not np.any(info.reached)
    log_p, info = sx.log_likelihood(MODEL, NOISE)
    assert np.all(np.isfinite(log_p)) and np.all(info.reached)


def _labelled(labels):
    return dataclasses.replace(pretrained.denoiser("digits-flow", labels=jnp.array([1, 2])),
                               condition={"label": labels})


# A third trial (2026-12-06): cases that were unhelpful or silent, each
# (label, call, exception, text the message must contain).
THIRD_TRIAL_CASES = [
    ("ancestral eta a string", lambda: sx.solvers.AncestralSampler(eta="0.5"), TypeError, "eta"),
    ("Brownian tolerance a string", lambda: sx.BrownianNoise(tolerance="fine"), TypeError, "tolerance"),
    ("SDE-DPM-Solver++ eta=inf", lambda: sx.solvers.SDEDPMSolver(eta=float("inf")), ValueError, "eta"),
    ("adaptive safety=2", lambda: sx.solvers.AdaptiveDPMSolver(safety=2.0), ValueError, "safety"),
    ("adaptive initial_step=0", lambda: sx.solvers.AdaptiveDPMSolver(initial_step=0.0), ValueError,
     "initial_step"),
    ("adaptive max_attempts=0", lambda: sx.solvers.AdaptiveDPMSolver(max_attempts=0), ValueError, "max_attempts"),
    ("flow adaptive max_steps=0", lambda: sx.solvers.FlowAdaptive(max_steps=0), ValueError, "max_steps"),
    ("lower_order_final a string", lambda: sx.solvers.DPMSolver(lower_order_final="no"), TypeError,
     "lower_order_final"),
    ("order a float", lambda: sx.solvers.DEIS(order=2.5), TypeError, "order"),
    ("steps for an adaptive solver", lambda: sx.sample(MODEL, "dpm-solver-adaptive", NOISE, steps=10), ValueError,
     "steps="),
    ("VPDiscrete with one entry",
     lambda: sx.sample(sx.Denoiser(MODEL.network, sx.schedules.VPDiscrete(jnp.array([-0.1]))), "dpm++2m", NOISE,
                       steps=3), ValueError, "log_alphas"),
    ("VPDiscrete with positive log alphas",
     lambda: sx.sample(sx.Denoiser(MODEL.network, sx.schedules.VPDiscrete(jnp.array([0.1, 0.05, 0.01]))),
                       "dpm++2m", NOISE, steps=3), ValueError, "log_alphas"),
    ("schedule name in a list", lambda: sx.schedules.get(["vp-linear"]), ValueError, "schedule"),
    ("network without a time argument", lambda: sx.sample(sx.Denoiser(lambda x: x, SCHEDULE), "dpm++2m", NOISE,
                                                           steps=3), TypeError, "network(x, time)"),
    ("network without the condition's keyword",
     lambda: sx.sample(sx.Denoiser(lambda x, t: x, SCHEDULE, condition={"label": jnp.array([0, 1])}), "dpm++2m",
                       NOISE, steps=3), TypeError, "label"),
    ("network returning NaN", lambda: sx.sample(sx.Denoiser(lambda x, t: x * jnp.nan, SCHEDULE), "dpm++2m", NOISE,
                                                 steps=3), FloatingPointError, "network is at fault"),
    ("guidance scales of the wrong length",
     lambda: sx.sample(_guided_pair(jnp.ones(5))[1], "dpm++2m", NOISE, steps=3),
     ValueError, "guidance_scale"),
    ("misshapen x_hat",
     lambda: sx.reversible_sample(FLOW, sx.ReversibleState(NOISE, jnp.ones((2, 4))), steps=3), ValueError,
     "x_hat"),
    ("labels in two dimensions",
     lambda: sx.sample(_labelled(jnp.array([[1], [2]])), "euler", jnp.zeros((2, 8, 8, 1)), steps=2), ValueError,
     "label"),
    ("checkpoint config not JSON", lambda: checkpoints.save("/tmp/never-written.msgpack", {"w": jnp.ones(2)},
                                                            {"network": object()}), TypeError, "config"),
    ("checkpoint with a string leaf", lambda: checkpoints.save("/tmp/never-written.msgpack", {"w": "weights"}, {}),
     TypeError, "['w']"),
    ("bits_per_dim key=None", lambda: sx.bits_per_dim(MODEL, jnp.zeros((2, 3), jnp.int32), key=None), TypeError,
     "key"),
    ("bits_per_dim key=0", lambda: sx.bits_per_dim(MODEL, jnp.zeros((2, 3), jnp.int32), key=0), TypeError, "key"),
    ("bits_per_dim divergence a string",
     lambda: sx.bits_per_dim(MODEL, jnp.zeros((2, 3), jnp.int32), key=KEY, divergence="exact"), TypeError,
     "divergence"),
    ("optimize_noise with an adaptive solver",
     lambda: sx.optimize_noise(MODEL, "dpm-solver-adaptive", NOISE, lambda s: -jnp.sum(s**2, 1)), ValueError,
     "fixed-grid"),
    ("optimize_noise integer reward",
     lambda: sx.optimize_noise(MODEL, "dpm++2m", NOISE, lambda s: jnp.sum(s, 1).astype(jnp.int32), steps=3,
                               iterations=1), TypeError, "reward"),
    ("fine_tune loss per sample",
     lambda: sx.fine_tune(sx.Denoiser(jax.tree_util.Partial(lambda w, x, t: w * x, jnp.ones(())), SCHEDULE),
                          "dpm++2m", lambda s: jnp.sum(s, 1), trainable=lambda path: True, shape=(3,), key=KEY,
                          steps=3, iterations=1), ValueError, "scalar"),
    ("Denoiser threshold_max=0", lambda: sx.Denoiser(MODEL.network, SCHEDULE, threshold_ratio=0.9, threshold_max=0.0),
     ValueError, "threshold_max"),
    ("mixture weights not summing to 1",
     lambda: sx.GaussianMixture(jnp.zeros((2, 3)), jnp.ones(2), jnp.array([0.5, 0.6])).denoiser(SCHEDULE),
     ValueError, "weights"),
]


@pytest.mark.parametrize("case", THIRD_TRIAL_CASES, ids=[case[0] for case in THIRD_TRIAL_CASES])
def test_third_trial_cases_are_clear(case):
    _, call, exception, text = case
    _assert_clear(call, exception, text)


def test_unreadable_checkpoint_is_named_without_msgpack_internals(tmp_path):
    path = tmp_path / "random.msgpack"
    path.write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(checkpoints.CheckpointError) as raised:
        checkpoints.load(path, {})
    message = str(raised.value)
    assert str(path) in message and "cannot be read" in message and "unpack" not in message


def test_per_sample_guidance_scales_that_broadcast_are_accepted():
    conditional, guided = _guided_pair(jnp.array([[1.0], [2.0]]))
    samples, _ = sx.sample(guided, "dpm++2m", NOISE, steps=3)
    plain, _ = sx.sample(conditional, "dpm++2m", NOISE, steps=3)
    # Scale 1 is the conditional model; scale 2 is guided away from it.
    np.testing.assert_allclose(samples[0], plain[0], rtol=1e-5)
    assert float(jnp.max(jnp.abs(samples[1] - plain[1]))) > 1e-4


def _toy_guided(scale):
    network = jax.tree_util.Partial(lambda x, t, c: MODEL.network(x, t) + c[:, None])
    model = sx.Denoiser(network, SCHEDULE, condition={"c": jnp.ones(3)})
    return sx.classifier_free_guidance(model, {"c": jnp.ones(3)}, {"c": jnp.zeros(3)}, scale)


# A fourth trial (2026-12-07): cases that were unhelpful or silent, each
# (label, call, exception, text the message must contain).
FOURTH_TRIAL_CASES = [
    ("guidance scales along the features", lambda: sx.sample(_toy_guided(jnp.array([1.0, 2.0, 3.0])), "dpm++2m",
                                                            jnp.ones((3, 3)), steps=4), ValueError, "guidance_scale"),
    ("register an integer name", lambda: sx.solvers.register(3, sx.solvers.DPMSolver(order=1)), TypeError, "name"),
    ("mixture mean_scale=nan", lambda: sx.GaussianMixture.random(0, 3, 3, mean_scale=float("nan")), ValueError,
     "mean_scale"),
    ("mixture float dimension", lambda: sx.GaussianMixture.random(0, 3.0, 3), ValueError, "dimension"),
    ("mixture float components", lambda: sx.GaussianMixture.random(0, 3, 2.0), ValueError, "components"),
    ("mixture std_range a number", lambda: sx.GaussianMixture.random(0, 3, 3, std_range=0.2), TypeError, "std_range"),
    ("mixture std_range of one", lambda: sx.GaussianMixture.random(0, 3, 3, std_range=(0.2,)), TypeError, "std_range"),
    ("mixture sample key=0", lambda: MIXTURE.sample(0, 4), TypeError, "key"),
    ("mixture sample count 4.0", lambda: MIXTURE.sample(KEY, 4.0), ValueError, "count"),
    ("mixture sample count -1", lambda: MIXTURE.sample(KEY, -1), ValueError, "count"),
    ("flow_to_data without a batch axis", lambda: MIXTURE.flow_to_data(jnp.ones(3), SCHEDULE, 1.0), ValueError,
     "x_start"),
    ("flow_map with a schedule name", lambda: MIXTURE.flow_map(NOISE, "vp-linear", 1.0, 0.01), TypeError, "schedule"),
    ("ancestral eta a jax array", lambda: sx.solvers.AncestralSampler(eta=jnp.array(0.5)), TypeError, "eta"),
    ("restarts a list", lambda: sx.solvers.Restart(restarts=[(0.06, 0.30, 2, 2)]), TypeError, "restarts"),
    ("restarts flat", lambda: sx.solvers.Restart(restarts=(0.06, 0.30, 2, 2)), TypeError, "restarts"),
    ("restarts empty", lambda: sx.solvers.Restart(restarts=()), TypeError, "restarts"),
    ("tau_interval a list", lambda: sx.solvers.SASolver(tau_interval=[0.7, 25.0]), TypeError, "tau_interval"),
    ("VPLinear beta_min a jax array", lambda: sx.schedules.VPLinear(beta_min=jnp.array(0.1)), TypeError, "beta_min"),
    ("EDM t_max a jax array", lambda: sx.schedules.EDM(t_max=jnp.array(80.0)), TypeError, "t_max"),
    ("guidance with None conditions", lambda: sx.classifier_free_guidance(MODEL, None, None, 2.0), TypeError,
     "condition"),
    ("ddpm_linear steps 10.5", lambda: sx.schedules.VPDiscrete.ddpm_linear(steps=10.5), ValueError, "steps"),
    ("karras rho a string", lambda: sx.solvers.time_grid(SCHEDULE, 4, "karras", rho="7"), TypeError, "rho"),
    ("shift a string", lambda: sx.solvers.time_grid(sx.schedules.RectifiedFlow(), 4, "shifted", shift="3"), TypeError,
     "shift"),
    ("time_grid t_start an array", lambda: sx.solvers.time_grid(SCHEDULE, 4, "uniform", t_start=jnp.array([1.0])),
     ValueError, "t_start"),
    ("edit blocks a string",
     lambda: sx.edit(pretrained.denoiser("digits-flow-attention"), "euler", jnp.zeros((1, 8, 8, 1)),
                     {"label": jnp.array([3])}, {"label": jnp.array([8])}, 3, 1, blocks="middle"), TypeError, "blocks"),
    ("edit one image without its batch axis",
     lambda: sx.edit(pretrained.denoiser("digits-flow-attention"), "euler", jnp.zeros((8, 8, 1)),
                     {"label": jnp.array([3])}, {"label": jnp.array([8])}, 3, 1), ValueError, "batch axis"),
    ("tune_grid a reversible solver", lambda: sx.tune_grid(FLOW, "reversible-heun", 3, KEY, shape=(3,), samples=8),
     ValueError, "heun"),
    ("tune_grid an exponential integrator on a flow to t = 0",
     lambda: sx.tune_grid(FLOW, "dpm++2m", 3, KEY, shape=(3,), samples=8), ValueError, "derivative"),
    ("save_grid onto a folder", lambda: sx.save_grid("/tmp", jnp.linspace(1.0, 0.1, 4)), IsADirectoryError, "folder"),
]


@pytest.mark.parametrize("case", FOURTH_TRIAL_CASES, ids=[case[0] for case in FOURTH_TRIAL_CASES])
def test_fourth_trial_cases_are_clear(case):
    _, call, exception, text = case
    _assert_clear(call, exception, text)


def test_numpy_integers_are_integers():
    sx.solvers.Restart(restarts=((0.06, 0.30, np.int64(2), 2),))
    sx.solvers.PredictorCorrector(corrector_steps=np.int64(2))
    sx.Denoiser(MODEL.network, SCHEDULE, sample_shape=tuple(np.array([3])), classes=np.int64(10))
    sx.Hutchinson(probes_per_sample=np.int64(4))
    sx.ExactDivergence(chunk_size=np.int64(2))


def test_few_step_exponential_adjoint_warns():
    with pytest.warns(UserWarning, match="Checkpointed"):
        jax.grad(lambda n: jnp.sum(sx.sample(MODEL, "dpm++2m", n, steps=3, adjoint=sx.ExponentialAdjoint())[0]))(NOISE)


_X = MIXTURE.sample(jax.random.key(5), 2)
_MASK = jnp.array([1.0, 0.0, 1.0])
_OBSERVATION = sx.gaussian_observation(lambda x: x[:, :2], jnp.ones((2, 2)), 0.1)


def _posterior_sample(log_likelihood):
    return sx.sample(sx.posterior_guidance(MODEL, log_likelihood), "dpm++2m", NOISE, steps=4)


# A fifth trial (2026-12-07, the guidance, img2img, inpainting and posterior pieces):
# (label, call, exception, text the message must contain).
FIFTH_TRIAL_CASES = [
    ("inpaint noise_source with a deterministic solver",
     lambda: sx.inpaint(MODEL, "dpm++2m", _X, _MASK, key=KEY, steps=4, noise_source="brownian"), ValueError,
     "deterministic"),
    ("inpaint denoise_to_zero a string",
     lambda: sx.inpaint(MODEL, "dpm++2m", _X, _MASK, key=KEY, steps=4, denoise_to_zero="yes"), TypeError,
     "denoise_to_zero"),
    ("inpaint mask a string", lambda: sx.inpaint(MODEL, "dpm++2m", _X, "left", key=KEY, steps=4), TypeError, "mask"),
    ("inpaint mask None", lambda: sx.inpaint(MODEL, "dpm++2m", _X, None, key=KEY, steps=4), TypeError, "mask"),
    ("posterior known fractional", lambda: MIXTURE.posterior(_X[0], [0.5, 1.0, 0.0]), ValueError, "known"),
    ("posterior noise_std negative", lambda: MIXTURE.posterior(_X[0], [True, False, True], -0.5), ValueError,
     "noise_std"),
    ("posterior noise_std nan", lambda: MIXTURE.posterior(_X[0], [True, False, True], float("nan")), ValueError,
     "noise_std"),
    ("posterior noise_std a string", lambda: MIXTURE.posterior(_X[0], [True, False, True], "0.1"), TypeError,
     "noise_std"),
    ("posterior observed NaN", lambda: MIXTURE.posterior(_X[0].at[0].set(jnp.nan), [True, False, True]), ValueError,
     "NaN"),
    ("posterior observed too short", lambda: MIXTURE.posterior(_X[0, :2], [True, False, True]), ValueError,
     "observed"),
    ("posterior observed a batch", lambda: MIXTURE.posterior(_X[:1], [True, False, True]), ValueError, "observed"),
    ("guidance on a mixture", lambda: sx.classifier_free_guidance(MIXTURE, {}, {}, 3.0), TypeError, "Denoiser"),
    ("posterior guidance on a mixture", lambda: sx.posterior_guidance(MIXTURE, _OBSERVATION), TypeError, "Denoiser"),
    ("observation a file name", lambda: sx.gaussian_observation(lambda x: x, "y.npy", 0.1), TypeError, "observed"),
    ("observation of another shape",
     lambda: _posterior_sample(sx.gaussian_observation(lambda x: x[:, :2], jnp.ones((2, 3)), 0.1)), ValueError,
     "operator(data)"),
    ("observation with NaN", lambda: sx.gaussian_observation(lambda x: x, jnp.full((2, 3), jnp.nan), 0.1),
     ValueError, "NaN"),
    ("log_likelihood of one argument", lambda: sx.posterior_guidance(MODEL, lambda d: -jnp.sum(d**2, axis=1)),
     TypeError, "log_likelihood(data_prediction, alpha, sigma)"),
    ("log_likelihood returning NaN",
     lambda: _posterior_sample(lambda d, a, s: jnp.full(d.shape[:1], jnp.nan) * jnp.sum(d, 1)),
     FloatingPointError, "log_likelihood"),
    ("zero terminal SNR under jit",
     lambda: jax.jit(lambda table: sx.schedules.VPDiscrete(table).rescaled_to_zero_terminal_snr().log_alphas)(
         sx.schedules.VPDiscrete.ddpm_linear().log_alphas), TypeError, "concrete"),
    ("noise of object dtype", lambda: sx.sample(MODEL, "dpm++2m", np.array([[1, 2, 3], [4, 5, None]], dtype=object),
                                                steps=4), TypeError, "floating-point"),
    ("reward of two arguments",
     lambda: sx.optimize_noise(MODEL, "dpm++2m", NOISE, lambda x, y: -jnp.sum(x**2, 1), iterations=2, steps=4),
     TypeError, "reward(samples)"),
    ("Denoiser known a tuple", lambda: sx.Denoiser(MODEL.network, SCHEDULE, known=(_X, _MASK)), TypeError, "known"),
    ("Denoiser posterior a function", lambda: sx.Denoiser(MODEL.network, SCHEDULE, posterior=_OBSERVATION), TypeError,
     "posterior"),
    ("pretrained model an integer", lambda: pretrained.denoiser(3), TypeError, "checkpoint path"),
]


@pytest.mark.parametrize("case", FIFTH_TRIAL_CASES, ids=[case[0] for case in FIFTH_TRIAL_CASES])
def test_fifth_trial_cases_are_clear(case):
    _, call, exception, text = case
    _assert_clear(call, exception, text)


def _flow_guided(rule, condition=None, unconditional=None):
    network = jax.tree_util.Partial(lambda x, t, c: FLOW.network(x, t) + c[:, None])
    model = sx.Denoiser(network, sx.schedules.RectifiedFlow(), prediction="velocity", condition={"c": jnp.ones(2)})
    return sx.classifier_free_guidance(model, condition or {"c": jnp.ones(2)}, unconditional or {"c": jnp.zeros(2)},
                                       3.0, guidance=rule)


def _classes_guided(unconditional_labels):
    network = jax.tree_util.Partial(lambda x, t, label: MODEL.network(x, t))
    model = sx.Denoiser(network, SCHEDULE, condition={"label": jnp.array([1, 2])}, classes=3)
    return sx.classifier_free_guidance(model, {"label": jnp.array([1, 2])}, {"label": unconditional_labels}, 3.0)


def _code(**options):
    return sx.code(MODEL, "dpm++2m", _X, key=KEY, steps=4, **{"level": 0.5, **options})


def _train(data=None, loss=None, config=None):
    import flax.nnx as nnx

    from samplax.models import networks, training

    network = networks.MLP(dimension=2, width=8, depth=1, rngs=nnx.Rngs(0))
    return training.train(network, loss or losses.flow_matching_loss(), {"x": jnp.ones((8, 2))} if data is None
                          else data, config or training.TrainConfig(steps=2, batch_size=4, warmup_steps=0),
                          progress=False)


def _train_config(**options):
    from samplax.models import training

    return training.TrainConfig(**{"steps": 2, "batch_size": 4, "warmup_steps": 0, **options})


_DIGITS = jnp.asarray(np.zeros((2, 8, 8, 1), np.float32))

# A sixth trial (2026-12-07, on the finished guidance, restoration and editing pieces):
# (label, call, exception, text the message must contain).
SIXTH_TRIAL_CASES = [
    ("a noise-space rule at a flow's t=1", lambda: sx.sample(_flow_guided(sx.CFG(0.7, "noise")), "euler", NOISE,
                                                             steps=4), FloatingPointError, "guidance rule"),
    ("a data-space rule at a flow's t=0", lambda: sx.sample(_flow_guided(sx.CFG(0.7, "data")), "heun", NOISE,
                                                            steps=4), FloatingPointError, "'data' space"),
    ("a condition that is a string",
     lambda: sx.sample(_flow_guided(sx.CFG(), {"c": "ones"}, {"c": "zeros"}), "euler", NOISE, steps=4), TypeError,
     "condition['c']"),
    ("an unconditional scalar beside per-sample rows",
     lambda: sx.sample(_flow_guided(sx.CFG(), unconditional={"c": jnp.zeros(())}), "euler", NOISE, steps=4),
     ValueError, "unconditional['c']"),
    ("an unconditional label outside the classes",
     lambda: sx.sample(_classes_guided(jnp.array([4, 4])), "dpm++2m", NOISE, steps=4), ValueError,
     "unconditional['label'] must lie in 0..3"),
    ("an unconditional label that is a float",
     lambda: sx.sample(_classes_guided(jnp.array([2.7, 2.7])), "dpm++2m", NOISE, steps=4), TypeError,
     "unconditional['label']"),
    ("APG parallel negative", lambda: sx.APG(parallel=-1.0), ValueError, "APG.parallel"),
    ("inpaint mask that grows the batch",
     lambda: sx.inpaint(MODEL, "dpm++2m", _X, jnp.ones((1, 2, 3)), key=KEY, steps=4), ValueError, "mask"),
    ("code level at t_end", lambda: _code(level=1e-3), ValueError, "level"),
    ("code level a string", lambda: _code(level="0.5"), TypeError, "level"),
    ("code level NaN", lambda: _code(level=float("nan")), ValueError, "level"),
    ("code level None", lambda: _code(level=None), ValueError, "level"),
    ("code grid an array of times", lambda: _code(grid=jnp.linspace(0.5, 1e-3, 5)), TypeError, "grid"),
    ("observation operator of two arguments",
     lambda: sx.gaussian_observation(lambda x, y: x[:, :2], jnp.ones((2, 2)), 0.1), TypeError, "operator"),
    ("log_likelihood returning integers",
     lambda: _posterior_sample(lambda d, a, s: jnp.zeros(d.shape[0], jnp.int32)), TypeError, "floating-point"),
    ("posterior guidance twice", lambda: sx.posterior_guidance(sx.posterior_guidance(MODEL, _OBSERVATION),
                                                               _OBSERVATION), ValueError, "already has posterior"),
    ("a known region of another shape",
     lambda: sx.sample(sx.Denoiser(MODEL.network, SCHEDULE, known=sx.KnownRegion(jnp.ones((2, 4)), jnp.ones(4))),
                       "dpm++2m", NOISE, steps=4), ValueError, "KnownRegion"),
    ("a known image that is a list",
     lambda: sx.sample(sx.Denoiser(MODEL.network, SCHEDULE, known=sx.KnownRegion(_X.tolist(), _MASK)), "dpm++2m",
                       NOISE, steps=4), TypeError, "KnownRegion.image"),
    ("a fractional known mask",
     lambda: sx.sample(sx.Denoiser(MODEL.network, SCHEDULE, known=sx.KnownRegion(_X, jnp.full(3, 0.5))), "dpm++2m",
                       NOISE, steps=4), ValueError, "KnownRegion.mask"),
    ("posterior log_likelihood a string",
     lambda: sx.sample(sx.Denoiser(MODEL.network, SCHEDULE, posterior=sx.PosteriorGuidance("gaussian")), "dpm++2m",
                       NOISE, steps=4), TypeError, "log_likelihood"),
    ("posterior scale a string",
     lambda: sx.sample(sx.Denoiser(MODEL.network, SCHEDULE, posterior=sx.PosteriorGuidance(_OBSERVATION, "1")),
                       "dpm++2m", NOISE, steps=4), TypeError, "scale"),
    ("flow_map from outside the schedule", lambda: MIXTURE.flow_map(_X, SCHEDULE, 2.0, 0.01), ValueError, "outside"),
    ("zero terminal SNR of an increasing table",
     lambda: sx.schedules.VPDiscrete(jnp.array([-0.3, -0.2, -0.1])).rescaled_to_zero_terminal_snr(), ValueError,
     "decreasing"),
    ("VPDiscrete table a list",
     lambda: sx.sample(MIXTURE.denoiser(sx.schedules.VPDiscrete([-0.01, -0.5, -2.0])), "dpm++2m", NOISE, steps=4),
     TypeError, "log_alphas"),
    ("log_likelihood with per-sample conditions",
     lambda: sx.log_likelihood(_flow_guided(sx.CFG()), _X), ValueError, "condition['c']"),
    ("log_likelihood under posterior guidance",
     lambda: sx.log_likelihood(sx.posterior_guidance(MODEL, _OBSERVATION), _X), ValueError, "posterior"),
    ("log_likelihood prior of two arguments",
     lambda: sx.log_likelihood(MODEL, _X, prior=lambda z, s: -jnp.sum(z**2)), TypeError, "prior"),
    ("save_grid times a string", lambda: sx.save_grid("/tmp/unused-grid.json", "1.0, 0.5, 0.1"), TypeError, "times"),
    ("fine_tune trainable returning a string",
     lambda: sx.fine_tune(sx.Denoiser(jax.tree_util.Partial(lambda w, x, t: w * MODEL.network(x, t), jnp.ones(())),
                                      SCHEDULE), "ddim", jnp.mean, trainable=lambda path: "no", shape=(3,), key=KEY,
                          batch=4, steps=3, iterations=1), TypeError, "trainable"),
    ("typicality_penalty of one sample", lambda: sx.typicality_penalty(jnp.ones(3)), ValueError, "batch first"),
    ("shard_batch devices a string", lambda: sharding.shard_batch(NOISE, devices="cpu"), TypeError, "devices"),
    ("shard_batch of nested lists", lambda: sharding.shard_batch([[1.0, 2.0], [3.0, 4.0]]), TypeError, "jnp.asarray"),
    ("label_accuracy with string labels",
     lambda: metrics.label_accuracy(_DIGITS, np.array(["1", "2"])), TypeError, "integer"),
    ("label_accuracy of NaN images", lambda: metrics.label_accuracy(_DIGITS.at[0].set(jnp.nan), np.array([1, 2])),
     ValueError, "NaN"),
    ("classifier_confidence of 8-bit pixels", lambda: metrics.classifier_confidence(_DIGITS + 255.0), ValueError,
     "[-1, 1]"),
    ("frechet_distance of NaN features",
     lambda: metrics.frechet_distance(np.full((4, 2), np.nan), np.ones((4, 2))), ValueError, "NaN"),
    ("sliced_wasserstein projections a float",
     lambda: metrics.sliced_wasserstein(np.ones((4, 2)), np.ones((4, 2)), projections=2.5), ValueError,
     "projections"),
    ("sliced_wasserstein of NaN", lambda: metrics.sliced_wasserstein(np.full((4, 2), np.nan), np.ones((4, 2))),
     ValueError, "NaN"),
    ("sliced_wasserstein of no points", lambda: metrics.sliced_wasserstein(np.ones((0, 2)), np.ones((4, 2))),
     ValueError, "at least one point"),
    ("sliced_wasserstein seed a string",
     lambda: metrics.sliced_wasserstein(np.ones((4, 2)), np.ones((4, 2)), seed="0"), ValueError, "seed"),
    ("TrainConfig steps a float", lambda: _train_config(steps=2.5), ValueError, "steps"),
    ("TrainConfig steps a string", lambda: _train_config(steps="100"), ValueError, "steps"),
    ("TrainConfig weight_decay negative", lambda: _train_config(weight_decay=-0.1), ValueError, "weight_decay"),
    ("TrainConfig final_learning_rate negative", lambda: _train_config(final_learning_rate=-1.0), ValueError,
     "final_learning_rate"),
    ("TrainConfig seed a string", lambda: _train_config(seed="0"), ValueError, "seed"),
    ("train data an array", lambda: _train(data=jnp.ones((8, 2))), TypeError, "dict"),
    ("train loss a name", lambda: _train(loss="mse"), TypeError, "loss"),
    ("train config a dict", lambda: _train(config={"steps": 2}), TypeError, "TrainConfig"),
    ("train data with NaN", lambda: _train(data={"x": jnp.ones((8, 2)).at[3, 0].set(jnp.nan)}), ValueError,
     "data['x']"),
    ("denoising_loss schedule a name", lambda: losses.denoising_loss("vp-linear"), TypeError, "schedule"),
    ("denoising_loss t_min outside the schedule", lambda: losses.denoising_loss(SCHEDULE, t_min=-0.5),
     ValueError, "outside"),
    ("flow_matching_loss distance a name", lambda: losses.flow_matching_loss(distance="squared"), TypeError,
     "distance"),
    ("toy data of a fractional size", lambda: data.toy("moons", 2.5), ValueError, "n must"),
]


@pytest.mark.parametrize("case", SIXTH_TRIAL_CASES, ids=[case[0] for case in SIXTH_TRIAL_CASES])
def test_sixth_trial_cases_are_clear(case):
    _, call, exception, text = case
    _assert_clear(call, exception, text)


def test_sixth_trial_valid_calls():
    """Mixtures written as nested lists, and NumPy integers for distillation's k, are accepted."""
    from samplax.models import rectified_flow

    listed = sx.GaussianMixture([[0.0, 0.0]], [1.0], [1.0])
    assert listed.sample(KEY, 3).shape == (3, 2)
    assert callable(rectified_flow.distillation_loss(np.int64(2)))


def _unet(**options):
    import flax.nnx as nnx

    from samplax.models import networks

    return networks.UNet(**{"widths": (8, 16), "groups": 4, "time_features": 8, **options}, rngs=nnx.Rngs(0))


# A seventh trial (2026-12-07): (label, call, exception, text the message must contain).
SEVENTH_TRIAL_CASES = [
    ("a shifted grid on EDM", lambda: grids.time_grid(sx.schedules.EDM(), 4, "shifted"), ValueError, "shifted"),
    ("a Karras grid that overflows", lambda: grids.time_grid(SCHEDULE, 4, "karras", rho=1e-6), ValueError, "rho"),
    ("UNet widths not multiples of groups", lambda: _unet(widths=(8, 12), groups=8), ValueError, "groups"),
    ("UNet odd time_features", lambda: _unet(time_features=7), ValueError, "time_features"),
    ("UNet no channels", lambda: _unet(channels=0), ValueError, "channels"),
    ("UNet fractional widths", lambda: _unet(widths=(8.0, 16)), ValueError, "widths"),
    ("UNet no classes", lambda: _unet(num_classes=0), ValueError, "num_classes"),
]


@pytest.mark.parametrize("case", SEVENTH_TRIAL_CASES, ids=[case[0] for case in SEVENTH_TRIAL_CASES])
def test_seventh_trial_cases_are_clear(case):
    _, call, exception, text = case
    _assert_clear(call, exception, text)


def test_churn_without_an_upper_limit_is_edm_default():
    """churn_max = inf (EDM's and k-diffusion's S_tmax) is no upper limit, not an error."""
    solver = dataclasses.replace(sx.solvers.get("edm-churn"), churn_max=float("inf"))
    edm = MIXTURE.denoiser(sx.schedules.EDM(), "data")
    samples, _ = sx.sample(edm, solver, NOISE, steps=4, key=KEY)
    assert bool(jnp.all(jnp.isfinite(samples)))


class _MisshapenNoise(sx.samplers.noise.NoiseSource):
    """A noise source of one's own that draws one vector for the whole batch."""

    def drawer(self, keys, schedule, like):
        return lambda index, interval, stream: jnp.zeros(like.shape[1:], like.dtype)


class _NaNNoise(sx.samplers.noise.NoiseSource):
    def drawer(self, keys, schedule, like):
        return lambda index, interval, stream: jnp.full(like.shape, jnp.nan, like.dtype)


def _restart(*restarts):
    return sx.solvers.get("restart").__class__(restarts=restarts)


# The seventh trial's cases left open by the session that ran it.
SEVENTH_TRIAL_LEFTOVER_CASES = [
    ("euler-maruyama with an overflowing diffusion",
     lambda: sx.sample(MODEL, dataclasses.replace(sx.solvers.get("euler-maruyama"), diffusion=1e30), NOISE,
                       steps=4, key=KEY), ValueError, "hyperparameters"),
    ("a noise source drawing the wrong shape",
     lambda: sx.sample(MODEL, "ddpm", NOISE, steps=4, key=KEY, noise_source=_MisshapenNoise()), ValueError,
     "shaped like the state"),
    ("a noise source drawing NaN",
     lambda: sx.sample(MODEL, "ddpm", NOISE, steps=4, key=KEY, noise_source=_NaNNoise()), FloatingPointError,
     "noise source"),
    ("a ReversibleState with NaN times",
     lambda: sx.reversible_sample(FLOW, sx.ReversibleState(NOISE, NOISE, jnp.array([1.0, 0.5, jnp.nan]))),
     ValueError, "noise.times"),
    ("a ReversibleState with increasing times",
     lambda: sx.reversible_sample(FLOW, sx.ReversibleState(NOISE, NOISE, jnp.array([0.0, 0.5, 1.0]))),
     ValueError, "decreasing"),
    ("checkpoints.load of an integer", lambda: checkpoints.load(123, {}), TypeError, "path"),
    ("checkpoints.save of a PRNG key",
     lambda: checkpoints.save("/tmp/never-written.msgpack", {"w": jnp.ones(2), "key": KEY}, {}), TypeError,
     "['key'] is a PRNG key"),
    ("checkpoints.save of no arrays",
     lambda: checkpoints.save("/tmp/never-written.msgpack", {"w": None}, {}), ValueError, "no arrays"),
    ("save_model of a dict",
     lambda: checkpoints.save_model("/tmp/never-written.msgpack", {"w": jnp.ones(2)},
                                    {"network": "MLP", "network_kwargs": {}}), TypeError, "nnx.Module"),
    ("digits_frechet_distance with a plain function",
     lambda: metrics.digits_frechet_distance(np.zeros((4, 8, 8, 1), np.float32), classifier=lambda x: x),
     TypeError, "features"),
    ("a restart interval above the schedule's noise levels",
     lambda: sx.sample(MODEL, _restart((100.0, 500.0, 2, 2)), NOISE, steps=4, key=KEY), ValueError,
     "above the schedule's largest"),
    ("a restart interval below the grid",
     lambda: sx.sample(MODEL, "restart", NOISE, steps=4, key=KEY, t_end=0.5), ValueError, "not on the grid"),
    ("pc corrector_steps without a corrector",
     lambda: sx.solvers.PredictorCorrector(corrector="none", corrector_steps=3), ValueError, "corrector_steps"),
    ("pc snr 100", lambda: sx.solvers.PredictorCorrector(snr=100.0), ValueError, "snr"),
]


@pytest.mark.parametrize("case", SEVENTH_TRIAL_LEFTOVER_CASES, ids=[case[0] for case in SEVENTH_TRIAL_LEFTOVER_CASES])
def test_seventh_trial_leftovers_are_clear(case):
    _, call, exception, text = case
    _assert_clear(call, exception, text)


def test_checkpoint_part_and_model_config_are_checked(tmp_path):
    """part= names a missing entry with the entries there are; save_model refuses a config
    that would rebuild another network (found at save, not at load); a None entry beside
    arrays is structure and round-trips."""
    flat = checkpoints.save(tmp_path / "flat.msgpack", {"w": jnp.ones(2), "none": None}, {})
    _assert_clear(lambda: checkpoints.load(flat, {"w": jnp.ones(2)}, part="ema"), checkpoints.CheckpointError,
                  "no part 'ema'")
    tree, _ = checkpoints.load(flat, {"w": jnp.zeros(2), "none": None})
    assert tree["none"] is None and np.array_equal(tree["w"], np.ones(2))
    module, config = pretrained.load("digits-classifier")
    wider = {**config, "network_kwargs": {**config["network_kwargs"], "width": 16}}
    _assert_clear(lambda: checkpoints.save_model(tmp_path / "m.msgpack", module, wider), ValueError,
                  "does not have this module's parameters")
    assert not (tmp_path / "m.msgpack").exists()
    checkpoints.save_model(tmp_path / "m.msgpack", module, config)
    assert isinstance(checkpoints.load_model(tmp_path / "m.msgpack")[0], type(module))


def test_reversible_sample_defaults_to_the_state_grid():
    """A state from reversible_invert maps back to its data with no grid given: the
    state's own grid is the default."""
    data_points = MIXTURE.sample(KEY, 4)
    state, _ = sx.reversible_invert(FLOW, data_points, steps=6)
    back, info = sx.reversible_sample(FLOW, state)
    assert info.times.shape == (7,)
    np.testing.assert_allclose(back, data_points, atol=1e-4)


def test_a_network_called_with_a_label_out_of_range_says_so():
    module, _ = pretrained.load("digits-diffusion")
    x, t = jnp.zeros((2, 8, 8, 1)), jnp.full((2,), 0.5)
    for label in (jnp.array([0, 11]), jnp.array([-1, 0]), jnp.array([1.5, 2.0])):
        _assert_clear(lambda label=label: module(x, t, label), ValueError, "label")
    assert module(x, t, jnp.array([3, 10])).shape == x.shape  # 10 is the null label


def _mlp(dimension=2):
    import flax.nnx as nnx

    from samplax.models import networks

    return networks.MLP(dimension=dimension, width=8, depth=1, rngs=nnx.Rngs(0))


def _train_without_x():
    from samplax.models import training

    config = training.TrainConfig(steps=2, batch_size=4, warmup_steps=0)
    return training.train(_mlp(), losses.flow_matching_loss(), {"y": jnp.ones((8, 2))}, config, progress=False)


def _guided_outside_the_grid():
    network = jax.tree_util.Partial(lambda x, t, c: MODEL.network(x, t) + 0.1 * c[:, None])
    conditional = sx.Denoiser(network, SCHEDULE, condition={"c": jnp.ones(2)})
    guided = sx.classifier_free_guidance(conditional, {"c": jnp.ones(2)}, {"c": jnp.zeros(2)}, 3.0,
                                         guidance=sx.CFG(interval=(500.0, 1000.0)))
    return sx.sample(guided, "dpm++2m", NOISE, steps=3)


IMAGES = MIXTURE.sample(jax.random.key(5), 2)

# The eighth trial's unhelpful and silent cases (2026-12-07).
EIGHTH_TRIAL_CASES = [
    ("an unknown shipped model", lambda: pretrained.denoiser("digits-foo"), FileNotFoundError, "digits-diffusion"),
    ("a UNet called with other channels", lambda: _unet()(jnp.zeros((1, 8, 8, 3)), jnp.zeros(1)), ValueError,
     "channel"),
    ("an MLP called with another dimension", lambda: _mlp()(jnp.zeros((4, 3)), jnp.zeros(4)), ValueError,
     "dimension=2"),
    ("load_diffusers of a number", lambda: sx.models.load_diffusers(3), TypeError, "folder"),
    ("train data without the loss's key", _train_without_x, ValueError, "data['x']"),
    ("a guidance interval the grid never reaches", _guided_outside_the_grid, ValueError, "never act"),
    ("an inpainting mask of all ones", lambda: sx.inpaint(MODEL, "dpm++2m", IMAGES, jnp.ones(3), key=KEY, steps=4),
     ValueError, "nothing to inpaint"),
    ("an inpainting mask of 1", lambda: sx.inpaint(MODEL, "dpm++2m", IMAGES, 1, key=KEY, steps=4), ValueError,
     "all 1"),
    ("an inpainting mask of all zeros", lambda: sx.inpaint(MODEL, "dpm++2m", IMAGES, jnp.zeros(3), key=KEY, steps=4),
     ValueError, "use sample()"),
    ("a negative posterior guidance scale",
     lambda: sx.posterior_guidance(MODEL, sx.gaussian_observation(lambda x: x[:, :2], IMAGES[:, :2], 0.1), -1.0),
     ValueError, "scale must be >= 0"),
    ("code step_size without Langevin steps",
     lambda: sx.code(MODEL, "dpm++2m", IMAGES, key=KEY, level=0.5, steps=4, langevin_steps=0, step_size=0.1),
     ValueError, "step_size"),
    ("tune_grid whose every run diverges",
     lambda: sx.tune_grid(MODEL, "dpm++2m", 3, KEY, shape=(3,), samples=16, iterations=5, learning_rate=1e6,
                          reference_steps=20), FloatingPointError, "learning_rate"),
    ("optimize_noise with return_trajectory",
     lambda: sx.optimize_noise(MODEL, "dpm++2m", NOISE, lambda s: -jnp.sum(s**2, 1), steps=3, iterations=2,
                               return_trajectory=True), ValueError, "return_trajectory"),
    ("checkpoints.save of NaN weights",
     lambda: checkpoints.save("/tmp/never-written.msgpack", {"w": np.full(2, np.nan, np.float32)}, {}), ValueError,
     "['w'] holds NaN"),
    ("label_accuracy with label 12",
     lambda: metrics.label_accuracy(jnp.zeros((2, 8, 8, 1)), np.array([1, 12])), ValueError, "0..9"),
    ("label_accuracy with label -1",
     lambda: metrics.label_accuracy(jnp.zeros((2, 8, 8, 1)), np.array([-1, 3])), ValueError, "labels"),
    ("flow_to_data from a string time", lambda: MIXTURE.flow_to_data(NOISE, SCHEDULE, "1.0"), TypeError, "t_start"),
    ("rho on a uniform grid", lambda: grids.time_grid(SCHEDULE, 4, "uniform", rho=2.0), ValueError, "rho"),
    ("shift on a logsnr grid", lambda: grids.time_grid(SCHEDULE, 4, "logsnr", shift=2.0), ValueError, "shift"),
    ("denoise_to_zero on a flow solved to t = 0",
     lambda: sx.sample(FLOW, "euler", NOISE, steps=3, denoise_to_zero=True), ValueError, "denoise_to_zero"),
]


@pytest.mark.parametrize("case", EIGHTH_TRIAL_CASES, ids=[case[0] for case in EIGHTH_TRIAL_CASES])
def test_eighth_trial_cases_are_clear(case):
    _, call, exception, text = case
    _assert_clear(call, exception, text)


def test_half_precision_noise_warns_and_defaults_still_hold():
    """float16 noise runs the solve in float16, which is allowed but warned about; the
    defaults of rho and shift are those of their grids."""
    with pytest.warns(UserWarning, match="noise is float16"):
        sx.sample(MODEL, "dpm++2m", NOISE.astype(jnp.float16), steps=3)
    np.testing.assert_array_equal(grids.time_grid(SCHEDULE, 4, "karras"), grids.time_grid(SCHEDULE, 4, "karras", rho=7))
    flow = sx.schedules.RectifiedFlow()
    np.testing.assert_array_equal(grids.time_grid(flow, 4, "shifted"), grids.time_grid(flow, 4, "shifted", shift=3))


def test_tune_grid_warns_when_one_start_diverges(monkeypatch):
    """With several starts, one whose loss stops being finite is named in a warning and
    the returned grid is the best of the others."""
    from samplax.samplers import tuning

    update = tuning._optimizer_steps

    def diverging_on_the_first_start(*args):
        step, evaluate, initial_state = update(*args)
        calls = {"start": 0}

        def initial(logits):
            calls["start"] += 1
            return initial_state(logits)

        def failing(logits, state, key, training):
            logits, state, value = step(logits, state, key, training)
            return logits, state, jnp.where(calls["start"] == 1, jnp.nan, value)

        return failing, evaluate, initial

    monkeypatch.setattr(tuning, "_optimizer_steps", diverging_on_the_first_start)
    with pytest.warns(UserWarning, match="start 0 at iteration 1"):
        _, info = sx.tune_grid(MODEL, "dpm++2m", 3, KEY, shape=(3,), samples=16, iterations=3, reference_steps=20,
                               init=("logsnr", "uniform"))
    assert int(info.start) == 1


def _classifier(**options):
    import flax.nnx as nnx

    from samplax.models import networks

    return networks.Classifier(**options, rngs=nnx.Rngs(0))


def _pipeline_with(tmp_path, name, part, **changes):
    """A copy of the DDPM fixture pipeline whose `part` config has `changes` (None deletes)."""
    import json
    import shutil

    folder = tmp_path / name
    shutil.copytree(pathlib.Path(__file__).parent / "fixtures" / "diffusers" / "ddpm-pipeline", folder)
    config_file = folder / part
    config = {**json.loads(config_file.read_text()), **changes}
    config_file.write_text(json.dumps({key: value for key, value in config.items() if value is not None}))
    return folder


# The ninth trial's unhelpful and silent cases (2026-12-07).
NINTH_TRIAL_CASES = [
    ("guidance with empty conditions", lambda: sx.classifier_free_guidance(MODEL, {}, {}, 3.0), ValueError,
     "both empty"),
    ("a final learning rate above the learning rate",
     lambda: sx.models.training.TrainConfig(steps=2, batch_size=4, warmup_steps=0, learning_rate=1e-4,
                                            final_learning_rate=1.0), ValueError, "final_learning_rate"),
    ("sdedit without a key", lambda: sx.sdedit(MODEL, "ddpm", IMAGES, strength=0.5, key=None, steps=4), TypeError,
     "got None"),
    ("UniC of a solver name", lambda: sx.solvers.UniC(predictor="dpm++2m"), TypeError, "solver object"),
    ("a Classifier of odd image size", lambda: _classifier(image_size=7), ValueError, "even"),
    ("a Classifier on larger images", lambda: _classifier()(jnp.zeros((1, 16, 16, 1))), ValueError, "(8, 8, 1)"),
    ("a noise-predicting flow from t = 1",
     lambda: sx.sample(MIXTURE.denoiser(sx.schedules.RectifiedFlow(), "noise"), "euler", NOISE, steps=3), ValueError,
     "alpha = 0"),
    ("fine_tune with a stochastic solver",
     lambda: sx.fine_tune(MODEL, "ddpm", lambda s: jnp.mean(s**2), trainable=lambda path: True, shape=(3,), batch=2,
                          iterations=1, key=KEY, steps=3), ValueError, "stochastic"),
]


@pytest.mark.parametrize("case", NINTH_TRIAL_CASES, ids=[case[0] for case in NINTH_TRIAL_CASES])
def test_ninth_trial_cases_are_clear(case):
    _, call, exception, text = case
    _assert_clear(call, exception, text)


def test_ninth_trial_cases_with_files_and_data(tmp_path):
    """The ninth trial's cases that need a file or training data: a load into a template
    of another dtype kind, label options on unlabelled data, a scheduler config asking for
    thresholding, and a Frechet distance from fewer rows than features."""
    from samplax.models import training

    saved = checkpoints.save(tmp_path / "float.msgpack", {"w": np.ones(2, np.float32)}, {})
    _assert_clear(lambda: checkpoints.load(saved, {"w": np.zeros(2, np.int32)}), checkpoints.CheckpointError,
                  "stored as float32")
    config = training.TrainConfig(steps=2, batch_size=4, warmup_steps=0)
    unlabelled = {"x": jnp.ones((8, 2))}
    for loss in (losses.denoising_loss(SCHEDULE, label_dropout=0.5, null_label=3),
                 losses.flow_matching_loss(null_label=3)):
        _assert_clear(lambda loss=loss: training.train(_mlp(), loss, unlabelled, config, progress=False), ValueError,
                      "no labels")
    with pytest.warns(UserWarning, match="thresholding is an option of diffusers' own sampler"):
        sx.models.load_diffusers(_pipeline_with(tmp_path, "thresholding", "scheduler/scheduler_config.json",
                                                thresholding=True))
    _assert_clear(lambda: sx.models.load_diffusers(_pipeline_with(tmp_path, "widths", "unet/config.json",
                                                                  block_out_channels=None)),
                  ValueError, "block_out_channels not in the config")
    _assert_clear(lambda: sx.models.load_diffusers(_pipeline_with(tmp_path, "size", "unet/config.json", sample_size=0)),
                  ValueError, "unet/config.json: sample_size must be a positive integer")
    with pytest.warns(UserWarning, match="singular"):
        metrics.frechet_distance(np.eye(5)[:2], np.eye(5)[2:4])
