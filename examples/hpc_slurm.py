"""Training on an HPC batch system with dask-jobqueue: SLURM jobs, adaptive scaling.

Run it on a login node::

    python examples/hpc_slurm.py --data /scratch/clicks.parquet --target clicked

Each SLURM job runs Dask workers; ``adapt`` asks for jobs while there is work and releases
idle ones. Workers get a ``--lifetime`` shorter than the job's walltime: they retire
gracefully before SLURM ends the job, and a worker that holds a parameter-server shard
hands it on at the next snapshot first (``docs/faults.md``), so nothing is lost or redone.
A fit starts one training unit per worker it finds; workers that join later train from the
next ``fit`` or ``partial_fit`` on.

``--dry-run`` prints the job script and submits nothing. The test suite runs
:func:`train` through ``dask_jobqueue.local.LocalCluster``, whose jobs are local processes.
"""

from __future__ import annotations

import argparse

import dask.dataframe as dd
from distributed import Client

from dask_sgd import SGDClassifier


def slurm_cluster(queue: str | None = None, account: str | None = None, **options):
    """Jobs of 4 cores and 16 GB, each running 4 single-threaded workers: a fit trains one
    unit per worker, so one worker per core keeps every core training."""
    from dask_jobqueue import SLURMCluster

    return SLURMCluster(
        queue=queue,
        account=account,
        cores=4,
        processes=4,
        memory="16GB",
        walltime="02:00:00",
        worker_extra_args=["--lifetime", "110m", "--lifetime-stagger", "4m"],
        **options,
    )


def train(client, X, y, **params) -> SGDClassifier:
    """Fit a classifier on the cluster behind ``client`` (the Dask defaults for a large
    data set: local SGD, Adam, snapshots every 30 s)."""
    with client.as_current():
        return SGDClassifier(loss="log_loss", **params).fit(X, y)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a Parquet dataset")
    parser.add_argument("--target", help="its target column")
    parser.add_argument("--queue")
    parser.add_argument("--account")
    parser.add_argument("--max-jobs", type=int, default=8)
    parser.add_argument("--dry-run", action="store_true", help="print the job script only")
    args = parser.parse_args(argv)

    quiet = {"scheduler_options": {"dashboard_address": ":0"}} if args.dry_run else {}
    with slurm_cluster(args.queue, args.account, **quiet) as cluster:
        if args.dry_run:
            print(cluster.job_script())
            return
        cluster.adapt(minimum_jobs=1, maximum_jobs=args.max_jobs)
        with Client(cluster) as client:
            frame = dd.read_parquet(args.data)
            X, y = frame.drop(columns=args.target), frame[args.target]
            clf = train(client, X, y, max_iter=5, verbose=1)
            print(f"trained {clf.n_iter_} epochs; history: {clf.history_[-1]}")


if __name__ == "__main__":
    main()
