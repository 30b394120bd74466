"""Minibatch order and convergence: held-out log loss after a fixed budget of epochs, the
same seeds, for each order in which the units take their rows.

    python -m dask_sgd.benchmarks.minibatch_order [--n-samples 200000] [--seeds 0 1 2]

The rows are W1's problem (``make_classification``, 100 features, 5 % flipped labels) in
8 partitions, persisted on a LocalCluster of 2 single-threaded worker processes, and the
default ``SGDClassifier`` fits them for ``--epochs`` epochs (``tol=None``), averaging every
``--local-steps`` steps (the default, "auto", sizes rounds by time, which would add the
machine's noise to the comparison). Three layouts of the same rows:

- ``random``: rows in random order (as generated);
- ``sorted in partitions``: each partition's rows sorted by label (the worst case for
  runs of consecutive rows: a run holds one class);
- ``sorted``: all rows sorted by label, so that the first partitions hold one class and
  the last the other (and which rows a unit gets depends on how blocks are dealt);
- ``sorted, a class per worker``: the same, the first half of the partitions persisted on
  one worker and the second half on the other (the worst case for dealing blocks by where
  they are: each unit trains on one class between exchanges).

Each order is set with the Dask config ``dask-sgd.run-rows`` (runs of that many
consecutive rows, a new order every pass; 1: rows in random order). Run it with an older
dask_sgd on ``PYTHONPATH`` to measure that version's order (it ignores the config): the
numbers in ``docs/benchmarks.md`` for "a shuffled copy" come from the version before
blocks were trained on as they are.
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings

import dask
import dask.array as da
import numpy as np
from distributed import Client, LocalCluster, wait
from sklearn.metrics import log_loss

import dask_sgd
from dask_sgd.benchmarks import report
from dask_sgd.benchmarks.scaling import W1
from dask_sgd.datasets import make_classification_blocks
from dask_sgd.workers import worker_statuses

LAYOUTS = ("random", "sorted in partitions", "sorted", "sorted, a class per worker")


def layout(X: np.ndarray, y: np.ndarray, name: str, chunk: int):
    """The rows of ``X, y`` in layout ``name`` (partitions of ``chunk`` rows)."""
    if name == "random":
        return X, y
    if name == "sorted":
        order = np.argsort(y, kind="stable")
        return X[order], y[order]
    bounds = [*range(0, len(y), chunk), len(y)]
    order = np.concatenate(
        [lo + np.argsort(y[lo:hi], kind="stable") for lo, hi in itertools.pairwise(bounds)]
    )
    return X[order], y[order]


def persist(client, X: np.ndarray, y: np.ndarray, chunk: int, by_halves: bool):
    """``X, y`` persisted in partitions of ``chunk`` rows: where ``persist`` puts them, or
    (``by_halves``) the first half of the partitions on one worker, the rest on another."""
    if not by_halves:
        dX, dy = client.persist([da.from_array(X, chunks=(chunk, -1)), da.from_array(y, chunk)])
        wait([dX, dy])
        return dX, dy
    workers, half = sorted(worker_statuses(client)), len(y) // 2
    parts = []
    for worker, rows in zip(workers, (slice(0, half), slice(half, None)), strict=False):
        with dask.annotate(workers=[worker], allow_other_workers=False):
            parts.append(
                client.persist(
                    [da.from_array(X[rows], chunks=(chunk, -1)), da.from_array(y[rows], chunk)]
                )
            )
    wait(parts)
    dX = da.concatenate([p[0] for p in parts]).map_blocks(np.copy)
    dy = da.concatenate([p[1] for p in parts]).map_blocks(np.copy)
    dX, dy = client.persist([dX, dy])
    wait([dX, dy])
    return dX, dy  # the halves are released as ``parts`` goes


def markdown_table(*results: list[dict]) -> str:
    """Held-out log-loss (the seeds' mean) by layout and epochs; a column per run's label
    and row layout: runs of one row are "rows", the old engine's run is its label."""
    rows = [row for result in results for row in result]

    def column(row: dict) -> str:
        if row["run_rows"] == 0:
            return row["label"]
        return "rows" if row["run_rows"] == 1 else f"runs of {row['run_rows']}"

    columns = list(dict.fromkeys(column(row) for row in rows))
    lines = {}
    for row in rows:
        line = lines.setdefault(
            f"{row['layout']}, {row['epochs']} epoch" + "s" * (row["epochs"] > 1), {}
        )
        line[column(row)] = f"{row['held_out_log_loss']:.4f}"
    return report.markdown_table(
        ["layout of the rows", *columns],
        [[label] + [cells.get(name, "") for name in columns] for label, cells in lines.items()],
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-samples", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--run-rows", type=int, nargs="+", default=[1, 16, 64, 256],
        help="the orders to compare (ignored by a dask_sgd without the setting)",
    )  # fmt: skip
    parser.add_argument("--local-steps", type=int, default=32)
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    parser.add_argument("--label", default="", help="names this run's rows in the output")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    n_parts = 8
    chunk = -(-args.n_samples // n_parts)
    X, y = make_classification_blocks(args.n_samples, chunk_rows=chunk, **W1)
    X_test, y_test = make_classification_blocks(50_000, chunk_rows=50_000, first_block=10**6, **W1)
    X, y, X_test, y_test = dask.compute(X, y, X_test, y_test)
    X = np.ascontiguousarray(X)
    results = []
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", UserWarning)  # from_array's "large graph" warning
        for name in args.layouts:
            Xl, yl = layout(X, y, name.split(",")[0], chunk)
            dX, dy = persist(client, Xl, yl, chunk, by_halves=name.endswith("per worker"))
            where = client.who_has(dX)
            workers = sorted({w for held in where.values() for w in held})
            placed = [workers.index(where[(dX.name, i, 0)][0]) for i in range(n_parts)]
            for run_rows in args.run_rows:
                for epochs in args.epochs:
                    losses, setups = [], []
                    for seed in args.seeds:
                        clf = dask_sgd.SGDClassifier(
                            loss="log_loss",
                            max_iter=epochs,
                            tol=None,
                            random_state=seed,
                            local_steps=args.local_steps,
                        )
                        started = time.perf_counter()
                        with dask.config.set({"dask-sgd.run-rows": run_rows}):
                            clf.fit(dX, dy)
                        seconds = time.perf_counter() - started
                        setups.append(seconds - clf.history_[-1]["wall_time"])
                        losses.append(log_loss(y_test, clf.predict_proba(X_test)))
                    row = {
                        "label": args.label,
                        "layout": name,
                        "run_rows": run_rows,
                        "epochs": epochs,
                        "held_out_log_loss": float(np.mean(losses)),
                        "per_seed": [float(v) for v in losses],
                        "setup_seconds": float(np.median(setups)),
                        "placement": placed,
                    }
                    results.append(row)
                    print(
                        f"{args.label:10s} {name:22s} run_rows {run_rows:4d} epochs {epochs} "
                        f"held-out log loss {row['held_out_log_loss']:.5f} "
                        f"(seeds {', '.join(f'{v:.5f}' for v in losses)}) placement {placed}"
                        f", setup {row['setup_seconds']:.2f} s",
                        flush=True,
                    )
            client.cancel([dX, dy])
    report.save_and_print(results, args.json, markdown_table)
    return {"results": results}


if __name__ == "__main__":
    main()
