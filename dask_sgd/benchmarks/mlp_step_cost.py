"""A network's step on one core: the engine's step loop against a plain NumPy loop, in
this process and on a Dask worker.

    python -m dask_sgd.benchmarks.mlp_step_cost [--n-samples 40000] [--repeats 5] [--json F]
        [--on-worker]

W3's network (50-256-256-10, ReLU, softmax) on W3-like rows (float32, standardized), Adam
at 1e-3, 256-row minibatches, one pass; BLAS on one thread. The contenders, interleaved,
the best of ``--repeats``: forward and backward passes and Adam written out in NumPy, and
the engine's step loop (:func:`dask_sgd.engine.steps.run_minibatches`, the loop a unit runs)
on :class:`~dask_sgd.models.mlp.MLPModel`, in order, no Dask: what a step costs before
any exchange. With ``--on-worker``, on a ``LocalCluster`` of one worker process (one
thread) started once: the plain loop run there as a task (the worker's environment, as
Dask's Nanny sets it), and a unit of a dask_sgd fit ("local", one worker, its exchanges with
the shard included): the rows of an epoch over the time between the ends of the fit's
first and second epochs. Issue 17's goal: a unit at least 0.8 of the plain loop's samples
per second in one process.
"""

from __future__ import annotations

import argparse
import contextlib
import time
import warnings

import dask.array as da
import numpy as np
from distributed import Client, LocalCluster, wait
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from dask_sgd import MLPClassifier
from dask_sgd.benchmarks import report
from dask_sgd.benchmarks.step_cost import step_loop_rate
from dask_sgd.losses import get_loss
from dask_sgd.models import Objective
from dask_sgd.models.mlp import MLPModel
from dask_sgd.penalties import get_penalty

LAYERS = (256, 256)
N_CLASSES = 10


def w3_rows(n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """W3's generator (``BENCHMARKS.md``), standardized, float32; one-hot targets."""
    X, y = make_classification(
        n_samples, 50, n_informative=30, n_classes=N_CLASSES, n_clusters_per_class=3,
        class_sep=1.5, random_state=0,
    )  # fmt: skip
    X = ((X - X.mean(axis=0)) / X.std(axis=0)).astype(np.float32)
    return X, np.eye(N_CLASSES, dtype=np.float32)[y]


def plain_loop(X, Y, theta: np.ndarray, batch_size: int, lr: float = 1e-3, xp=np) -> float:
    """Samples per second of forward, backward and Adam written out, over the rows once.
    ``xp`` is the module of ``X`` and ``Y`` (CuPy's for :mod:`.gpu_check`)."""
    model = MLPModel(X.shape[1], LAYERS, N_CLASSES)
    layers = zip(model.coefs(theta), model.intercepts(theta), strict=True)
    params = [xp.array(p, copy=True) for pair in layers for p in pair]
    m, v = [xp.zeros_like(p) for p in params], [xp.zeros_like(p) for p in params]
    started = time.perf_counter()
    for t, start in enumerate(range(0, X.shape[0], batch_size), 1):
        x, y = X[start : start + batch_size], Y[start : start + batch_size]
        W0, b0, W1, b1, W2, b2 = params
        h1 = xp.maximum(x @ W0 + b0, 0)
        h2 = xp.maximum(h1 @ W1 + b1, 0)
        z = h2 @ W2 + b2
        z -= z.max(axis=1, keepdims=True)
        p = xp.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        d2 = (p - y) / x.shape[0]
        d1 = (d2 @ W2.T) * (h2 > 0)
        d0 = (d1 @ W1.T) * (h1 > 0)
        grads = [x.T @ d0, d0.sum(0), h1.T @ d1, d1.sum(0), h2.T @ d2, d2.sum(0)]
        for p_, g, m_, v_ in zip(params, grads, m, v, strict=True):
            m_ *= 0.9
            m_ += 0.1 * g
            v_ *= 0.999
            v_ += 0.001 * g * g
            p_ -= (lr * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)) * m_ / (xp.sqrt(v_) + 1e-8)
    float(params[-1][0])  # a read of the result: waits for the work a GPU has queued
    return X.shape[0] / (time.perf_counter() - started)


def engine_loop(X, Y, theta: np.ndarray, batch_size: int, lr: float = 1e-3) -> float:
    """Samples per second of the engine's step loop over the rows once."""
    model = MLPModel(X.shape[1], LAYERS, N_CLASSES)
    objective = Objective(
        model, get_loss("log_loss", multinomial=True), get_penalty(None, alpha=0.0)
    )
    return step_loop_rate(objective, theta.copy(), X, Y, batch_size, lr)


def unit_on_worker(dX, dy, n_rows: int, batch_size: int) -> float:
    """Samples per second of a dask_sgd unit on a worker: one epoch of a "local" fit on the
    Dask rows, timed between the ends of its first and second epochs."""
    clf = MLPClassifier(
        LAYERS, alpha=0.0, batch_size=batch_size, max_iter=2, tol=0.0, random_state=0,
        shuffle=False, warmup_epochs=0,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # two epochs are the point
        clf.fit(dX, dy)
    first, second = (record["wall_time"] for record in clf.history_)
    return n_rows / (second - first)


def on_worker_contenders(client, X, Y, theta, batch_size: int) -> dict:
    """The plain loop as a task on the worker, and a unit of a fit there."""
    X_there, Y_there, theta_there = client.scatter([X, Y, theta])
    rows = -(-X.shape[0] // 8)
    dX = da.from_array(X, chunks=(rows, -1)).persist()
    dy = da.from_array(Y.argmax(axis=1), chunks=rows).persist()
    wait([dX, dy])

    def plain_there():
        return client.submit(
            plain_loop, X_there, Y_there, theta_there, batch_size, pure=False
        ).result()

    return {
        "plain NumPy loop on a Dask worker": plain_there,
        "dask_sgd unit on a Dask worker": lambda: unit_on_worker(dX, dy, X.shape[0], batch_size),
    }


def markdown_table(result: dict) -> str:
    """Each contender's best rate, and its ratio to the plain loop's."""
    return report.rates_table(result["best"], "plain NumPy loop", unit="k", digits=1)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=40_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--on-worker", action="store_true",
        help="also the plain loop and a dask_sgd unit on a one-worker LocalCluster",
    )  # fmt: skip
    args = parser.parse_args(argv)
    X, Y = w3_rows(args.n_samples)
    theta = MLPModel(X.shape[1], LAYERS, N_CLASSES).init_params(0, dtype="float32")
    contenders = {
        "plain NumPy loop": lambda: plain_loop(X, Y, theta, args.batch_size),
        "engine step loop": lambda: engine_loop(X, Y, theta, args.batch_size),
    }
    with contextlib.ExitStack() as stack, threadpool_limits(1):
        if args.on_worker:
            cluster = stack.enter_context(
                LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0")
            )
            client = stack.enter_context(Client(cluster))
            contenders |= on_worker_contenders(client, X, Y, theta, args.batch_size)
        result = {"args": vars(args)} | report.best_of_interleaved(contenders, args.repeats)
    report.save_and_print(result, args.json, markdown_table)
    return result


if __name__ == "__main__":
    main()
