"""A step's cost on one core: the engine's step loop against the plain NumPy loop.

    python -m dask_sgd.benchmarks.step_cost [--n-samples 250000] [--repeats 5] [--json F]

The same rows (float64, 100 columns, 1024-row slices, in order), logistic regression with
Adam at a constant rate; BLAS on one thread. Three contenders, interleaved, the best of
``--repeats``: the plain loop of ``dask-sgd bench engine``, and the engine's own step loop
(:func:`dask_sgd.engine.steps.run_minibatches`, the loop a unit runs) with the linear
model's compiled products and with NumPy's (``dask-sgd.compiled-kernels``). No Dask: what
a step costs before any exchange.
"""

from __future__ import annotations

import argparse
import time

import dask.config
import numpy as np
from threadpoolctl import threadpool_limits

from dask_sgd.benchmarks import report
from dask_sgd.benchmarks.plain_loop import train as plain_loop
from dask_sgd.engine.steps import TrainState, run_minibatches
from dask_sgd.losses import get_loss
from dask_sgd.models import LinearModel, Objective
from dask_sgd.optim import get_optimizer
from dask_sgd.penalties import get_penalty


def step_loop_rate(objective, theta, X, Y, batch_size: int, lr: float = 1e-3) -> float:
    """Samples per second of the engine's step loop (Adam at ``lr``, from ``theta``) over
    the rows once, in order."""
    optimizer = get_optimizer("adam")
    state = TrainState.create(theta, optimizer, averaged=False)
    batches = (
        (X[start : start + batch_size], Y[start : start + batch_size], None)
        for start in range(0, X.shape[0], batch_size)
    )
    started = time.perf_counter()
    run_minibatches(state, batches, objective, optimizer, lambda step: lr)
    return X.shape[0] / (time.perf_counter() - started)


def engine_loop(X, Y, batch_size: int, *, compiled: bool) -> float:
    """Samples per second of the engine's step loop over the rows once."""
    objective = Objective(
        LinearModel(X.shape[1], 1), get_loss("log_loss"), get_penalty("l2", alpha=1e-6)
    )
    with dask.config.set({"dask-sgd.compiled-kernels": compiled}):
        return step_loop_rate(objective, np.zeros(X.shape[1] + 1), X, Y, batch_size)


def markdown_table(result: dict) -> str:
    """Each contender's best rate, and its ratio to the plain loop's."""
    return report.rates_table(result["best"], "plain NumPy loop", unit="M", digits=2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=250_000)
    parser.add_argument("--n-features", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.n_samples, args.n_features))
    y = (rng.random(args.n_samples) < 0.5).astype(float)
    Y = (2 * y - 1)[:, None]
    contenders = {
        "plain NumPy loop": lambda: plain_loop(X, y, args.batch_size, 1),
        "engine, compiled products": lambda: engine_loop(X, Y, args.batch_size, compiled=True),
        "engine, NumPy's products": lambda: engine_loop(X, Y, args.batch_size, compiled=False),
    }
    with threadpool_limits(1):
        engine_loop(X[:4096], Y[:4096], args.batch_size, compiled=True)  # numba starts
        result = {"args": vars(args)} | report.best_of_interleaved(contenders, args.repeats)
    report.save_and_print(result, args.json, markdown_table)
    return result


if __name__ == "__main__":
    main()
