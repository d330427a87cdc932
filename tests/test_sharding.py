"""Sharding the batch over several (fake CPU) devices gives the unsharded result, and a
batch that does not divide over the devices fails with a clear message."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    import samplax
    from samplax.samplers.sharding import shard_batch
    assert jax.local_device_count() == 4
    mixture = samplax.GaussianMixture.random(0, dimension=3, components=2, std_range=(0.2, 0.5))
    model = mixture.denoiser(samplax.schedules.VPCosine(), "noise")
    noise = jax.random.normal(jax.random.PRNGKey(0), (8, 3))
    plain, _ = samplax.sample(model, "dpm++2m", noise, steps=5)
    sharded_noise = shard_batch(noise)
    assert len(sharded_noise.sharding.device_set) == 4
    sharded, _ = samplax.sample(model, "dpm++2m", sharded_noise, steps=5)
    assert len(sharded.sharding.device_set) == 4
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(plain), rtol=1e-5, atol=1e-6)
    try:
        shard_batch(jnp.zeros((6, 3)))
    except ValueError as error:
        assert "batch size 6 does not divide over the 4 local devices" in str(error), error
    else:
        raise AssertionError("no error for a batch of 6 on 4 devices")
    from samplax import cli
    code = cli.main(["--batch-size", "6", "--seeds", "0-5", "--outdir", "never-written"])
    assert code == 2
    print("SHARDING OK")
    """
)


def test_sharded_sampling_matches_and_bad_batches_fail(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    command = [sys.executable, "-c", SCRIPT]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SHARDING OK" in done.stdout
    assert "--batch-size 6 does not divide over the 4 local devices" in done.stderr
    assert not (tmp_path / "never-written").exists()
