"""The checkpoint format: exact round trips, atomic writes, and refusals that run nothing."""

from __future__ import annotations

import hashlib
import json
import multiprocessing

import numpy as np
import pytest

from dask_sgd.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

ARRAYS = {
    "params": np.linspace(-1, 1, 7),
    "opt_state.0": np.arange(5, dtype=np.int64),
    "opt_state.1": np.float32([1.5, -2.25]),
    "flag": np.array(True),
}


def test_round_trip_is_exact(tmp_path):
    meta = {"epoch": 3, "history": [{"loss": 0.25}], "classes": ["a", "b"]}
    save_checkpoint(tmp_path / "run", ARRAYS, meta)
    arrays, loaded = load_checkpoint(tmp_path / "run")
    assert arrays.keys() == ARRAYS.keys()
    for name, array in ARRAYS.items():
        assert arrays[name].dtype == array.dtype
        np.testing.assert_array_equal(arrays[name], array)
    assert {k: loaded[k] for k in meta} == meta
    assert loaded["format"] == "dask-sgd-checkpoint"


def test_fsspec_url(tmp_path):
    save_checkpoint("memory://dask-sgd-test/run", ARRAYS, {"epoch": 1})
    arrays, meta = load_checkpoint("memory://dask-sgd-test/run")
    np.testing.assert_array_equal(arrays["params"], ARRAYS["params"])
    assert meta["epoch"] == 1


def test_a_new_checkpoint_replaces_the_old_files(tmp_path):
    save_checkpoint(tmp_path, {"params": np.zeros(3)}, {"epoch": 1})
    save_checkpoint(tmp_path, {"params": np.ones(3)}, {"epoch": 2})
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".npy"]
    np.testing.assert_array_equal(load_checkpoint(tmp_path)[0]["params"], np.ones(3))


def test_non_numeric_arrays_and_metadata_are_refused_on_save(tmp_path):
    with pytest.raises(CheckpointError, match="not numeric"):
        save_checkpoint(tmp_path, {"labels": np.array(["a", "b"], dtype=object)}, {})
    with pytest.raises(CheckpointError, match="not plain JSON"):
        save_checkpoint(tmp_path, {}, {"rng": object()})
    with pytest.raises(CheckpointError, match="not a valid checkpoint name"):
        save_checkpoint(tmp_path, {"../escape": np.zeros(1)}, {})


# --- crashes while writing -----------------------------------------------------------------


def _crash_while_saving(path: str, where: str) -> None:
    """Start writing a new checkpoint, and kill the process at ``where``."""
    import os

    from fsspec.implementations import local

    if where == "between array files":
        writes = []
        real_save = np.save

        def save_then_die(*args, **kwargs):
            writes.append(1)
            if len(writes) == 2:
                os._exit(3)
            return real_save(*args, **kwargs)

        np.save = save_then_die
    else:  # the arrays and the temporary manifest are written, the rename never happens
        local.LocalFileSystem.mv = lambda *args, **kwargs: os._exit(3)
    save_checkpoint(path, {name: array + 1 for name, array in ARRAYS.items()}, {"epoch": 2})


@pytest.mark.parametrize("where", ["between array files", "before the manifest's rename"])
def test_a_crash_during_a_write_leaves_the_previous_checkpoint(tmp_path, where):
    save_checkpoint(tmp_path, ARRAYS, {"epoch": 1})
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_crash_while_saving, args=(str(tmp_path), where))
    process.start()
    process.join(60)
    assert process.exitcode == 3  # it died where we made it die
    assert len(list(tmp_path.iterdir())) > len(ARRAYS) + 1  # debris of the new checkpoint
    arrays, meta = load_checkpoint(tmp_path)
    assert meta["epoch"] == 1
    for name, array in ARRAYS.items():
        np.testing.assert_array_equal(arrays[name], array)
    save_checkpoint(tmp_path, ARRAYS, {"epoch": 3})  # the next write clears the debris
    assert len(list(tmp_path.iterdir())) == len(ARRAYS) + 1


# --- refusals ------------------------------------------------------------------------------


class WritesAFileWhenUnpickled:
    """Unpickling this runs code: it would create ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def test_an_object_array_is_refused_without_running_anything(tmp_path):
    save_checkpoint(tmp_path, {"params": np.zeros(2)}, {"epoch": 1})
    marker = tmp_path.parent / f"{tmp_path.name}-code-ran"
    crafted = np.array([WritesAFileWhenUnpickled(str(marker))], dtype=object)
    file = _manifest(tmp_path)["files"]["params"]["file"]
    np.save(tmp_path / file, crafted, allow_pickle=True)
    manifest = _manifest(tmp_path)  # a consistent checksum: only the content is hostile
    checksum = hashlib.sha256((tmp_path / file).read_bytes()).hexdigest()
    manifest["files"]["params"]["sha256"] = checksum
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"cannot be loaded.*allow_pickle"):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_a_wrong_checksum_is_refused(tmp_path):
    save_checkpoint(tmp_path, {"params": np.zeros(4)}, {})
    file = tmp_path / _manifest(tmp_path)["files"]["params"]["file"]
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: "not json {", "Malformed checkpoint manifest"),
        (lambda m: json.dumps([1, 2]), "not a dask-sgd-checkpoint manifest"),
        (lambda m: json.dumps({**m, "format_version": 99}), "format_version 99"),
        (lambda m: json.dumps({**m, "files": []}), "'files' is not a mapping"),
        (
            lambda m: json.dumps({**m, "files": {"params": {"file": "../x.npy", "sha256": ""}}}),
            "bad entry for array 'params'",
        ),
        (
            lambda m: json.dumps({**m, "files": {"params": {"file": "p.npy"}}}),
            "bad entry for array 'params'",
        ),
    ],
)
def test_malformed_manifests_are_refused(tmp_path, edit, message):
    save_checkpoint(tmp_path, {"params": np.zeros(2)}, {})
    (tmp_path / "manifest.json").write_text(edit(_manifest(tmp_path)))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path)


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        load_checkpoint(tmp_path / "nowhere")
