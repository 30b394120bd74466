"""Minibatch gathering: samples per second of one core's training loop for each way of
taking a minibatch's rows from an unshuffled block.

    python -m dask_sgd.benchmarks.minibatch_gather [--n-samples 250000] [--n-features 100]

Every contender runs the same step as ``dask-sgd bench engine``'s plain loop (minibatch
logistic regression with Adam, BLAS on one thread) on ``batch_size`` rows; only how the
rows are taken differs:

- ``slices``: consecutive rows of a block shuffled beforehand (what a shuffled copy of the
  data buys, and what the engine did before it trained on the partitions as they are);
- ``rows``: ``batch_size`` rows in random order (``np.take`` into a reused buffer);
- ``runs r``: ``batch_size / r`` runs of ``r`` consecutive rows in random order, copied into
  a reused buffer run by run (:func:`dask_sgd.blocks.gather_runs`);
- ``runs r, RowOrder.take``: the same, as a unit takes them
  (:meth:`dask_sgd.blocks.RowOrder.take`: a new array per minibatch, the labels copied
  run by run too, the run order drawn per pass);
- ``runs r, fancy``: the same runs as ``X.reshape(n_runs, r, p)[run_ids]`` (a new array).

Each is timed on a row-major (C) and a column-major (F) block: pandas' ``to_numpy`` gives
column-major arrays. Contenders run interleaved, ``--repeats`` times, and the median is
reported: the machine's speed drifts, and the clock is this process's CPU time, so that
other processes on a shared machine slow it less.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from dask_sgd.benchmarks import report
from dask_sgd.blocks import Block, RowOrder, gather_runs


def adam_loop(p: int, batches) -> float:
    """Samples per second (of this process's CPU time) of the plain loop's step on the
    minibatches ``batches()`` yields, each ``(X rows, their labels as -1 or 1)``."""
    w, b = np.zeros(p), 0.0
    m, v = np.zeros(p + 1), np.zeros(p + 1)
    rows = 0
    started = time.process_time()
    for step, (Xb, sb) in enumerate(batches(), start=1):
        dz = -sb * 0.5 * (1 - np.tanh(0.5 * sb * (Xb @ w + b)))
        g = np.append(Xb.T @ dz / len(sb) + 1e-6 * w, dz.mean())
        rows += len(sb)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        d = (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
        w, b = w - 1e-3 * d[:-1], b - 1e-3 * d[-1]
    return rows / (time.process_time() - started)


def contenders(X, sign, batch_size: int, run_lengths, rng) -> dict:
    """name -> a function yielding one pass's minibatches of ``X`` (and their labels)."""
    n, p = X.shape
    n_batches = n // batch_size
    out = np.empty((batch_size, p), X.dtype)

    def slices():
        for i in range(n_batches):
            rows = slice(i * batch_size, (i + 1) * batch_size)
            yield X[rows], sign[rows]

    def rows():
        order = rng.permutation(n)
        for i in range(n_batches):
            which = order[i * batch_size : (i + 1) * batch_size]
            yield np.take(X, which, axis=0, out=out, mode="clip"), sign[which]

    found = {"slices": slices, "rows": rows}
    for r in run_lengths:
        per_batch = batch_size // r

        def runs(r=r, per_batch=per_batch):
            starts = rng.permutation(n // r) * r
            for i in range(n_batches):
                chosen = starts[i * per_batch : (i + 1) * per_batch]
                yield gather_runs(X, chosen, r, out), sign[(chosen[:, None] + np.arange(r)).ravel()]

        def take(r=r):
            blocks, order = [Block(X, sign, None)], RowOrder(int(rng.integers(1 << 30)), r)
            cursor = (0, 0)
            for _ in range(n_batches):
                Xb, sb, _, cursor, _ = order.take(blocks, [0], cursor, batch_size)
                yield Xb, sb

        found[f"runs {r}"] = runs
        found[f"runs {r}, RowOrder.take"] = take
        if X.flags.c_contiguous:

            def fancy(r=r, per_batch=per_batch):
                X3 = X[: n // r * r].reshape(n // r, r, p)
                ids = rng.permutation(n // r)
                for i in range(n_batches):
                    chosen = ids[i * per_batch : (i + 1) * per_batch]
                    which = (chosen[:, None] * r + np.arange(r)).ravel()
                    yield X3[chosen].reshape(batch_size, p), sign[which]

            found[f"runs {r}, fancy"] = fancy
    return found


def markdown_table(result: dict) -> str:
    """Each way of taking a minibatch: its median rate on a row-major block, that rate over
    the slices', and its rate on a column-major block."""
    rates = result["samples_per_second"]
    ways = {
        "slices of pre-shuffled rows (the old engine)": "slices",
        "rows in random order (`np.take`)": "rows",
    }
    for r in result["args"]["run_lengths"]:
        ways[f"runs of {r}, as a unit takes them (`RowOrder.take`)"] = f"runs {r}, RowOrder.take"
    if 64 in result["args"]["run_lengths"]:
        ways["runs of 64, copied into one buffer (`gather_runs`)"] = "runs 64"
        ways["runs of 64, `X.reshape(n_runs, 64, p)[run_ids]`"] = "runs 64, fancy"

    def rate(layout: str, way: str) -> str:
        value = rates.get(f"{layout} {way}")
        return "" if value is None else f"{value / 1e6:.2f}"

    rows = [
        [label, rate("C", way), f"{rates[f'C {way}'] / rates['C slices']:.2f}", rate("F", way)]
        for label, way in ways.items()
    ]
    header = [
        "minibatch", "row-major block, M samples/s", "/ slices", "column-major block, M samples/s",
    ]  # fmt: skip
    return report.markdown_table(header, rows)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-samples", type=int, default=250_000)
    parser.add_argument("--n-features", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--run-lengths", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.n_samples, args.n_features))
    sign = np.where(rng.random(args.n_samples) < 0.5, -1.0, 1.0)
    layouts = {"C": X, "F": np.asfortranarray(X)}
    rates: dict[str, list[float]] = {}
    with threadpool_limits(1):
        for _ in range(args.repeats):
            for layout, data in layouts.items():
                found = contenders(data, sign, args.batch_size, args.run_lengths, rng)
                for name, batches in found.items():
                    rate = adam_loop(args.n_features, batches)
                    rates.setdefault(f"{layout} {name}", []).append(rate)
    result = {
        "args": vars(args),
        "samples_per_second": {name: float(np.median(values)) for name, values in rates.items()},
    }
    report.save_and_print(result, args.json, markdown_table)
    return result


if __name__ == "__main__":
    main()
