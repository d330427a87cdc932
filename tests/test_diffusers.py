"""diffusers checkpoints in NNX: the converted UNets give diffusers' outputs on the
committed fixtures (tests/fixtures/diffusers, built by make_fixtures.py in an environment
with torch; no torch here), the scheduler configs give diffusers' noise tables, and bad
folders fail by name."""

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file, save_file

import samplax as sx
from samplax.models import diffusers
from samplax.models.networks import network_function

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "diffusers"
MODELS = {"ddpm-pipeline": FIXTURES / "ddpm-pipeline" / "unet", "conditional-unet": FIXTURES / "conditional-unet"}


def outputs_of(module, name):
    """(ours, diffusers') outputs on the fixture's inputs, channels-first as diffusers has them."""
    stored = np.load(FIXTURES / name / "outputs.npz")
    labels = {"label": stored["class_labels"]} if "class_labels" in stored else {}
    network = jax.jit(network_function(module))  # one compiled program, not one per operation
    ours = network(jnp.asarray(stored["sample"].transpose(0, 2, 3, 1)), stored["timestep"], **labels)
    return np.asarray(ours).transpose(0, 3, 1, 2), stored["output"]


@pytest.mark.parametrize("name", MODELS)
def test_converted_unet_matches_diffusers(name):
    """Largest difference at most 1e-5 of the output's largest value, in float32."""
    module, _ = diffusers.load_network(MODELS[name])
    ours, theirs = outputs_of(module, name)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max()


def test_converted_dit_and_vae_decoder_match_diffusers():
    """DiT with learned sigma: the whole output matches, and the network a sampler calls
    gives its noise half; the labels include the null label 10. The VAE decoder's images
    match too."""
    folder = FIXTURES / "dit-pipeline"
    module, config = diffusers.load_network(folder / "transformer")
    assert config.learned_sigma and config.sample_shape == (8, 8, 4) and config.null_label == 10
    stored = np.load(folder / "outputs.npz")
    x = jnp.asarray(stored["sample"].transpose(0, 2, 3, 1))
    whole = np.asarray(jax.jit(module.with_variance)(x, stored["timestep"], stored["class_labels"]))
    theirs = stored["output"].transpose(0, 2, 3, 1)
    assert np.abs(whole - theirs).max() <= 1e-5 * np.abs(theirs).max()
    noise = jax.jit(network_function(module))(x, stored["timestep"], stored["class_labels"])
    np.testing.assert_array_equal(noise, whole[..., :4])

    decoder = diffusers.load_decoder(folder)
    stored = np.load(folder / "vae" / "outputs.npz")
    images = np.asarray(jax.jit(decoder.decode)(jnp.asarray(stored["latents"].transpose(0, 2, 3, 1))))
    theirs = stored["output"].transpose(0, 2, 3, 1)
    assert images.shape == (2, 16, 16, 3) and np.abs(images - theirs).max() <= 1e-5 * np.abs(theirs).max()


def test_dit_pipeline_samples_latents_with_guidance_and_decodes_them():
    folder = FIXTURES / "dit-pipeline"
    model = diffusers.load_diffusers(folder, labels=[3, 7], guidance_scale=4.0)
    assert (model.prediction, model.classes, model.sample_shape) == ("noise", 10, (8, 8, 4))
    np.testing.assert_array_equal(model.unconditional["label"], [10, 10])  # the null label
    latents, info = sx.sample(model, "dpm++2m", jax.random.normal(jax.random.key(0), (2, 8, 8, 4)), steps=3)
    assert int(info.nfe) == 3 and bool(jnp.all(jnp.isfinite(latents)))
    images = jax.jit(diffusers.load_decoder(folder).decode_latents)(latents)
    assert images.shape == (2, 16, 16, 3) and bool(jnp.all(jnp.isfinite(images)))
    with pytest.raises(ValueError, match="has no null label"):
        diffusers.load_diffusers(FIXTURES / "conditional-unet", schedule=model.schedule, prediction="v", labels=[1],
                                 guidance_scale=2.0)
    with pytest.raises(ValueError, match="holds a UNet2DModel, not an AutoencoderKL"):
        diffusers.load_decoder(MODELS["ddpm-pipeline"])


def test_bfloat16_network_returns_float32_close_to_float32():
    module, _ = diffusers.load_network(MODELS["ddpm-pipeline"], dtype=jnp.bfloat16)
    stored = np.load(FIXTURES / "ddpm-pipeline" / "outputs.npz")
    output = jax.jit(network_function(module))(jnp.asarray(stored["sample"].transpose(0, 2, 3, 1)),
                                               stored["timestep"])
    assert output.dtype == jnp.float32
    theirs = stored["output"].transpose(0, 2, 3, 1)
    error = float(jnp.abs(output - theirs).max() / np.abs(theirs).max())
    assert 1e-5 < error < 0.05, error  # rounded (bfloat16 keeps 8 bits), not wrong


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_scheduler_config_gives_diffusers_noise_table(kind):
    schedule, prediction = diffusers.schedule_from_scheduler_config(
        {"_class_name": "DDIMScheduler", "beta_schedule": kind, "prediction_type": "v_prediction"})
    theirs = np.load(FIXTURES / "schedules.npz")[kind]  # float32, as diffusers computes it
    ours = np.exp(2 * np.asarray(schedule.log_alphas, np.float64))
    np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=1e-6)
    assert prediction == "v"


def test_zero_terminal_snr_rescale_follows_diffusers_up_to_the_floor():
    schedule, _ = diffusers.schedule_from_scheduler_config(
        {"_class_name": "DDPMScheduler", "beta_schedule": "linear", "rescale_betas_zero_snr": True})
    theirs = np.load(FIXTURES / "schedules.npz")["linear_zero_snr"]
    ours = np.exp(np.asarray(schedule.log_alphas, np.float64))
    assert theirs[-1] == 0  # samplax keeps lambda finite at t_max instead:
    np.testing.assert_allclose(ours[-1], 2.0**-12, rtol=1e-6)
    np.testing.assert_allclose(ours, np.sqrt(theirs), atol=2.0**-12)


def test_pipeline_folder_gives_a_denoiser_that_samples():
    model = diffusers.load_diffusers(FIXTURES / "ddpm-pipeline")
    assert isinstance(model.schedule, sx.schedules.VPDiscrete) and model.schedule.log_alphas.shape == (1000,)
    assert (model.prediction, model.time_input, model.sample_shape) == ("noise", "discrete", (8, 8, 3))
    # The network sees diffusers' timestep: step index i at t = (i + 1) / 1000.
    module, _ = diffusers.load_network(MODELS["ddpm-pipeline"])
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    expected = jax.jit(network_function(module))(x, jnp.array([499.0, 499.0]))
    np.testing.assert_allclose(jax.jit(model.predict("noise"))(x, jnp.float32(0.5)), expected, rtol=1e-5, atol=1e-6)
    samples, info = sx.sample(model, "dpm++2m", jax.random.normal(jax.random.key(1), (2, 8, 8, 3)), steps=4)
    assert samples.shape == (2, 8, 8, 3) and bool(jnp.all(jnp.isfinite(samples))) and int(info.nfe) == 4


def test_model_folder_takes_schedule_prediction_and_labels():
    folder = MODELS["conditional-unet"]
    with pytest.raises(ValueError, match="no scheduler config: pass schedule="):
        diffusers.load_diffusers(folder, labels=[0, 1])
    with pytest.raises(ValueError, match="class-conditional \\(5 classes\\): pass labels="):
        diffusers.load_diffusers(folder, schedule=sx.schedules.VPDiscrete.ddpm_linear(), prediction="v")
    model = diffusers.load_diffusers(folder, schedule=sx.schedules.VPDiscrete.ddpm_linear(), prediction="v",
                                     labels=[1, 4])
    assert model.classes == 5 and model.sample_shape == (8, 8, 2)
    samples, _ = sx.sample(model, "ddim", jax.random.normal(jax.random.key(2), (2, 8, 8, 2)), steps=3)
    assert bool(jnp.all(jnp.isfinite(samples)))
    with pytest.raises(ValueError, match="must lie in 0..4"):
        sx.sample(diffusers.load_diffusers(folder, schedule=model.schedule, prediction="v", labels=[1, 5]), "ddim",
                  jnp.zeros((2, 8, 8, 2)), steps=3)


def copy_of_unet(tmp_path, edit_config=None, edit_tensors=None):
    """A copy of the pipeline's unet folder with its config or tensors edited."""
    folder = tmp_path / "unet"
    shutil.copytree(MODELS["ddpm-pipeline"], folder)
    if edit_config:
        config = json.loads((folder / "config.json").read_text())
        edit_config(config)
        (folder / "config.json").write_text(json.dumps(config))
    if edit_tensors:
        tensors = load_file(str(folder / diffusers.WEIGHTS))
        save_file(edit_tensors(tensors), str(folder / diffusers.WEIGHTS))
    return folder


def test_old_attention_names_load_to_the_same_network(tmp_path):
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}

    def rename(tensors):
        renamed = {}
        for name, tensor in tensors.items():
            for new, previous in old.items():
                name = name.replace(f".{new}.", f".{previous}.")
            renamed[name] = tensor
        assert any(".proj_attn." in name for name in renamed)
        return renamed

    module, _ = diffusers.load_network(copy_of_unet(tmp_path, edit_tensors=rename))
    ours, theirs = outputs_of(module, "ddpm-pipeline")
    assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max()


def drop_one(tensors):
    del tensors["mid_block.resnets.1.conv2.weight"]
    return tensors


@pytest.mark.parametrize(("edit_config", "edit_tensors", "error", "message"), [
    (lambda c: c.update(cross_attention_dim=8), None, ValueError, "unknown UNet2DModel config key\\(s\\) "
                                                                  "\\['cross_attention_dim'\\]"),
    (lambda c: c.update(time_embedding_type="fourier"), None, ValueError, "time_embedding_type='fourier' is not"),
    (lambda c: c.update(down_block_types=["SkipDownBlock2D", "AttnDownBlock2D", "DownBlock2D"]), None, ValueError,
     "'SkipDownBlock2D'"),
    (lambda c: c.update(block_out_channels=[16, 32, 48]), None, ValueError,
     "tensor 'down_blocks.2.resnets.0.conv1.bias' has shape \\(32,\\), but .* takes \\(48,\\) there"),
    (lambda c: c.update(_class_name="UNet2DConditionModel"), None, ValueError, "'UNet2DConditionModel' is not a model"),
    (None, drop_one, ValueError, "lacks 1 parameter"),
    (None, lambda t: {**t, "extra.weight": np.zeros(3, np.float32)}, ValueError, "tensor 'extra.weight' .* no place"),
])
def test_bad_model_folders_are_refused_by_name(tmp_path, edit_config, edit_tensors, error, message):
    folder = copy_of_unet(tmp_path, edit_config, edit_tensors)
    with pytest.raises(error, match=message):
        diffusers.load_network(folder)


def test_bad_folders_and_scheduler_configs_are_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        diffusers.load_diffusers(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="neither model_index.json"):
        diffusers.load_diffusers(tmp_path)
    folder = copy_of_unet(tmp_path)
    (folder / diffusers.WEIGHTS).rename(folder / "diffusion_pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="safetensors weights only; found \\['diffusion_pytorch_model.bin'\\]"):
        diffusers.load_network(folder)
    (folder / diffusers.WEIGHTS).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        diffusers.load_network(folder)
    (folder / "config.json").write_text("{")
    with pytest.raises(ValueError, match="is not valid JSON"):
        diffusers.load_network(folder)
    with pytest.raises(ValueError, match="'ScoreSdeVeScheduler' is not one of the discrete-time VP schedulers"):
        diffusers.schedule_from_scheduler_config({"_class_name": "ScoreSdeVeScheduler"})
    with pytest.raises(ValueError, match="prediction_type 'flow' is not one of"):
        diffusers.schedule_from_scheduler_config({"_class_name": "DDPMScheduler", "prediction_type": "flow"})
    with pytest.raises(ValueError, match="beta_schedule 'sigmoid' is not supported"):
        diffusers.schedule_from_scheduler_config({"_class_name": "DDPMScheduler", "beta_schedule": "sigmoid"})


def test_command_line_samples_a_diffusers_pipeline_folder(tmp_path, capsys):
    from samplax import cli

    folder = str(FIXTURES / "ddpm-pipeline")
    outdir = tmp_path / "out"
    argv = ["--model", folder, "--seeds", "0-2", "--steps", "3", "--outdir", str(outdir), "--no-progress"]
    assert cli.main(argv) == 0
    images = sorted(outdir.glob("0*.png"))
    assert len(images) == 3
    with Image.open(images[0]) as image:
        assert (image.mode, image.size) == ("RGB", (8, 8))
    with Image.open(outdir / "grid.png") as grid:
        assert grid.mode == "RGB" and grid.size == (2 * 65 + 1, 2 * 65 + 1)
    record = json.loads((outdir / "run.json").read_text())
    assert record["model_config"] == {"diffusers": folder, "class_name": "UNet2DModel", "decoder": None,
                                      "prediction": "noise", "time_input": "discrete"}
    assert record["nfe"] == 3 and record["arguments"]["solver"] == "dpm++2m"
    capsys.readouterr()
    assert cli.main(["--model", folder, "--invert", str(images[0]), "--outdir", str(tmp_path / "inverted")]) == 2
    assert "is a folder (a diffusers checkpoint), which samples only; --invert needs" in capsys.readouterr().err
    conditional = str(FIXTURES / "conditional-unet")
    assert cli.main(["--model", conditional, "--outdir", str(tmp_path / "conditional")]) == 2
    assert "has no scheduler config" in capsys.readouterr().err
    assert not (tmp_path / "inverted").exists() and not (tmp_path / "conditional").exists()


def test_command_line_samples_a_dit_pipeline_through_its_vae(tmp_path, capsys):
    """A DiT pipeline samples latents of the model's shape, guided towards --label with
    the null label, and writes the VAE's decoding of them: the PNGs are the pixels of
    load_decoder(folder).decode_latents(sample(load_diffusers(folder, ...), noise))."""
    from samplax import cli
    from samplax.cli.images import to_pixels
    from samplax.cli.sampling import BASE_SEED

    folder = FIXTURES / "dit-pipeline"
    outdir = tmp_path / "out"
    argv = ["--model", str(folder), "--seeds", "0-1", "--steps", "3", "--label", "3", "--guidance-scale", "4",
            "--outdir", str(outdir), "--no-progress"]
    assert cli.main(argv) == 0
    record = json.loads((outdir / "run.json").read_text())
    assert record["model_config"]["decoder"] == "vae" and record["arguments"]["label"] == 3
    assert record["network_passes_per_sample"] == 6  # guided: two passes per evaluation
    model = diffusers.load_diffusers(folder, labels=[3, 3], guidance_scale=4.0)
    base = jax.random.PRNGKey(BASE_SEED)
    noise = jax.vmap(lambda s: jax.random.normal(jax.random.fold_in(base, s), (8, 8, 4)))(jnp.arange(2))
    latents, _ = sx.sample(model, "dpm++2m", noise, steps=3)
    expected = to_pixels(np.asarray(jax.jit(diffusers.load_decoder(folder).decode_latents)(latents)))
    for seed in (0, 1):
        with Image.open(outdir / f"{seed:06d}.png") as image:
            pixels = np.asarray(image)
        assert pixels.shape == (16, 16, 3)
        assert np.abs(pixels.astype(int) - expected[seed].astype(int)).max() <= 1  # rounding of one pixel level
    capsys.readouterr()
    assert cli.main(["--model", str(folder / "transformer"), "--outdir", str(tmp_path / "bare")]) == 2
    assert "without its VAE" in capsys.readouterr().err
    unguided = ["--model", str(folder), "--seeds", "0", "--steps", "2", "--label", "none", "--no-progress"]
    assert cli.main([*unguided, "--outdir", str(tmp_path / "none")]) == 0  # the null label, no guidance
    assert json.loads((tmp_path / "none" / "run.json").read_text())["arguments"]["guidance_scale"] == 1.0


def test_command_line_refuses_what_a_conditional_unet_cannot_do(tmp_path, capsys):
    """The conditional fixture has 2 channels (no PNG) and no null label (no guidance)."""
    from samplax import cli

    folder = tmp_path / "conditional"
    shutil.copytree(FIXTURES / "conditional-unet", folder)
    shutil.copy(FIXTURES / "ddpm-pipeline" / "scheduler" / "scheduler_config.json", folder)
    assert cli.main(["--model", str(folder), "--outdir", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "images of 2 channels" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
