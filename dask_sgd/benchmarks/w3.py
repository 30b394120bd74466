"""W3 mlp for the time-to-accuracy benchmark (``tta.py --workload mlp``).

``BENCHMARKS.md``'s rows: ``make_classification`` of 220,000 rows, 50 columns, 30
informative, 10 classes of 3 clusters each, ``class_sep=1.5``; standardized with the training
rows' moments, float32; the first 200,000 train (eight blocks, four per worker), the last
20,000 are held out. The network is 50-256-256-10 with ReLU and a softmax output; the target
is a held-out accuracy of 0.94.

The contenders: scikit-learn's ``MLPClassifier`` (batch 256), PyTorch on the CPU in this
process (2 threads, batch 256) and PyTorch DistributedDataParallel (2 processes of 1
thread, gloo, batch 128 each), all Adam at 1e-3 (:mod:`dask_sgd.benchmarks.torch_peers`),
and dask_sgd's ``MLPClassifier`` with every strategy at its defaults, and "sync" with DDP's
setting (128 rows per worker and step, Adam at 1e-3 unscaled, no warmup: the same steps as
DDP's). A budget is epochs, each a fit from scratch; no contender reached 0.94 in under 3
epochs when the ladder was chosen, so it starts there. scikit-learn's network, an epoch of
several seconds, runs once.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from distributed import wait
from sklearn.datasets import make_classification
from sklearn.neural_network import MLPClassifier as SklearnMLP

import dask_sgd
from dask_sgd.benchmarks.torch_peers import TorchDDP, TorchMLP

SIZE = dict(n_samples=220_000, n_test=20_000, n_features=50)
#: ``--quick``: a smoke test's size (its target is not reached at one epoch)
QUICK = dict(n_samples=4_400, n_test=400, n_features=50)
TARGET_ACCURACY = 0.94
HIDDEN = (256, 256)


def make_data(client, n_samples: int, n_test: int, n_features: int) -> dict:
    """W3's rows: train and test as NumPy, train also persisted on the cluster."""
    X, y = make_classification(
        n_samples, n_features, n_informative=30, n_classes=10, n_clusters_per_class=3,
        class_sep=1.5, random_state=0,
    )  # fmt: skip
    n_train = n_samples - n_test
    mean, std = X[:n_train].mean(axis=0), X[:n_train].std(axis=0)
    X = ((X - mean) / std).astype(np.float32)
    chunk_rows = -(-n_train // 8)  # eight blocks, four per worker
    dX, dy = client.persist(
        [
            da.from_array(X[:n_train], chunks=(chunk_rows, -1)),
            da.from_array(y[:n_train], chunk_rows),
        ]
    )
    wait([dX, dy])
    return {
        "X": X[:n_train], "y": y[:n_train], "dX": dX, "dy": dy,
        "X_test": X[n_train:], "y_test": y[n_train:],
    }  # fmt: skip


def warm_up(client, data: dict) -> None:
    """Off the clock: one dask_sgd network fit on a few rows of its own starts the
    cluster's machinery, and PyTorch is imported here."""
    import torch  # noqa: F401 (imported once, off the clock)

    X, y = data["X"][:2_000], data["y"][:2_000]
    dX, dy = client.persist([da.from_array(X, chunks=(250, -1)), da.from_array(y, 250)])
    wait([dX, dy])
    dask_sgd.MLPClassifier(HIDDEN, max_iter=1, random_state=0).fit(dX, dy)
    client.cancel([dX, dy])


def contenders(quick: bool) -> list:
    """W3's peers and dask_sgd's network with every strategy, at its defaults."""
    from dask_sgd.benchmarks.tta import Contender, strategy_rows

    epochs = [1] if quick else [3, 4, 5, 6, 8]
    adam = "Adam 1e-3"
    rows = [
        Contender(
            "sklearn MLPClassifier", f"batch 256, {adam}, epochs (one run)",
            lambda b: SklearnMLP(HIDDEN, batch_size=256, max_iter=b, random_state=0),
            epochs, epochs=True, repeats=1,
        ),
        Contender(
            "PyTorch CPU", f"1 process, 2 threads, batch 256, {adam}, epochs",
            lambda b: TorchMLP(HIDDEN, b, batch_size=256, threads=2), epochs, epochs=True,
        ),
        Contender(
            "PyTorch DDP", f"2 processes x 1 thread, gloo, batch 128 each, {adam}, epochs",
            lambda b: TorchDDP(HIDDEN, b, batch_size=128, processes=2, threads=1),
            epochs, epochs=True, self_timed=True,
        ),
    ]  # fmt: skip
    rows += strategy_rows(
        None, lambda s, b: dask_sgd.MLPClassifier(HIDDEN, strategy=s, max_iter=b, random_state=0),
        epochs, on_dask=True,
    )  # fmt: skip
    rows.append(
        Contender(
            "dask_sgd sync", "DDP's setting: batch 128 per worker, Adam 1e-3 unscaled, no warmup",
            lambda b: dask_sgd.MLPClassifier(
                HIDDEN, strategy="sync", batch_size=128, scale_learning_rate=False,
                warmup_epochs=0, max_iter=b, random_state=0,
            ),
            epochs, on_dask=True, epochs=True, refit=True,
        )
    )  # fmt: skip
    return rows
