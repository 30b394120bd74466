"""glibc's allocator held steady while units train on a worker.

Dask's Nanny starts each worker with ``MALLOC_TRIM_THRESHOLD_=65536``
(``distributed.nanny.pre-spawn-environ``) so that freed memory goes back to the system at
once. Setting it also fixes glibc's mmap threshold at 128 KiB (it no longer adapts): every
array of 128 KiB or more is then a new mapping, whose pages fault in, zeroed by the kernel,
on first touch, and which is unmapped again when freed. A training step makes and frees
several such arrays (a 256 × 256 float32 layer is 256 KiB, its gradient as much again):
under Dask's setting a unit's step loop on W3's network ran at about half the speed of the
same loop in a plain process (``docs/benchmarks.md``, "A unit inside a worker").

While at least one unit trains in the process, :func:`steady_allocations` raises both
thresholds, so that freed blocks up to ``TRAINING_MMAP_THRESHOLD`` are reused from the
heap; when the last unit ends it restores the worker's settings (its environment's, else
glibc's defaults) and hands the free memory back (``malloc_trim``). Elsewhere than glibc
(macOS, musl) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Iterator

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)
GLIBC_DEFAULT_THRESHOLD = 128 * 1024
#: arrays up to this size come from the heap while units train (glibc's largest is 32 MiB)
TRAINING_MMAP_THRESHOLD = 16 * 2**20
#: free memory kept at the heap's top while units train
TRAINING_TRIM_THRESHOLD = 64 * 2**20


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (glibc has both)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()
_lock = threading.Lock()
_training = 0  # units in this process inside steady_allocations


def _setting(name: str) -> int:
    """A threshold as the process's environment sets it, else glibc's default."""
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return GLIBC_DEFAULT_THRESHOLD


@contextlib.contextmanager
def steady_allocations() -> Iterator[None]:
    """Reuse freed memory from the heap while the block runs (see the module's doc)."""
    global _training
    if _LIBC is None:
        yield
        return
    with _lock:
        _training += 1
        if _training == 1:
            _LIBC.mallopt(M_MMAP_THRESHOLD, TRAINING_MMAP_THRESHOLD)
            _LIBC.mallopt(M_TRIM_THRESHOLD, TRAINING_TRIM_THRESHOLD)
    try:
        yield
    finally:
        with _lock:
            _training -= 1
            if _training == 0:
                _LIBC.mallopt(M_TRIM_THRESHOLD, _setting("MALLOC_TRIM_THRESHOLD_"))
                _LIBC.mallopt(M_MMAP_THRESHOLD, _setting("MALLOC_MMAP_THRESHOLD_"))
                _LIBC.malloc_trim(0)
