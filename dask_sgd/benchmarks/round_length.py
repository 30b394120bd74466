"""Local SGD's rounds: held-out loss and waiting by round length, overlapped or not, on W1.

    python -m dask_sgd.benchmarks.round_length [--local-steps 8 32 128 auto] [--epochs 1] [--json F]

W1's problem (:func:`dask_sgd.datasets.make_classification_blocks`, 1,000,000 training rows
in 8 partitions, 100,000 held out) on a LocalCluster of 2 single-threaded worker processes;
``SGDClassifier(loss="log_loss")`` (the Dask defaults, ``tol=None``) for ``--epochs`` epochs at
each ``local_steps`` with ``overlap`` off and on, ``--repeats`` times in turn. Prints each
fit's held-out log-loss, its time, the longest a unit waited for the rounds' means in its
last epoch, and the rounds' lengths by epoch: the convergence cost of longer rounds, and
what overlapping them saves.
"""

from __future__ import annotations

import argparse
import itertools

from distributed import Client, LocalCluster, wait
from sklearn.metrics import log_loss

import dask_sgd
from dask_sgd.benchmarks import report
from dask_sgd.datasets import make_classification_blocks

W1 = dict(n_features=100, n_informative=50, flip_y=0.05, random_state=0)


def markdown_table(rows: list[dict]) -> str:
    """By round length: each repeat's held-out log-loss, seconds and longest wait, without
    and with overlap ("auto" shows the length it chose last)."""

    def cell(fits: list[dict]) -> str:
        return "; ".join(
            ", ".join(f"{fit[key]:{spec}}" for fit in fits)
            for key, spec in (("log_loss", ".5f"), ("seconds", ".2f"), ("waited_seconds", ".3f"))
        )

    table = []
    for steps in dict.fromkeys(row["local_steps"] for row in rows):
        fits = [row for row in rows if row["local_steps"] == steps]
        label = f"auto (chose {fits[-1]['rounds'][-1]})" if steps == "auto" else str(steps)
        table.append(
            [label] + [cell([fit for fit in fits if fit["overlap"] == on]) for on in (False, True)]
        )
    return report.markdown_table(
        [
            "local_steps",
            "without overlap: log-loss; s; waited s",
            "with overlap: log-loss; s; waited s",
        ],
        table,
    )


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local-steps", nargs="+", default=["8", "32", "128", "auto"])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n-samples", type=int, default=1_000_000)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    settings = [steps if steps == "auto" else int(steps) for steps in args.local_steps]
    rows = []
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        X, y = make_classification_blocks(args.n_samples, chunk_rows=args.n_samples // 8, **W1)
        X_test, y_test = make_classification_blocks(100_000, first_block=1000, **W1)
        X, y = client.persist([X, y])
        wait([X, y])
        X_test, y_test = client.compute([X_test, y_test], sync=True)
        for repeat, steps, overlap in itertools.product(
            range(args.repeats), settings, (False, True)
        ):
            clf = dask_sgd.SGDClassifier(
                loss="log_loss",
                max_iter=args.epochs,
                tol=None,
                random_state=0,
                local_steps=steps,
                overlap=overlap,
            ).fit(X, y)
            row = {
                "repeat": repeat,
                "local_steps": steps,
                "overlap": overlap,
                "seconds": clf.history_[-1]["wall_time"],
                "log_loss": log_loss(y_test, clf.predict_proba(X_test)),
                "waited_seconds": clf.history_[-1]["exchange_wait_seconds"],
                "rounds": [record["local_steps"] for record in clf.history_],
            }
            rows.append(row)
            print(
                f"local_steps={steps!s:>4} overlap={overlap!s:>5}: held-out log-loss "
                f"{row['log_loss']:.5f}, {row['seconds']:.2f} s, waited "
                f"{row['waited_seconds']:.3f} s, rounds {row['rounds']}",
                flush=True,
            )
    report.save_and_print(rows, args.json, markdown_table)
    return rows


if __name__ == "__main__":
    main()
