"""Checkpoints: a pytree of arrays as msgpack (flax.serialization) plus a JSON config.

A checkpoint `name.msgpack` holds a header (magic string, format version, the config as
JSON) and the arrays, flattened to a dict keyed by their pytree paths, so any pytree (an
NNX state, an optax state, a dict) round-trips, and a mismatch between a file and the
expected structure is reported by path. A readable copy of the config is written beside it
as `name.json`. The header also holds a SHA-256 checksum of the arrays, which loading
verifies (a file written before checksums loads with a warning). Both files are written
atomically (temporary name, then rename), so a run killed while saving leaves the previous checkpoint intact.

A model checkpoint stores the network's parameters and a config that names the network
class and its keyword arguments (see `save_model` / `load_model`).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
import warnings

import flax.nnx as nnx
import flax.serialization as serialization
import jax
import numpy as np

from samplax.checks import check_path
from samplax.models.networks import build

__all__ = [
    "CheckpointError",
    "FORMAT_VERSION",
    "load",
    "load_model",
    "read_config",
    "save",
    "save_model",
    "write_atomic",
]

FORMAT_VERSION = 1
_MAGIC = "samplax-checkpoint"


class CheckpointError(ValueError):
    """A file that is not a readable samplax checkpoint, or does not fit what was asked."""


def write_atomic(path, data: bytes) -> None:
    """Write bytes to a temporary file in the same folder, then rename it onto path."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
        os.replace(temporary, path)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise


def _flatten(tree) -> dict[str, np.ndarray]:
    """The tree's leaves as numeric arrays keyed by their paths; anything else (a string,
    an object) is refused by path, since msgpack would store it as something else."""
    arrays = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            raise TypeError(f"checkpoint leaf {jax.tree_util.keystr(path)} is a PRNG key; save its data, "
                            "jax.random.key_data(key), and wrap it again with jax.random.wrap_key_data on load")
        array = np.asarray(leaf) if isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float, bool)) else None
        if array is None or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise TypeError(f"checkpoint leaf {jax.tree_util.keystr(path)} must be a numeric array or number, got "
                            f"{type(leaf).__name__} {leaf!r:.60}")
        if np.issubdtype(array.dtype, np.inexact) and not np.all(np.isfinite(array)):
            raise ValueError(f"checkpoint leaf {jax.tree_util.keystr(path)} holds NaN or inf values; not written "
                             "(a checkpoint that loading would refuse)")
        arrays[jax.tree_util.keystr(path)] = array
    return arrays


def _checksum(arrays: dict) -> str:
    """SHA-256 of the arrays: each one's key, dtype, shape and bytes, in key order."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        value = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def parameters_sha256(module: nnx.Module) -> str:
    """The SHA-256 of a network's parameters, as `save_model` stores it (`weights_sha256`)."""
    return _checksum(_flatten(nnx.state(module, nnx.Param)))


def _json_path(path: pathlib.Path) -> pathlib.Path:
    return path.with_suffix(".json")


def save(path, tree, config: dict) -> pathlib.Path:
    """Save a pytree of arrays and a JSON-serialisable config; returns the msgpack path."""
    check_path("path", path)
    path = pathlib.Path(path)
    if path.suffix != ".msgpack":
        raise ValueError(f"checkpoint path must end in .msgpack, got {str(path)!r}")
    if not isinstance(config, dict):
        raise TypeError(f"checkpoint config must be a dict, got {type(config).__name__}")
    try:
        config_text = json.dumps(config, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"checkpoint config must hold JSON values only (str, number, bool, None, list, dict) and "
                        f"finite numbers: {error}") from None
    arrays = _flatten(tree)
    if not arrays:
        raise ValueError(f"checkpoint tree holds no arrays (got {tree!r:.60}); nothing would be saved")
    checksum = _checksum(arrays)
    payload = {"magic": _MAGIC, "format_version": FORMAT_VERSION, "config": config_text, "arrays": arrays,
               "checksum": checksum}
    readable = json.dumps({"format_version": FORMAT_VERSION, **config, "weights_sha256": checksum}, indent=2,
                          sort_keys=True) + "\n"
    write_atomic(_json_path(path), readable.encode())
    write_atomic(path, serialization.msgpack_serialize(payload))
    return path


def _read(path) -> dict:
    check_path("path", path)
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
    except Exception:  # msgpack raises several unrelated types, with internal messages, on bad input
        raise CheckpointError(
            f"{str(path)!r} is not a samplax checkpoint or is corrupt: it cannot be read as msgpack "
            f"({path.stat().st_size} bytes)"
        ) from None
    if not isinstance(payload, dict) or payload.get("magic") != _MAGIC:
        raise CheckpointError(f"{str(path)!r} is not a samplax checkpoint (no samplax header)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint format version {payload.get('format_version')!r}; "
            f"this samplax reads version {FORMAT_VERSION}"
        )
    try:
        payload["config"] = json.loads(payload["config"])
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{str(path)!r} has a corrupt config ({error})") from None
    if not isinstance(payload.get("arrays"), dict):
        raise CheckpointError(f"{str(path)!r} is corrupt (its arrays are missing)")
    if "checksum" not in payload:
        warnings.warn(f"{str(path)!r} has no checksum (written before samplax stored one); its arrays are not "
                      "verified. Save it again to add one.", stacklevel=3)
    elif payload["checksum"] != _checksum(payload["arrays"]):
        raise CheckpointError(f"{str(path)!r} is corrupt: its arrays do not match the checksum stored with them")
    return payload


def read_config(path) -> dict:
    """The config stored in a checkpoint (read from the msgpack file itself)."""
    return _read(path)["config"]


def load(path, template, *, part: str | None = None):
    """Load a checkpoint into the structure of `template` (a pytree of arrays of the
    expected shapes); returns (tree, config). With `part`, only the entry `part` of a
    checkpoint saved from a dict is read (the others are ignored). Missing, extra or
    misshapen arrays raise CheckpointError naming them."""
    payload = _read(path)
    arrays = payload["arrays"]
    if part is not None:
        prefix = jax.tree_util.keystr((jax.tree_util.DictKey(part),))
        inside = {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)}
        if not inside:
            entries = sorted({key.split("]")[0] + "]" for key in arrays})
            raise CheckpointError(f"{str(path)!r} has no part {part!r}: its top-level entries are {entries[:8]}")
        arrays = inside
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    expected = [jax.tree_util.keystr(p) for p, _ in paths]
    missing = [key for key in expected if key not in arrays]
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{str(path)!r} does not fit the expected structure: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    leaves = []
    for (_, leaf), key in zip(paths, expected, strict=True):
        value = np.asarray(arrays[key])
        if value.shape != tuple(np.shape(leaf)):
            raise CheckpointError(f"{str(path)!r}: {key} has shape {value.shape}, expected {tuple(np.shape(leaf))}")
        if np.issubdtype(value.dtype, np.inexact) and not np.all(np.isfinite(value)):
            raise CheckpointError(f"{str(path)!r}: {key} contains NaN or inf values")
        wanted = np.dtype(getattr(leaf, "dtype", np.asarray(leaf).dtype))
        if wanted.kind != value.dtype.kind and not (wanted.kind in "fV" and value.dtype.kind in "fV"):
            raise CheckpointError(f"{str(path)!r}: {key} is stored as {value.dtype}, and the template asks for "
                                  f"{wanted}: converting would change its values")
        leaves.append(value.astype(wanted))
    return jax.tree_util.tree_unflatten(treedef, leaves), payload["config"]


def save_model(path, module: nnx.Module, config: dict) -> pathlib.Path:
    """Save a network's parameters; config must name it ("network", "network_kwargs"), and
    the network it names must have the module's parameters, so that `load_model` rebuilds
    this module (checked here, not discovered at load)."""
    if not isinstance(module, nnx.Module):
        raise TypeError(f"module must be a flax.nnx.Module, got {type(module).__name__}")
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    for key in ("network", "network_kwargs"):
        if key not in config:
            raise ValueError(f"config must contain {key!r} so the network can be rebuilt")
    parameters = nnx.state(module, nnx.Param)
    rebuilt = nnx.state(nnx.eval_shape(lambda: build(config["network"], config["network_kwargs"])), nnx.Param)
    shapes = {key: np.shape(value) for key, value in _flatten_shapes(parameters).items()}
    expected = {key: np.shape(value) for key, value in _flatten_shapes(rebuilt).items()}
    if shapes != expected:
        differing = sorted(key for key in shapes.keys() | expected.keys() if shapes.get(key) != expected.get(key))
        raise ValueError(
            f"config's network {config['network']!r} with {config['network_kwargs']} does not have this module's "
            f"parameters (they differ at {differing[:4]}): load_model could not rebuild it"
        )
    return save(path, parameters, {**config, "kind": "model"})


def _flatten_shapes(tree) -> dict:
    return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def load_model(path) -> tuple[nnx.Module, dict]:
    """Rebuild a network from a model checkpoint, or from a training checkpoint (its EMA
    weights); returns (module, config)."""
    config = read_config(path)
    if "network" not in config or "network_kwargs" not in config:
        raise CheckpointError(f"{str(path)!r} is a checkpoint but not of a network (no 'network' in its config)")
    # Build the module abstractly (shapes only, no initialisation work), then fill in weights.
    module = nnx.eval_shape(lambda: build(config["network"], config["network_kwargs"]))
    template = nnx.state(module, nnx.Param)
    part = "ema" if config.get("kind") == "training" else None
    params, _ = load(path, template, part=part)
    nnx.update(module, params)
    return module, config
