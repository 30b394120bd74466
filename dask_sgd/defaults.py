"""What the estimators' "auto" settings become, in process and on Dask input.

In process, "auto" is scikit-learn's algorithm: minibatches of 8 rows, plain SGD and the
estimator's scikit-learn schedule ("optimal" for classifiers, "invscaling" for regressors),
so that the estimators are a drop-in. On Dask input those settings are slow and inaccurate:
every 8-row step costs a Python step on a worker, and the "optimal" rate (about ``1/alpha``
at first) is built for single rows. There "auto" is large batches (up to 1024 rows per
worker and step) and, for classifiers, Adam with the rate ``1 / (t + 1)``: large steps at
first, to travel to an optimum far from zero, and small ones soon, for a precise one. It
reaches the time-to-accuracy target of workload W1 in two epochs (``docs/benchmarks.md``).

A setting the user gives is never changed. The choice is made by the first call that trains
(``fit``, or the first ``partial_fit``), and later ``partial_fit`` calls keep it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: rows per minibatch in process: scikit-learn's estimator checks pass and a step stays cheap
IN_PROCESS_BATCH_SIZE = 8
#: rows per worker and step on Dask input: NumPy does the work, Python's per-step cost fades
DASK_BATCH_SIZE = 1024
#: ...but small data keeps at least this many steps per worker and epoch, so that an epoch
#: still moves the model (a few hundred rows, for instance, train in batches of 8)
MIN_DASK_STEPS_PER_EPOCH = 64
#: a classifier's "auto" rate on Dask input, with Adam: ``eta0 / (t + 1) ** power_t``
DASK_CLASSIFIER_SCHEDULE = {"learning_rate": "invscaling", "eta0": 1.0, "power_t": 1.0}


#: parameters per parameter-server shard, at least, when the number of shards is left to
#: dask_sgd: each shard costs every unit one more message per exchange, and only takes bytes
#: off the others' messages; below about a megabyte (1 ms on the wire) a message's latency
#: outweighs its bytes. A model of W1's size (101 parameters) gets one shard: Downpour's
#: per-step overhead on 2 workers fell from 8.4 ms (a shard per worker) to 2.6 ms.
MIN_SHARD_SIZE = 131_072


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule by scikit-learn's parameters, and the optimizer it drives."""

    learning_rate: str
    eta0: float
    power_t: float
    optimizer: Any


def batch_size(setting: int | str, rows_per_unit: float | None = None) -> int:
    """Rows per minibatch: in process (``rows_per_unit=None``) or per worker and step on Dask.

    Examples
    --------
    >>> batch_size("auto"), batch_size("auto", 500_000), batch_size("auto", 2_000)
    (8, 1024, 31)
    >>> batch_size(64, 500_000)
    64
    """
    if setting != "auto":
        return int(setting)
    if rows_per_unit is None:
        return IN_PROCESS_BATCH_SIZE
    by_steps = int(rows_per_unit // MIN_DASK_STEPS_PER_EPOCH)
    return min(DASK_BATCH_SIZE, max(IN_PROCESS_BATCH_SIZE, by_steps))


def n_shards(setting: int | None, n_parameters: int, n_workers: int) -> int:
    """Parameter-server shards: as set, else one per ``MIN_SHARD_SIZE`` parameters, at most one
    per worker. A setting above the number of parameters is an error.

    Examples
    --------
    >>> n_shards(None, 101, 8), n_shards(None, 1_000_000, 4), n_shards(3, 101, 8)
    (1, 4, 3)
    """
    if setting is None:
        return min(n_workers, max(1, n_parameters // MIN_SHARD_SIZE))
    if setting > n_parameters:
        raise ValueError(
            f"n_shards={setting} is more than the model's {n_parameters} parameters: each "
            "shard holds at least one."
        )
    return setting


def schedule(
    learning_rate: str,
    eta0: float,
    power_t: float,
    optimizer: Any,
    *,
    in_process: str,
    on_dask: bool,
    classifier: bool,
) -> Schedule:
    """The schedule and optimizer that an estimator's settings mean for its input.

    ``in_process`` is the estimator's scikit-learn schedule. Adam for a classifier on Dask
    input: it moves every coefficient by about the rate per step, whatever the size of the
    gradient, which suits classifiers (coefficients of order one on scaled features) but not
    regressors (coefficients that follow the target's scale: a target in the hundreds would
    take thousands of epochs); plain SGD's steps grow with the gradient. Under the "optimal"
    schedule, whose rates are plain per-row SGD's, "auto" is plain SGD too.

    Examples
    --------
    >>> schedule("auto", 0.01, 0.5, "auto", in_process="optimal", on_dask=True, classifier=True)
    Schedule(learning_rate='invscaling', eta0=1.0, power_t=1.0, optimizer='adam')
    >>> schedule("auto", 0.01, 0.5, "auto", in_process="optimal", on_dask=False, classifier=True)
    Schedule(learning_rate='optimal', eta0=0.01, power_t=0.5, optimizer='sgd')
    """
    settings = {"learning_rate": learning_rate, "eta0": eta0, "power_t": power_t}
    if learning_rate == "auto":
        settings["learning_rate"] = in_process
        if on_dask and classifier:
            settings = dict(DASK_CLASSIFIER_SCHEDULE)
    if optimizer == "auto":
        adam = on_dask and classifier and settings["learning_rate"] != "optimal"
        optimizer = "adam" if adam else "sgd"
    return Schedule(**settings, optimizer=optimizer)
