"""The plain NumPy loop: the hardware's limit for one core, and its side-by-side runner.

The loop is minibatch logistic regression with Adam (lr 1e-3, alpha 1e-6), written as one
would in a single process. :func:`side_by_side` runs k of them as k separate processes
started together, each on its 1/k of the rows.

This file is also a script (``python plain_loop.py START STOP ROWS.npy LABELS.npy ...``):
each side-by-side process runs it directly, so that it starts in a fraction of a second
with NumPy and threadpoolctl alone, without importing dask_sgd, Dask or scikit-learn.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits


def numpy_loop(X, y, batch_size: int, epochs: int = 1) -> float:
    """Minibatch logistic regression with Adam: samples per second on one core.

    BLAS is held to one thread, as in Dask's worker processes: left alone, OpenBLAS spreads
    the matrix products over every core and the loop is no longer one core's limit.
    """
    with threadpool_limits(1):
        return train(X, y, batch_size, epochs)


def train(X, y, batch_size: int, epochs: int, xp=np) -> float:
    """The loop itself (BLAS as it is): samples per second. ``xp`` is the arrays' module
    (CuPy's for the GPU check, :mod:`dask_sgd.benchmarks.gpu_check`)."""
    n, p = X.shape
    w, b = xp.zeros(p), 0.0
    m, v = xp.zeros(p + 1), xp.zeros(p + 1)
    sign = 2.0 * y[:n] - 1
    step = 0
    started = time.perf_counter()
    for _ in range(epochs):
        for start in range(0, n, batch_size):
            Xb, sb = X[start : start + batch_size], sign[start : start + batch_size]
            dz = -sb * 0.5 * (1 - xp.tanh(0.5 * sb * (Xb @ w + b)))
            g = xp.append(Xb.T @ dz / len(sb) + 1e-6 * w, dz.mean())
            step += 1
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            d = (m / (1 - 0.9**step)) / (xp.sqrt(v / (1 - 0.999**step)) + 1e-8)
            w, b = w - 1e-3 * d[:-1], b - 1e-3 * d[-1]
    float(b)  # a read of the result: waits for the work a GPU has queued
    return n * epochs / (time.perf_counter() - started)


def side_by_side(
    k: int, X_path, y_path, n_samples: int, batch_size: int, epochs: int, rounds: int
) -> dict:
    """k plain loops as k processes, each on its 1/k of the rows saved at ``X_path`` and
    ``y_path`` (``.npy``), BLAS on one thread in each, started together ``rounds`` times.

    A round's rate is every process's samples over the wall time from the common start to
    the last process's finish (a process that finishes early does not count as if it kept
    going); the result is the best round's, since the machine's speed drifts and the limit
    is what it can reach.
    """
    bounds = np.linspace(0, n_samples, k + 1).astype(int)
    script = str(Path(__file__).resolve())
    settings = [str(X_path), str(y_path), str(batch_size), str(epochs), str(rounds)]
    processes = [
        subprocess.Popen(
            # -P: the script's folder (dask_sgd/benchmarks) stays off the module path
            [sys.executable, "-P", script, str(bounds[i]), str(bounds[i + 1]), *settings],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(k)
    ]
    try:
        reports: list[list[dict]] = [[] for _ in range(k)]
        for _ in range(rounds):
            for process in processes:  # every process has its rows and waits
                if process.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"a plain loop failed (exit code {process.wait()})")
            for process in processes:  # the common start
                process.stdin.write("go\n")
                process.stdin.flush()
            for i, process in enumerate(processes):
                reports[i].append(json.loads(process.stdout.readline()))
    finally:
        for process in processes:
            process.stdin.close()  # a process waiting for "go" then ends
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()
    if any(process.returncode for process in processes):
        raise RuntimeError("a plain loop failed: " + str([p.returncode for p in processes]))
    n_rows = [int(bounds[i + 1] - bounds[i]) for i in range(k)]
    samples = epochs * n_samples
    rates = []
    for r in range(rounds):
        first_start = min(report[r]["started"] for report in reports)
        last_finish = max(report[r]["finished"] for report in reports)
        rates.append(samples / (last_finish - first_start))
    best = int(np.argmax(rates))
    return {
        "processes": k,
        "samples_per_second": rates[best],
        "pass_seconds": n_samples / rates[best],
        "rounds_samples_per_second": rates,
        "process_samples_per_second": [
            epochs * n / (report[best]["finished"] - report[best]["started"])
            for n, report in zip(n_rows, reports, strict=True)
        ],
        "start_spread_seconds": max(report[best]["started"] for report in reports)
        - min(report[best]["started"] for report in reports),
    }


def _main(argv: list[str]) -> None:
    """One side-by-side process: load its rows, then for each round say "ready", wait for
    "go" and train; report the start and finish (``time.monotonic``: one clock for every
    process of the machine) as a JSON line."""
    start, stop, X_path, y_path, batch_size, epochs, rounds = argv
    start, stop = int(start), int(stop)
    batch_size, epochs, rounds = int(batch_size), int(epochs), int(rounds)
    with threadpool_limits(1):
        X = np.array(np.load(X_path, mmap_mode="r")[start:stop], order="C")
        y = np.array(np.load(y_path, mmap_mode="r")[start:stop])
        train(X[: 4 * batch_size], y, batch_size, 1)  # warm up
        for _ in range(rounds):
            print("ready", flush=True)
            if sys.stdin.readline().strip() != "go":
                return
            started = time.monotonic()
            train(X, y, batch_size, epochs)
            finished = time.monotonic()
            print(json.dumps({"started": started, "finished": finished}), flush=True)


if __name__ == "__main__":
    _main(sys.argv[1:])
