"""Checkpoints without pickle: numeric ``.npy`` files and a JSON manifest, on any fsspec path.

A checkpoint is a directory (a local path or an fsspec URL such as ``s3://bucket/run``)::

    manifest.json               what the checkpoint holds, a SHA-256 per array file
    params-3f9c2a1b.npy         numeric arrays, written with allow_pickle=False
    opt_state.0-3f9c2a1b.npy    ...

Writing is atomic: the array files of a new checkpoint get fresh names, the manifest is
written to a temporary file and then renamed over ``manifest.json``, and only then are the
previous checkpoint's files removed. A crash at any moment leaves the previous manifest and
every file it names in place, so the previous checkpoint still loads.

Loading never runs code: JSON and ``numpy.load(allow_pickle=False)`` only. It refuses a
malformed manifest, a file whose checksum differs, and any array that is not numeric
(object arrays included), each with :class:`CheckpointError`.

Examples
--------
>>> import numpy as np, tempfile
>>> path = tempfile.mkdtemp()
>>> save_checkpoint(path, {"params": np.arange(3.0)}, {"epoch": 2})
>>> arrays, meta = load_checkpoint(path)
>>> arrays["params"], meta["epoch"]
(array([0., 1., 2.]), 2)
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
from typing import Any

import fsspec
import numpy as np

FORMAT = "dask-sgd-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: Array and file names: letters, digits, ".", "_" and "-", not starting with "."
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
_NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or loaded as it is."""


def save_checkpoint(path: str, arrays: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write ``arrays`` (numeric) and ``meta`` (JSON-able) as the checkpoint at ``path``."""
    fs, root = fsspec.core.url_to_fs(str(path))
    fs.makedirs(root, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    files = {}
    for name, value in arrays.items():
        array = np.asarray(value)
        if not _NAME.match(name):
            raise CheckpointError(f"Array name {name!r} is not a valid checkpoint name.")
        if array.dtype.kind not in _NUMERIC_KINDS:
            raise CheckpointError(f"Array {name!r} has dtype {array.dtype}: not numeric.")
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        data = buffer.getvalue()
        file = f"{name}-{token}.npy"
        with fs.open(f"{root}/{file}", "wb") as out:
            out.write(data)
        files[name] = {"file": file, "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta, "files": files}
    try:
        text = json.dumps(manifest, indent=1, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"Checkpoint metadata is not plain JSON: {error}") from None
    temporary = f"{root}/{MANIFEST}.tmp-{token}"
    with fs.open(temporary, "w") as out:
        out.write(text)
    fs.mv(temporary, f"{root}/{MANIFEST}")  # a rename: atomic on a local disk
    keep = {entry["file"] for entry in files.values()} | {MANIFEST}
    for stale in fs.ls(root, detail=False):
        name = stale.rstrip("/").rsplit("/", 1)[-1]
        if name not in keep and (name.endswith(".npy") or f"{MANIFEST}.tmp-" in name):
            fs.rm(stale)


def checkpoint_exists(path: str) -> bool:
    fs, root = fsspec.core.url_to_fs(str(path))
    return fs.exists(f"{root}/{MANIFEST}")


def load_checkpoint(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and the metadata of the checkpoint at ``path``, checked."""
    fs, root = fsspec.core.url_to_fs(str(path))
    where = f"{root}/{MANIFEST}"
    if not fs.exists(where):
        raise FileNotFoundError(f"No checkpoint at {path!r}: {MANIFEST} is missing.")
    with fs.open(where, "r") as manifest_file:
        try:
            manifest = json.load(manifest_file)
        except ValueError as error:
            raise CheckpointError(f"Malformed checkpoint manifest at {path!r}: {error}") from None
    files = _check_manifest(manifest, path)
    arrays = {}
    for name, entry in files.items():
        with fs.open(f"{root}/{entry['file']}", "rb") as array_file:
            data = array_file.read()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise CheckpointError(
                f"Checkpoint file {entry['file']!r} at {path!r} does not match its checksum."
            )
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as error:  # object arrays need pickle, which is refused
            raise CheckpointError(f"Checkpoint array {name!r} cannot be loaded: {error}") from None
        if array.dtype.kind not in _NUMERIC_KINDS:
            raise CheckpointError(f"Checkpoint array {name!r} has dtype {array.dtype}.")
        arrays[name] = array
    meta = {key: value for key, value in manifest.items() if key != "files"}
    return arrays, meta


def _check_manifest(manifest: Any, path: str) -> dict[str, dict]:
    def malformed(why: str) -> CheckpointError:
        return CheckpointError(f"Malformed checkpoint manifest at {path!r}: {why}.")

    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise malformed(f"not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise malformed(
            f"format_version {manifest.get('format_version')!r}, this library reads "
            f"{FORMAT_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise malformed("'files' is not a mapping")
    for name, entry in files.items():
        if not (
            isinstance(entry, dict)
            and _NAME.match(name)
            and isinstance(entry.get("file"), str)
            and _NAME.match(entry["file"])  # no "/", no "..": a file in the directory
            and isinstance(entry.get("sha256"), str)
        ):
            raise malformed(f"bad entry for array {name!r}")
    return files
