"""The layer-wise exchange of "sync": a network's steps with each shard's slice pushed as
soon as the backward pass finishes it, against the whole gradient pushed at once.

    python -m dask_sgd.benchmarks.layerwise [--n-samples 100000] [--batch-size 128]
        [--repeats 3] [--json F]

W3's network (50-256-256-10, ReLU, softmax) on W3-like rows (float32, standardized) in eight
blocks on a ``LocalCluster`` of two single-threaded worker processes, started once; "sync",
Adam at 1e-3, ``--batch-size`` rows per worker and step (DDP's 128 by default). A
contender's rate is the rows of an epoch over the time of a fit's second epoch. The
contenders, taken in turn ``--repeats`` times: one shard (the default for W3's 82,000
parameters: nothing to push early), and two shards (the last layers' slice on one, the
first layers' on the other) with the whole gradient pushed at once and layer by layer.
"""

from __future__ import annotations

import argparse
import time

import dask.array as da
import numpy as np
from distributed import Client, LocalCluster

from dask_sgd import optim, schedules
from dask_sgd.benchmarks import report
from dask_sgd.benchmarks.mlp_step_cost import LAYERS, N_CLASSES, w3_rows
from dask_sgd.blocks import persist_blocks
from dask_sgd.data import TargetEncoder
from dask_sgd.engine.cluster import ClusterTrainer
from dask_sgd.engine.steps import TrainState
from dask_sgd.engine.strategies import Sync
from dask_sgd.losses import get_loss
from dask_sgd.models import Objective
from dask_sgd.models.mlp import MLPModel
from dask_sgd.penalties import get_penalty

#: name: (shards, layer-wise)
CONTENDERS = {
    "1 shard": (1, True),
    "2 shards, the whole gradient at once": (2, False),
    "2 shards, layer by layer": (2, True),
}
BASELINE = "2 shards, the whole gradient at once"


def epoch_rate(client, data, batch_size: int, n_shards: int, layerwise: bool) -> float:
    """Rows per second of a "sync" fit's second epoch."""
    model = MLPModel(data.n_features, LAYERS, N_CLASSES)
    objective = Objective(
        model, get_loss("log_loss", multinomial=True), get_penalty("l2", alpha=1e-4 / 200),
        weighted_mean=True,
    )  # fmt: skip
    trainer = ClusterTrainer(
        client, data, objective, optim.adam(), schedules.constant(1e-3),
        TargetEncoder(np.arange(N_CLASSES), one_hot=True), batch_size=batch_size,
        n_shards=n_shards, strategy=Sync(layerwise=layerwise), warmup_epochs=0,
    ).start()  # fmt: skip
    state = TrainState.create(model.init_params(0, dtype="float32"), optim.adam(), averaged=False)
    try:
        state, *_ = trainer.run_epoch(state, 1.0)
        started = time.perf_counter()
        state, _, rows, *_ = trainer.run_epoch(state, 1.0)
        return rows / (time.perf_counter() - started)
    finally:
        trainer.close()


def markdown_table(result: dict) -> str:
    """Each contender's rows per second, median and range over the repeats, and the ratio of
    its median to the whole gradient's on two shards."""
    rates = result["samples_per_second"]
    baseline = np.median(rates[BASELINE])
    return report.markdown_table(
        ["contender", "k samples/s", f"/ {BASELINE}"],
        [[name, report.median_and_range(values, 1e-3, 1), f"{np.median(values) / baseline:.2f}"]
         for name, values in rates.items()],
    )  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    X, Y = w3_rows(args.n_samples)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        rows = -(-args.n_samples // 8)
        data = persist_blocks(
            client, da.from_array(X, chunks=(rows, -1)), da.from_array(Y.argmax(axis=1), rows),
            classifier=True, seed=0,
        )  # fmt: skip
        try:
            contenders = {
                name: lambda shards=shards, layerwise=layerwise: epoch_rate(
                    client, data, args.batch_size, shards, layerwise
                )
                for name, (shards, layerwise) in CONTENDERS.items()
            }
            result = {"args": vars(args)} | report.best_of_interleaved(contenders, args.repeats)
        finally:
            data.release()
    report.save_and_print(result, args.json, markdown_table)
    return result


if __name__ == "__main__":
    main()
