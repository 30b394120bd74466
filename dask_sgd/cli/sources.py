"""Training data for ``dask-sgd train``: Parquet, CSV, Zarr or .npy, as Dask collections.

Tables (Parquet, CSV) name the target by column; arrays (Zarr, .npy: one 2-D array of rows)
by column index, negative from the end. Paths may be local or fsspec URLs (``s3://…``),
except .npy, which is read from a local file (memory-mapped, never loaded whole).
"""

from __future__ import annotations

import os
from typing import Any

import dask.array as da
import dask.dataframe as dd
import fsspec
import numpy as np

FORMATS = ("parquet", "csv", "zarr", "npy")
#: rows per block when an .npy file becomes a Dask array
NPY_CHUNK_ROWS = 250_000


class DataError(ValueError):
    """The data cannot be read as asked: a missing file, column or format."""


def guess_format(path: str) -> str:
    """The format from the path's extension (a Parquet dataset may be a directory).

    Examples
    --------
    >>> guess_format("s3://bucket/train.parquet"), guess_format("rows-*.csv")
    ('parquet', 'csv')
    """
    name = path.rstrip("/").lower()
    for fmt, endings in (
        ("parquet", (".parquet", ".pq")),
        ("csv", (".csv", ".csv.gz", ".tsv")),
        ("zarr", (".zarr",)),
        ("npy", (".npy",)),
    ):
        if name.endswith(endings):
            return fmt
    fs, root = fsspec.core.url_to_fs(path)
    if fs.isdir(root) and any(p.endswith(".parquet") for p in fs.ls(root, detail=False)):
        return "parquet"
    raise DataError(
        f"Cannot tell the format of {path!r} from its name; pass --format ({', '.join(FORMATS)})."
    )


def check_exists(path: str) -> None:
    """Raise :class:`DataError` when nothing is at ``path`` (globs match at least one file)."""
    fs, root = fsspec.core.url_to_fs(path)
    found = fs.glob(root) if any(c in root for c in "*?[") else fs.exists(root)
    if not found:
        raise DataError(f"No such file or directory: {path!r}")


def read(path: str, target: str, fmt: str | None = None) -> tuple[Any, Any]:
    """``(X, y)`` as lazy Dask collections: a data frame and a series, or two arrays."""
    check_exists(path)
    fmt = fmt or guess_format(path)
    if fmt in ("parquet", "csv"):
        frame = dd.read_parquet(path) if fmt == "parquet" else dd.read_csv(path)
        if target not in frame.columns:
            raise DataError(
                f"Column {target!r} is not in {path!r}; its columns are "
                f"{', '.join(map(str, frame.columns))}."
            )
        return frame.drop(columns=target), frame[target]
    if fmt == "zarr":
        try:
            array = da.from_zarr(path)
        except ImportError as error:
            raise DataError(f"Reading Zarr needs zarr: pip install zarr ({error})") from None
    elif fmt == "npy":
        if "://" in path:
            raise DataError(f".npy is read from a local file, not {path!r}.")
        rows = np.load(os.fspath(path), mmap_mode="r")
        array = da.from_array(rows, chunks=(NPY_CHUNK_ROWS, -1))
    else:
        raise DataError(f"Unknown format {fmt!r}; choose from {', '.join(FORMATS)}.")
    return split_target_column(array, target, path)


def split_target_column(array, target: str, path: str) -> tuple[Any, Any]:
    """The 2-D ``array`` without its ``target`` column (an index), and that column."""
    if array.ndim != 2:
        raise DataError(f"{path!r} holds a {array.ndim}-D array; rows of a 2-D one are needed.")
    try:
        column = int(target)
    except ValueError:
        raise DataError(
            f"--target names a column by index for an array ({path!r}), not {target!r}."
        ) from None
    n_columns = array.shape[1]
    if not -n_columns <= column < n_columns:
        raise DataError(f"Column {column} is not in {path!r}, which has {n_columns} columns.")
    column %= n_columns
    features = [c for c in range(n_columns) if c != column]
    return array[:, features], array[:, column]
