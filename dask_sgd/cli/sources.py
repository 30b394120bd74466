"""Training data for ``dask-sgd train``: Parquet, CSV, Zarr, .npy or svmlight, as Dask collections.

Tables (Parquet, CSV) name the target by column; arrays (Zarr, .npy: one 2-D array of rows)
by column index, negative from the end; svmlight / libsvm files carry their labels. Paths may
be local or fsspec URLs (``s3://…``), except .npy, which is read from a local file
(memory-mapped, never loaded whole).

Sparse input becomes a Dask array whose blocks are ``scipy.sparse.csr_matrix``: svmlight files
(one block per file, parsed on a worker) and tables whose columns are hashed on the workers
(``hash_features``: one block per partition).
"""

from __future__ import annotations

import os
import re
from typing import Any

import dask
import dask.array as da
import dask.dataframe as dd
import fsspec
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.datasets import load_svmlight_file
from sklearn.utils import murmurhash3_32

FORMATS = ("parquet", "csv", "zarr", "npy", "svmlight")
#: svmlight / libsvm file names, optionally compressed (fsspec infers the compression)
SVMLIGHT_ENDINGS = tuple(
    ext + z for ext in (".svm", ".svmlight", ".libsvm") for z in ("", ".gz", ".bz2", ".xz")
)
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
        ("svmlight", SVMLIGHT_ENDINGS),
    ):
        if name.endswith(endings):
            return fmt
    fs, root = fsspec.core.url_to_fs(path)
    if fs.isdir(root):
        names = fs.ls(root, detail=False)
        if any(p.endswith(".parquet") for p in names):
            return "parquet"
        if any(p.lower().endswith(SVMLIGHT_ENDINGS) for p in names):
            return "svmlight"
    raise DataError(
        f"Cannot tell the format of {path!r} from its name; pass --format ({', '.join(FORMATS)})."
    )


def check_exists(path: str) -> None:
    """Raise :class:`DataError` when nothing is at ``path`` (globs match at least one file)."""
    fs, root = fsspec.core.url_to_fs(path)
    found = fs.glob(root) if any(c in root for c in "*?[") else fs.exists(root)
    if not found:
        raise DataError(f"No such file or directory: {path!r}")


def read(
    path: str,
    target: str | None,
    fmt: str | None = None,
    *,
    n_features: int | None = None,
    index_base: str = "auto",
    hash_features: int | None = None,
) -> tuple[Any, Any]:
    """``(X, y)`` as lazy Dask collections: a data frame and a series, or two arrays.

    ``n_features`` and ``index_base`` apply to svmlight files (:func:`read_svmlight`),
    ``hash_features`` to tables (:func:`hash_table`). svmlight input without both
    ``n_features`` and ``index_base`` runs a first pass over its files, on the cluster of the
    client in use, if there is one.
    """
    check_exists(path)
    fmt = fmt or guess_format(path)
    check_options(fmt, target, n_features, index_base, hash_features)
    if fmt == "svmlight":
        return read_svmlight(path, n_features=n_features, index_base=index_base)
    if fmt in ("parquet", "csv"):
        frame = dd.read_parquet(path) if fmt == "parquet" else dd.read_csv(path)
        if target not in frame.columns:
            raise DataError(
                f"Column {target!r} is not in {path!r}; its columns are "
                f"{', '.join(map(str, frame.columns))}."
            )
        if hash_features is not None:
            return hash_table(frame, target, hash_features)
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


def check_options(
    fmt: str,
    target: str | None,
    n_features: int | None = None,
    index_base: str = "auto",
    hash_features: int | None = None,
) -> None:
    """Raise :class:`DataError` where an option does not fit the format (reads nothing)."""
    if fmt not in FORMATS:
        raise DataError(f"Unknown format {fmt!r}; choose from {', '.join(FORMATS)}.")
    if hash_features is not None and fmt not in ("parquet", "csv"):
        raise DataError("--hash-features hashes a table's columns (Parquet or CSV).")
    if fmt == "svmlight":
        if target is not None:
            raise DataError("svmlight files carry their labels; --target is for other formats.")
        if index_base not in ("auto", "0", "1"):
            raise DataError(f"--index-base is auto, 0 or 1, not {index_base!r}.")
        if n_features is not None and n_features < 1:
            raise DataError(f"--n-features must be a positive integer, not {n_features}.")
        return
    if target is None:
        raise DataError("--target is needed: the name (or index) of the target column.")
    if n_features is not None or index_base != "auto":
        raise DataError("--n-features and --index-base are for svmlight files.")


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


# svmlight / libsvm: one block per file --------------------------------------------------------


def svmlight_files(path: str) -> list[str]:
    """The files at ``path`` (a file, a glob, or a directory's svmlight files), sorted, as URLs
    a worker can open."""
    fs, root = fsspec.core.url_to_fs(path)
    if any(c in root for c in "*?["):
        found = fs.glob(root)
    elif fs.isdir(root):
        found = [p for p in fs.ls(root, detail=False) if p.lower().endswith(SVMLIGHT_ENDINGS)]
    else:
        found = [root]
    found = sorted(p for p in found if fs.isfile(p))
    if not found:
        raise DataError(f"No svmlight files ({', '.join(SVMLIGHT_ENDINGS[::4])}) in {path!r}.")
    return [fs.unstrip_protocol(p) if "://" in path else p for p in found]


def _load_svmlight(url: str, n_features: int | None, zero_based: bool):
    """One file's ``(X, y)``: CSR rows and labels (on a worker)."""
    with fsspec.open(url, "rb", compression="infer") as file:
        try:
            return load_svmlight_file(file, n_features=n_features, zero_based=zero_based)
        except ValueError as error:
            raise DataError(f"{url}: {error}") from None


def _scan_svmlight(url: str) -> tuple[int, int | None, int | None]:
    """``(rows, lowest index, highest index)`` as written in one file (on a worker)."""
    X, _ = _load_svmlight(url, None, True)  # zero-based: the indices as written
    if X.nnz == 0:
        return X.shape[0], None, None
    return X.shape[0], int(X.indices.min()), int(X.indices.max())


def read_svmlight(
    path: str, *, n_features: int | None = None, index_base: str = "auto"
) -> tuple[da.Array, da.Array]:
    """``(X, y)``: a Dask array of CSR blocks, one per file, and its labels.

    Every block must have the same width and read indices alike, which a file alone cannot
    tell: with ``n_features`` and ``index_base`` (``"0"`` or ``"1"``) given, the blocks'
    row counts stay unknown until read; otherwise a first pass parses every file on the
    workers (in parallel, one task per file) for its rows and lowest and highest index.
    ``index_base="auto"`` is scikit-learn's rule for several files: one-based unless some
    file has an index 0. The width is then the highest index's column plus one, or
    ``n_features`` where that is given (it must hold every index).
    """
    check_options("svmlight", None, n_features, index_base)
    urls = svmlight_files(path)
    rows: list[float] = [np.nan] * len(urls)
    if n_features is None or index_base == "auto":
        scans = dask.compute(
            *[
                dask.delayed(_scan_svmlight, pure=True)(
                    url, dask_key_name=f"dask-sgd-scan-svmlight-{dask.base.tokenize(url)}"
                )
                for url in urls
            ]
        )
        rows = [scan[0] for scan in scans]
        lowest = [scan[1] for scan in scans if scan[1] is not None]
        highest = max((scan[2] for scan in scans if scan[2] is not None), default=-1)
        if index_base == "auto":
            index_base = "1" if lowest and min(lowest) > 0 else "0"
        elif index_base == "1" and lowest and min(lowest) == 0:
            raise DataError(f"{path!r} has an index 0, which --index-base 1 does not allow.")
        width = highest + 1 if index_base == "0" else max(highest, 0)
        if n_features is not None and width > n_features:
            raise DataError(
                f"{path!r} has feature index {highest}, beyond --n-features {n_features}."
            )
        n_features = n_features or max(width, 1)
    zero_based = index_base == "0"
    meta = sp.csr_matrix((0, n_features), dtype=np.float64)
    blocks, labels = [], []
    for url, count in zip(urls, rows, strict=True):
        name = f"dask-sgd-read-svmlight-{dask.base.tokenize(url, n_features, zero_based)}"
        both = dask.delayed(_load_svmlight, pure=True)(
            url, n_features, zero_based, dask_key_name=name
        )
        blocks.append(
            da.from_delayed(both[0], shape=(count, n_features), dtype=np.float64, meta=meta)
        )
        labels.append(da.from_delayed(both[1], shape=(count,), dtype=np.float64))
    return da.concatenate(blocks, axis=0), da.concatenate(labels)


# Tables hashed into sparse rows: one block per partition ----------------------------------------


def parse_size(text: str) -> int:
    """A positive integer written as ``1048576``, ``2**20`` or ``2^20``.

    Examples
    --------
    >>> parse_size("2**20"), parse_size("1000")
    (1048576, 1000)
    """
    power = re.fullmatch(r"\s*(\d+)\s*(?:\*\*|\^)\s*(\d+)\s*", text)
    try:
        value = int(power[1]) ** int(power[2]) if power else int(text)
    except ValueError:
        value = 0
    if value < 1 or value > 2**31 - 1:  # CSR's int32 indices
        raise ValueError(f"a positive integer below 2**31 (like 2**20), not {text!r}")
    return value


def feature_bucket(key: str, n_features: int) -> int:
    """The column of a hashed feature: scikit-learn's ``FeatureHasher`` column for ``key``."""
    return abs(murmurhash3_32(key, seed=0)) % n_features


def hash_rows(frame: pd.DataFrame, n_features: int, numeric: tuple[str, ...]) -> sp.csr_matrix:
    """One partition's rows hashed into ``n_features`` columns (on a worker).

    A column in ``numeric`` adds its value at the column of its name; any other adds 1 at the
    column of ``"name=value"``. Missing values (and numeric zeros) add nothing; colliding
    features add up. This is ``FeatureHasher(n_features, alternate_sign=False)`` on each row's
    ``{name: value}``, hashing each distinct value once rather than once per row.
    """
    rows, columns, values = [], [], []
    for name in frame.columns:
        column = frame[name]
        if name in numeric:
            numbers = column.to_numpy(dtype=np.float64, na_value=np.nan)
            keep = np.flatnonzero(~np.isnan(numbers) & (numbers != 0))
            columns.append(np.full(len(keep), feature_bucket(str(name), n_features)))
            values.append(numbers[keep])
        else:
            codes, uniques = pd.factorize(column, use_na_sentinel=True)
            buckets = np.array(
                [feature_bucket(f"{name}={value}", n_features) for value in uniques],
                dtype=np.int64,
            )
            keep = np.flatnonzero(codes >= 0)
            columns.append(buckets[codes[keep]])
            values.append(np.ones(len(keep)))
        rows.append(keep)
    n_rows = len(frame)
    if not rows:
        return sp.csr_matrix((n_rows, n_features))
    matrix = sp.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))),
        shape=(n_rows, n_features),
    )
    matrix.sum_duplicates()  # collisions add up, as FeatureHasher's do
    return matrix


def _partition_labels(frame: pd.DataFrame, target: str) -> np.ndarray:
    return frame[target].to_numpy()


def hash_table(frame: dd.DataFrame, target: str, n_features: int) -> tuple[da.Array, da.Array]:
    """``(X, y)``: every column but ``target`` hashed into ``n_features`` sparse columns, a
    Dask array of CSR blocks, one per partition (row counts unknown until read), and the
    target as a Dask array. Float columns are numbers, every other column a category."""
    numeric = tuple(
        name
        for name, dtype in frame.dtypes.items()
        if name != target and pd.api.types.is_float_dtype(dtype)
    )
    features = [name for name in frame.columns if name != target]
    meta = sp.csr_matrix((0, n_features), dtype=np.float64)
    label_meta = frame[target]._meta.to_numpy()
    token = dask.base.tokenize(frame, target, n_features)
    blocks, labels = [], []
    for i, part in enumerate(frame.to_delayed()):
        hashed = dask.delayed(hash_rows, pure=True)(
            part[features], n_features, numeric, dask_key_name=f"dask-sgd-hash-{token}-{i}"
        )
        blocks.append(
            da.from_delayed(hashed, shape=(np.nan, n_features), dtype=np.float64, meta=meta)
        )
        label = dask.delayed(_partition_labels, pure=True)(part, target)
        labels.append(
            da.from_delayed(label, shape=(np.nan,), dtype=label_meta.dtype, meta=label_meta)
        )
    return da.concatenate(blocks, axis=0), da.concatenate(labels)
