"""The command line under faults: a run killed with SIGKILL and finished with --resume
writes the same bytes as an uninterrupted run; two runs cannot own one folder; a failing
run removes the folder it made and wrote no image into; a full disk leaves a manifest
saying the run is incomplete; every failure is one line with exit status 2 (a bad
argument) or 1 (a failure while running), scripts/train.py's corrupt checkpoints included."""

import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest
from tiny_models import save_tiny

import samplax
from samplax import cli
from samplax.cli import outdir
from samplax.cli.config import from_arguments
from samplax.cli.options import MAX_SEEDS, UsageError, parse_seeds

FAST = ["--steps", "2", "--guidance-scale", "1", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("model") / "tiny.msgpack", "diffusion", seed=1)


def _main(capsys, argv):
    """(exit status, stderr) of samplax-sample, argparse's own exits included."""
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err.strip()


def _files(folder):
    return {path.name: path.read_bytes() for path in sorted(pathlib.Path(folder).iterdir())}


def _manifest(folder):
    return json.loads((pathlib.Path(folder) / outdir.MANIFEST).read_text())


def _wait_for(path, process, timeout=180.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


def test_killed_run_resumes_to_the_bytes_of_an_uninterrupted_run(capsys, tmp_path, tiny_model):
    """A run stopped after its second image holds the folder: other runs (even --force) are
    refused and change nothing; killed, it leaves progress.json incomplete, and --resume
    finishes it with the PNGs and grid.png of an uninterrupted run."""
    folder = tmp_path / "out"
    common = ["--model", tiny_model, "--seeds", "0-11", *FAST]
    process = subprocess.Popen([sys.executable, "-m", "samplax", *common, "--batch-size", "1", "--outdir", str(folder)],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(folder / "000001.png", process)  # seed 0 is recorded in the manifest by now
        process.send_signal(signal.SIGSTOP)
        before = _files(folder)
        for extra, message in ((["--force"], "in use by another"), ([], "already exists"),
                               (["--resume"], "in use by another")):
            code, err = _main(capsys, [*common, "--outdir", str(folder), *extra])
            assert code == 2 and message in err and len(err.splitlines()) == 1, err
        assert _files(folder) == before
    finally:
        process.kill()
        process.communicate()
    manifest = _manifest(folder)
    assert manifest["complete"] is False and 0 in parse_seeds(manifest["seeds_done"])
    assert not (folder / "run.json").exists()

    code, err = _main(capsys, [*common, "--steps", "3", "--outdir", str(folder), "--resume"])
    assert code == 2 and "--steps (2, now 3)" in err and len(err.splitlines()) == 1, err
    assert cli.main([*common, "--batch-size", "4", "--outdir", str(folder), "--resume"]) == 0
    assert cli.main([*common, "--batch-size", "4", "--outdir", str(tmp_path / "reference")]) == 0
    resumed, reference = _files(folder), _files(tmp_path / "reference")
    images = [name for name in reference if name.endswith(".png")]
    assert len(images) == 13 and all(resumed[name] == reference[name] for name in images)  # 12 seeds, grid.png
    assert set(resumed) == set(reference)  # no lock or temporary file left
    assert _manifest(folder)["complete"] is True and _manifest(folder)["seeds_done"] == "0-11"
    record = json.loads(resumed["run.json"])
    assert record["images"] == 12 and record["resumed_images"] == len(parse_seeds(manifest["seeds_done"]))


def _config(folder, *extra):
    return from_arguments(cli.parser().parse_args(["--outdir", str(folder), *extra]))


def test_two_runs_started_together_cannot_both_claim_a_folder(tmp_path):
    folder, results, hold = tmp_path / "out", [], threading.Event()
    start = threading.Barrier(2)

    def run(config):
        start.wait()
        try:
            with outdir.claimed(config, 0, 1, "0" * 64):
                results.append("claimed")
                assert hold.wait(30)
        except UsageError as error:
            results.append(str(error))
            hold.set()

    for extra in ((), ("--force",)):  # two fresh runs, then two --force runs on the folder left
        results.clear()
        hold.clear()
        threads = [threading.Thread(target=run, args=(_config(folder, *extra),)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        refused = [result for result in results if result != "claimed"]
        assert len(refused) == 1 and ("already exists" in refused[0] or "in use" in refused[0]), results
    assert list(folder.iterdir()) == []  # released: the lock file is gone, and nothing was written


def _sample_failing_at(monkeypatch, call):
    """samplax.sample failing with a library ValueError at its `call`-th call."""
    calls, sample = [], samplax.sample

    def failing(*args, **kwargs):
        calls.append(None)
        if len(calls) == call:
            raise ValueError("the library refuses this")
        return sample(*args, **kwargs)

    monkeypatch.setattr(samplax, "sample", failing)


def test_a_failing_run_removes_only_the_folder_it_made(capsys, monkeypatch, tmp_path, tiny_model):
    argv = ["--model", tiny_model, "--seeds", "0-3", "--batch-size", "2", *FAST]
    _sample_failing_at(monkeypatch, 1)
    code, err = _main(capsys, [*argv, "--outdir", str(tmp_path / "new")])
    assert code == 1 and err == "samplax-sample: error: the library refuses this"
    assert not (tmp_path / "new").exists()  # made by the run, no image in it: removed

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep.txt").write_text("mine")
    _sample_failing_at(monkeypatch, 1)
    code, err = _main(capsys, [*argv, "--outdir", str(tmp_path / "a" / "b" / "c" / "out")])
    assert code == 1 and sorted(p.name for p in (tmp_path / "a").iterdir()) == ["keep.txt"]  # b and c removed too

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    _sample_failing_at(monkeypatch, 1)
    code, err = _main(capsys, [*argv, "--outdir", str(mine), "--force"])
    assert code == 1 and _files(mine) == {"notes.txt": b"keep me"}  # not made by the run: untouched

    _sample_failing_at(monkeypatch, 2)  # the second batch fails: the first one's images stay
    code, err = _main(capsys, [*argv, "--outdir", str(tmp_path / "half")])
    assert code == 1 and len(err.splitlines()) == 1 and "2 of 4 images are in" in err and "--resume" in err, err
    assert _manifest(tmp_path / "half") == {**_manifest(tmp_path / "half"), "complete": False, "seeds_done": "0-1"}
    monkeypatch.undo()
    assert cli.main([*argv, "--outdir", str(tmp_path / "half"), "--resume"]) == 0
    assert sorted(_files(tmp_path / "half")) == [f"{s:06d}.png" for s in range(4)] + ["grid.png", "progress.json",
                                                                                        "run.json"]


def test_resume_refuses_a_model_path_whose_weights_changed(capsys, monkeypatch, tmp_path):
    """The manifest keeps the SHA-256 of the model's parameters: a checkpoint replaced under
    the same --model path is named, and the interrupted run's images stay as they were."""
    model = save_tiny(tmp_path / "model.msgpack", "diffusion", seed=1)
    argv = ["--model", model, "--seeds", "0-3", "--batch-size", "2", *FAST, "--outdir", str(tmp_path / "out")]
    _sample_failing_at(monkeypatch, 2)
    assert _main(capsys, argv)[0] == 1
    monkeypatch.undo()
    before = _files(tmp_path / "out")
    save_tiny(tmp_path / "model.msgpack", "diffusion", seed=2)  # other weights, same path and config
    code, err = _main(capsys, [*argv, "--resume"])
    assert code == 2 and "the weights of --model" in err and len(err.splitlines()) == 1, err
    assert _files(tmp_path / "out") == before
    save_tiny(tmp_path / "model.msgpack", "diffusion", seed=1)  # the original weights again
    assert cli.main([*argv, "--resume"]) == 0


def test_a_solver_the_library_refuses_is_one_line_and_leaves_no_folder(capsys, tmp_path):
    flow = save_tiny(tmp_path / "flow.msgpack", "flow", seed=3)
    code, err = _main(capsys, ["--model", flow, "--solver", "dpm-solver-adaptive", "--seeds", "0-1",
                               "--outdir", str(tmp_path / "out"), "--no-progress"])
    assert code in (1, 2) and err.startswith("samplax-sample: error: ") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_a_grid_for_an_adaptive_solver_is_refused(capsys, tmp_path, tiny_model):
    code, err = _main(capsys, ["--model", tiny_model, "--solver", "dpm-solver-adaptive", "--grid", "uniform",
                               "--seeds", "0-1", "--outdir", str(tmp_path / "out"), "--no-progress"])
    assert code == 2 and "--grid applies to fixed-grid solvers" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds", "0-2000000000"], f"at most {MAX_SEEDS}"),
        (["--seeds", f"0-{MAX_SEEDS // 2},{MAX_SEEDS}-{2 * MAX_SEEDS}"], f"at most {MAX_SEEDS}"),
        (["--guidance-scale", "nan"], "finite number"),
        (["--guidance-scale", "inf"], "finite number"),
        (["--t-end", "nan"], "finite number"),
        (["--solver", "ddpm", "--eta=-inf"], "finite number"),
        (["--resume"], "holds no progress.json"),
        (["--resume", "--force"], "give one of them"),
        (["--resume", "--invert", "digits:3:0"], "--resume applies to sampling"),
        (["--label", "none", "--guidance-scale", "3"], "with --label none there is none"),
    ],
)
def test_bad_arguments_fail_at_once_in_one_line(capsys, tmp_path, argv, message):
    started = time.perf_counter()
    code, err = _main(capsys, [*argv, "--outdir", str(tmp_path / "out")])
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert time.perf_counter() - started < 5 and not (tmp_path / "out").exists()


def test_a_full_disk_leaves_an_incomplete_manifest_and_resume_finishes(capsys, tmp_path, tiny_model):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        stat = os.statvfs(disk)
        (disk / "filler").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 6 * stat.f_frsize))
        argv = ["--model", tiny_model, "--seeds", "0-19", "--batch-size", "1", *FAST, "--outdir", str(disk / "out")]
        code, err = _main(capsys, argv)
        assert code == 1 and "No space left on device" in err and "--resume" in err, err
        assert len(err.splitlines()) == 1
        manifest = _manifest(disk / "out")
        done = parse_seeds(manifest["seeds_done"])
        assert manifest["complete"] is False and 0 < len(done) < 20
        assert all((disk / "out" / f"{seed:06d}.png").is_file() for seed in done)
        (disk / "filler").unlink()
        assert cli.main([*argv, "--resume"]) == 0 and _manifest(disk / "out")["complete"] is True
        assert len(list((disk / "out").glob("0*.png"))) == 20 and not list((disk / "out").glob(".*"))
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def _train_script():
    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "train.py"
    spec = importlib.util.spec_from_file_location("train_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_script_reports_a_corrupt_checkpoint_in_one_line(capsys, tmp_path, tiny_model):
    truncated = tmp_path / "truncated.msgpack"
    truncated.write_bytes(pathlib.Path(tiny_model).read_bytes()[:300])
    garbage = tmp_path / "garbage.msgpack"
    garbage.write_bytes(b"not a checkpoint")
    for checkpoint in (truncated, garbage):
        argv = ["flow", "--steps", "3", "--warmup-steps", "1", "--batch-size", "8", "--widths", "8", "--no-progress",
                "--out", str(tmp_path / "model.msgpack"), "--checkpoint", str(checkpoint)]
        assert _train_script().main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("train.py: error: ") and str(checkpoint) in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "model.msgpack").exists()


def test_train_script_refuses_a_nan_learning_rate_before_training(capsys, tmp_path):
    argv = ["flow", "--steps", "1", "--warmup-steps", "0", "--learning-rate", "nan", "--no-progress",
            "--out", str(tmp_path / "model.msgpack")]
    with pytest.raises(SystemExit) as raised:
        _train_script().main(argv)
    err = capsys.readouterr().err.strip()
    assert raised.value.code == 2 and "learning_rate" in err and not (tmp_path / "model.msgpack").exists(), err


def test_unconditional_samples_default_to_no_guidance(capsys, tmp_path):
    outdir = tmp_path / "unconditional"
    code, err = _main(capsys, ["--label", "none", "--seeds", "0-1", "--steps", "2", "--no-progress",
                               "--outdir", str(outdir)])
    assert code == 0, err
    record = json.loads((outdir / "run.json").read_text())
    assert record["arguments"]["guidance_scale"] == 1.0 and record["network_passes_per_sample"] == record["nfe"]


def test_manifest_seed_syntax_reads_back():
    from samplax.cli.options import format_seeds

    for seeds in ([0, 1, 2, 3, 7, 10, 11], [5], [9, 3, 4, 5, 0], list(range(0, 40, 2))):
        assert parse_seeds(format_seeds(seeds)) == seeds
    assert format_seeds([0, 1, 2, 3, 7, 10, 11]) == "0-3,7,10-11" and format_seeds([]) == ""


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--solver", "restart"], "--solver restart cannot step the sampling from t = 1"),
        (["--solver", "euler-maruyama"], "--solver euler-maruyama cannot step the sampling"),
        (["--grid", "logsnr"], "--grid logsnr cannot be built"),
        (["--grid", "karras"], "--grid karras cannot be built"),
        (["--invert", "digits:3:0", "--solver", "dpm++2m"], "choose a flow solver (adams-bashforth-2"),
        (["--restore", "digits:3:0", "--method", "code", "--solver", "dpm++2m"], "give --t-end > 0"),
    ],
)
def test_solvers_and_grids_that_cannot_run_on_a_flow_are_refused_up_front(capsys, monkeypatch, tmp_path, argv,
                                                                          message):
    """Exponential integrators and lambda-spaced grids where lambda is infinite (t = 0, 1 on
    a flow) are bad arguments (exit 2) found before any network evaluation."""
    flow = save_tiny(tmp_path / "flow.msgpack", "flow", seed=3)
    for name in ("sample", "invert", "code"):
        monkeypatch.setattr(f"samplax.{name}", lambda *args, **kwargs: pytest.fail("the network ran"))
    code, err = _main(capsys, ["--model", flow, *argv, "--steps", "4", "--outdir", str(tmp_path / "out"),
                               "--no-progress"])
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_an_empty_outdir_and_unreadable_models_are_bad_arguments(capsys, tmp_path, monkeypatch):
    """--outdir '' would mean the current folder (with --force, writing among the user's
    files); a --model file or folder that is not a model is a bad argument (exit 2)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    code, err = _main(capsys, ["--outdir", "", "--force", *FAST, "--seeds", "0"])
    assert code == 2 and "--outdir must name a folder" in err and len(err.splitlines()) == 1, err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]
    (tmp_path / "model.msgpack").write_bytes(b"not a checkpoint")
    (tmp_path / "folder").mkdir()
    for model, message in (("model.msgpack", "is not a samplax checkpoint"), ("notes.txt", "not a samplax checkpoint"),
                           ("folder", "has neither model_index.json")):
        code, err = _main(capsys, ["--model", model, *FAST, "--seeds", "0", "--outdir", "out"])
        assert code == 2 and err.startswith("samplax-sample: error: --model: ") and message in err, err
        assert not (tmp_path / "out").exists()
