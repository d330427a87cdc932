"""The output folder of a run: checked before any work, claimed for the run, its progress
manifest (progress.json), what --resume may skip, and the removal of a folder that a
failed run created and wrote no image into.

Claiming: without --force or --resume the folder is made with `os.mkdir`, which fails if
it exists, so two runs cannot both make it; then every run holds an exclusive `flock` on
OUTDIR/.samplax-sample.lock until it ends. The kernel drops that lock when the process
dies, even by SIGKILL, so a killed run never blocks --resume, while a live run keeps every
other run out (--force and --resume included). In a distributed run process 0 claims the
folder and tells the others whether it could.

progress.json is written atomically before the first output file ("complete": false),
after each batch of samples ("seeds_done", in the syntax of --seeds) and at the end, after
run.json ("complete": true): an interrupted run is visibly incomplete, and --resume samples
only the seeds not done, after checking that the options that decide the images (and the
package versions) are those of the interrupted run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
from collections.abc import Iterator

import numpy as np

from samplax.cli.config import RunConfig
from samplax.cli.options import UsageError, format_seeds, parse_seeds
from samplax.cli.records import versions
from samplax.models.checkpoints import write_atomic

__all__ = ["IMAGE_OPTIONS", "LOCK", "MANIFEST", "Folder", "check", "claimed"]

LOCK = ".samplax-sample.lock"
MANIFEST = "progress.json"
# The options that decide the images of a sampling run; --resume refuses a change to any.
IMAGE_OPTIONS = ("model", "solver", "steps", "grid", "t_end", "eta", "tau", "churn", "diffusion", "snr",
                 "noise_source", "guidance_scale", "label", "seeds")
# The temporary files `write_atomic` leaves when a run is killed while writing.
_TEMPORARY = (".*.png.*.tmp", ".run.json.*.tmp", f".{MANIFEST}.*.tmp")


def _exists(path: pathlib.Path) -> str:
    return (f"output folder {str(path)!r} already exists; pass --force to write into it, --resume to finish "
            "an interrupted run in it, or choose another --outdir")


def check(config: RunConfig) -> None:
    """Before any work: the folder must not exist unless --force or --resume is given, and
    --resume needs the manifest of a run. Advisory (another run may come between this and
    the claim); `claimed` decides. Raises `UsageError`."""
    if not config.outdir.strip():
        raise UsageError(f"--outdir must name a folder, got {config.outdir!r} (which would mean the current folder)")
    path = pathlib.Path(config.outdir)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--outdir {str(path)!r} exists and is not a folder")
    if config.resume and not (path / MANIFEST).is_file():
        raise UsageError(f"--resume: {str(path)!r} holds no {MANIFEST}, so no samplax-sample run to finish")
    if path.exists() and not (config.force or config.resume):
        raise UsageError(_exists(path))


def _manifest_arguments(config: RunConfig) -> dict:
    """The options as the manifest stores them: JSON values, the seeds in the --seeds syntax."""
    arguments = {**config.arguments(), "seeds": None if config.seeds is None else format_seeds(config.seeds)}
    return json.loads(json.dumps(arguments))


class Folder:
    """The output folder of one run, claimed by `claimed`.

    Attributes:
        path: the folder.
        done: the seeds an interrupted run had finished (--resume; else empty).
        images: how many images this process has written.
        begun: whether the manifest of this run has been written.
    """

    def __init__(self, path: pathlib.Path, config: RunConfig, owner: bool, done: tuple[int, ...], weights: str):
        self.path, self.done, self.images = path, done, 0
        self._config, self._owner, self._weights = config, owner, weights  # the owner (process 0) writes the manifest
        self._seeds_done = list(done)
        self.begun = False

    def begin(self) -> None:
        """Before the first output file: write the manifest, "complete": false (once)."""
        if not self.begun:
            self._write(complete=False)
            self.begun = True

    def record(self, seeds) -> None:
        """After a batch's images are written: add their seeds to the manifest."""
        self.images += len(seeds)
        self._seeds_done += list(seeds)
        self._write(complete=False)

    def finish(self) -> None:
        """After run.json: the manifest says the run is complete."""
        self._seeds_done = list(self._config.seeds or ())
        self._write(complete=True)

    def _write(self, complete: bool) -> None:
        if not self._owner:
            return
        manifest = {
            "program": "samplax-sample",
            "complete": complete,
            "mode": self._config.mode,
            "arguments": _manifest_arguments(self._config),
            "weights_sha256": self._weights,
            "versions": versions(),
            "seeds_done": format_seeds(self._seeds_done) if self._config.mode == "sample" else None,
        }
        write_atomic(self.path / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())


def _lock(path: pathlib.Path) -> int:
    """An exclusive flock on OUTDIR/LOCK (its file descriptor); `UsageError` if another run holds it."""
    lock = path / LOCK
    handle = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # A run that ended meanwhile removed the file it held: this lock would guard nothing.
        held, named = os.fstat(handle), os.stat(lock)
        if (held.st_dev, held.st_ino) != (named.st_dev, named.st_ino):
            raise BlockingIOError
    except (BlockingIOError, FileNotFoundError):
        os.close(handle)
        raise UsageError(f"output folder {str(path)!r} is in use by another samplax-sample run; "
                         "wait for it to end or choose another --outdir") from None
    return handle


def _release(path: pathlib.Path, handle: int) -> None:
    """Remove the lock file while still holding it, then drop the lock."""
    (path / LOCK).unlink(missing_ok=True)
    os.close(handle)


def _claim(path: pathlib.Path, config: RunConfig) -> tuple[list[pathlib.Path], int]:
    """Make the folder (unless --force or --resume lets it exist) and lock it.

    Returns:
        (the folders this run made, the output folder last and its missing parents before
        it, empty if the output folder existed; the lock's file descriptor). Raises
        `UsageError` when the folder exists without --force or --resume, or another run
        holds it.
    """
    parents = [parent for parent in reversed(path.absolute().parents) if not parent.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
        created = [*parents, path]
    except FileExistsError:
        if not (config.force or config.resume):
            raise UsageError(_exists(path)) from None
        created = []
    return created, _lock(path)


def _differences(stored: dict, config: RunConfig, weights: str) -> list[str]:
    """The options deciding the images, the model's weights and the package versions that
    differ from the manifest's."""
    now, before = _manifest_arguments(config), stored.get("arguments", {})
    differing = [f"--{name.replace('_', '-')} ({before.get(name)!r}, now {now[name]!r})"
                 for name in IMAGE_OPTIONS if before.get(name) != now[name]]
    if stored.get("weights_sha256") != weights:
        differing.append(f"the weights of --model {config.model!r} (SHA-256 {str(stored.get('weights_sha256'))[:12]}, "
                         f"now {weights[:12]})")
    if stored.get("mode") != config.mode:
        differing.append(f"the mode ({stored.get('mode')!r}, now {config.mode!r})")
    current = versions()
    differing += [f"{package} {stored.get('versions', {}).get(package)} (now {version})"
                  for package, version in current.items() if stored.get("versions", {}).get(package) != version]
    return differing


def _done(path: pathlib.Path, config: RunConfig, weights: str) -> tuple[int, ...]:
    """--resume: the seeds the manifest lists as done, after checking that the options match."""
    try:
        stored = json.loads((path / MANIFEST).read_text())
        done = parse_seeds(stored["seeds_done"]) if stored["seeds_done"] else []
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"--resume: {str(path / MANIFEST)!r} is unreadable or corrupt ({error})") from None
    differing = _differences(stored, config, weights)
    if differing:
        raise UsageError(f"--resume: the run in {str(path)!r} differs in " + ", ".join(differing)
                         + "; resume with its options, or start afresh with --force")
    return tuple(done)


def _remove_leftovers(path: pathlib.Path) -> None:
    """--resume, on process 0 before any process writes: the temporary files of a killed run."""
    for pattern in _TEMPORARY:
        for leftover in path.glob(pattern):
            leftover.unlink(missing_ok=True)


def _agree(claimed_it: bool) -> bool:
    """A distributed run: process 0's word (whether it claimed the folder) to every process."""
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(claimed_it)))


def _remove_if_unused(created: list[pathlib.Path]) -> bool:
    """Remove the output folder this run made (the last of `created`) if it holds nothing
    but the manifest (no image), and then the parents the run made for it while they are
    empty; never a file of anyone else. Returns whether the output folder was removed."""
    path = created[-1]
    try:
        if not set(os.listdir(path)) <= {MANIFEST}:
            return False
        (path / MANIFEST).unlink(missing_ok=True)
        path.rmdir()
        for parent in reversed(created[:-1]):
            parent.rmdir()  # fails, and stops, at a parent someone else has put something in
    except OSError:  # gone or changed meanwhile: leave it, and keep the run's own error
        return not path.exists()
    return True


def _note(folder: Folder | None, config: RunConfig) -> str | None:
    """What a failed run left in its folder, for its error message."""
    if folder is None or not folder.begun:
        return None
    if config.mode != "sample":
        return f"{MANIFEST} marks the run in {str(folder.path)!r} incomplete; rerun it with --force"
    done = len(folder.done) + folder.images
    return (f"{done} of {len(config.seeds)} images are in {str(folder.path)!r} and {MANIFEST} marks the run "
            "incomplete; --resume with the same options finishes it")


@contextlib.contextmanager
def claimed(config: RunConfig, rank: int, processes: int, weights: str) -> Iterator[Folder]:
    """Own the output folder for the duration of the run (see the module docs).

    Args:
        config: the final run configuration.
        rank, processes: this process and the process count (process 0 claims the folder).
        weights: the SHA-256 of the model's parameters, kept in the manifest so that
            --resume refuses a --model path whose weights changed.

    Yields:
        The `Folder`. On the way out the lock is released; when the run fails, a folder it
        made and wrote no image into is removed, and the error gets a note saying what is
        left otherwise.
    """
    path = pathlib.Path(config.outdir)
    created, handle, folder = [], None, None
    try:
        if rank == 0:
            try:
                created, handle = _claim(path, config)
                folder = Folder(path, config, True, _done(path, config, weights) if config.resume else (), weights)
                if config.resume:
                    _remove_leftovers(path)
                if processes > 1:
                    folder.begin()  # before the other processes write
            except BaseException:
                if processes > 1:
                    _agree(False)
                raise
        if processes > 1 and not _agree(True):
            raise RuntimeError("process 0 could not claim the output folder (its error says why)")
        if folder is None:
            folder = Folder(path, config, False, _done(path, config, weights) if config.resume else (), weights)
        yield folder
    except BaseException as error:
        if handle is not None:
            _release(path, handle)
            handle = None
        note = None if created and _remove_if_unused(created) else _note(folder, config)
        if note:
            error.add_note(note)
        raise
    finally:
        if handle is not None:
            _release(path, handle)
