"""Training on a dask-jobqueue cluster: ``dask_jobqueue.local.LocalCluster`` runs each job as
a local process through the same machinery as SLURMCluster, scaling included."""

from __future__ import annotations

import gc
import runpy
import threading
import time
from pathlib import Path

import pytest
from distributed import Client

from dask_sgd.datasets import make_linear_classification

EXAMPLES = Path(__file__).parents[1] / "examples"


@pytest.mark.timeout(180)
# dask-jobqueue's LocalJob stops its job processes without waiting for them: Python warns
# when it collects their Popen objects and pipes
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_job_that_starts_during_a_fit_trains_in_it():
    from dask_jobqueue.local import LocalCluster

    example = runpy.run_path(str(EXAMPLES / "hpc_slurm.py"))
    X, y = make_linear_classification(250_000, 10, chunk_rows=50_000, random_state=0)
    joined: list[float] = []
    with (
        LocalCluster(
            cores=1, processes=1, memory="2GB", scheduler_options={"dashboard_address": ":0"}
        ) as cluster,
        Client(cluster) as client,
    ):
        cluster.scale(jobs=1)
        client.wait_for_workers(1, timeout=60)
        X, y = client.persist([X, y])

        def scale_up_once_training_runs():
            while not client.get_events("dask-sgd"):  # the trainer's first segment record
                time.sleep(0.05)
            cluster.scale(jobs=2)
            client.wait_for_workers(2, timeout=60)
            joined.append(time.perf_counter())

        thread = threading.Thread(target=scale_up_once_training_runs)
        params = dict(max_iter=4, tol=None, batch_size=64, snapshot_seconds=0.5, random_state=0)
        thread.start()
        clf = example["train"](client, X, y, **params)
        ended = time.perf_counter()
        thread.join()
        assert joined[0] < ended, "the second job's worker joined after the fit"
        assert len(clf.history_) == 4
        assert clf.history_[0]["samples_per_worker"][0] > 0  # the first job's worker trained
        changes = [c for h in clf.history_ for c in h.get("membership", [])]
        assert [c["workers"] for c in changes] == [2], clf.history_  # the second job's joined
        assert clf.history_[-1]["workers"] == 2
        assert min(clf.history_[-1]["samples_per_worker"]) > 0  # and both trained

        clf.partial_fit(X, y)  # the next call trains on both workers
        assert len(clf.history_[-1]["samples_per_worker"]) == 2
        assert clf.score(X[:20_000].compute(), y[:20_000].compute()) > 0.8
    gc.collect()  # those warnings, here and not in a later test


def test_the_slurm_example_writes_a_job_script_without_submitting(capsys):
    runpy.run_path(str(EXAMPLES / "hpc_slurm.py"))["main"](["--dry-run", "--queue", "short"])
    script = capsys.readouterr().out
    assert "#SBATCH -p short" in script and "--lifetime 110m" in script
    assert "--nworkers 4" in script and "--nthreads 1" in script
