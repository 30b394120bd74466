"""Real LocalClusters with worker processes: TLS, and training data that stays on the workers."""

from __future__ import annotations

import pickle

import dask
import numpy as np
import pytest
from distributed import Client, LocalCluster
from distributed.comm import tcp

from dask_sgd import SGDClassifier
from dask_sgd.blocks import persist_blocks
from dask_sgd.datasets import make_linear_classification
from dask_sgd.workers import worker_statuses


@pytest.fixture(scope="module")
def tls_client():
    """Two worker processes behind TLS, with temporary certificates."""
    pytest.importorskip("cryptography")
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, security=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        assert client.scheduler.address.startswith("tls://")
        yield client


@pytest.fixture
def bytes_received_by_client(monkeypatch):
    """Counts every byte this process reads from a TCP or TLS connection."""
    received = [0]
    read_frames = tcp.from_frames

    async def counting(frames, *args, **kwargs):
        received[0] += sum(memoryview(f).nbytes for f in frames)
        return await read_frames(frames, *args, **kwargs)

    monkeypatch.setattr(tcp, "from_frames", counting)
    return received


def test_training_data_never_reaches_the_client(tls_client, bytes_received_by_client):
    X, y = make_linear_classification(200_000, 20, chunk_rows=25_000, random_state=1)
    data_bytes = X.nbytes + y.nbytes  # 33.6 MB, generated on the workers
    clf = SGDClassifier(loss="log_loss", batch_size=512, max_iter=2, tol=None, random_state=0)
    clf.fit(X, y)
    assert clf.history_[-1]["samples"] >= 200_000
    assert bytes_received_by_client[0] < 0.02 * data_bytes, bytes_received_by_client[0]
    # The counter does see data that comes to the client:
    before = bytes_received_by_client[0]
    part = X[:25_000].compute()
    assert bytes_received_by_client[0] - before >= part.nbytes


def test_no_key_or_certificate_in_the_estimator(tls_client):
    X, y = make_linear_classification(20_000, 5, chunk_rows=5_000, random_state=2)
    clf = SGDClassifier(batch_size=256, random_state=0, max_iter=2, tol=None).fit(X, y)
    blob = pickle.dumps(clf)
    security = tls_client.security
    secrets = [security.tls_client_key, security.tls_client_cert, security.tls_ca_file]
    assert all(s for s in secrets)
    for secret in secrets:
        assert secret.encode()[:200] not in blob
    assert b"PRIVATE KEY" not in blob and b"CERTIFICATE" not in blob
    assert not any("secur" in name or "client" in name for name in clf.get_params())
    assert np.isfinite(clf.coef_).all()


def test_blocks_moved_between_worker_processes_arrive_aligned(tls_client):
    """Arrays fetched from another worker can arrive at any byte offset; NumPy's matrix
    products on unaligned float64 rows skip BLAS (about 7 times slower)."""
    client = tls_client
    a, b = sorted(worker_statuses(client))
    X, y = make_linear_classification(40_000, 10, chunk_rows=5_000, random_state=3)
    with dask.annotate(workers=[a], allow_other_workers=False):  # every block starts on a
        data = persist_blocks(client, X, y, classifier=True, seed=0)
    try:
        units = data.units(client)
        (moved,) = [futures for worker, futures, _ in units if worker == b]

        def alignment(keys, dask_worker):
            return [dask_worker.data[key].X.flags.aligned for key in keys]

        assert client.run(alignment, [f.key for f in moved], workers=[b])[b] == [True] * 4
    finally:
        data.release()
