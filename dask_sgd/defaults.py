"""What the estimators' "auto" settings become, in process and on Dask input.

In process, "auto" is scikit-learn's algorithm: minibatches of 8 rows (fewer on small
dense data, down to one row per step, so that an epoch has at least 128 steps: see
``dask_sgd.estimators._training.in_process_batch_size``), plain SGD and the estimator's
scikit-learn schedule ("optimal" for classifiers, "invscaling" for regressors and for a
classifier on a regression loss), so that the estimators are a drop-in.

On Dask input those settings are slow and inaccurate: every 8-row step costs a Python step
on a worker, and the "optimal" rate (about ``1/alpha`` at first) is built for single rows.
There, with ``learning_rate`` and ``optimizer`` both "auto", training is:

- **standardized on the fly**: the model is trained in the coordinates of standardized
  columns (and, for the regression losses that are quadratic in the target, a standardized
  target), from the column moments that the check of the blocks reads anyway; the objective
  stays scikit-learn's, penalty included, in the data's units (:mod:`dask_sgd.standardize`);
- **from the intercept-only optimum**: a classifier's intercepts start where the best model
  without features would put them (the log-odds of each class's frequency, for the log
  loss), a regressor's at the target's mean;
- **Adagrad at a constant rate 0.35**, scaled by the strategy's rule (``√k`` on ``k``
  workers: 0.5 on two): per-coordinate steps that shrink like ``1 / sqrt(t)`` by
  themselves, on 1024 rows per worker and step;
- **averaged**: ``coef_`` is the mean of the iterates from the middle of the first epoch,
  and of each later epoch's (tail averaging: the mean restarts as every epoch starts, so
  that a model still travelling is not dragged back by its early iterates);
- **stopped by the rule in the standardized units**: ``tol`` is compared with the loss of
  the standardized target (a regression's loss divided by the target's variance), and
  ``n_iter_no_change`` is ``DASK_N_ITER_NO_CHANGE``, one epoch (more on small data, whose
  epochs have few steps: ``dask_n_iter_no_change``).

The rule was chosen on the defaults suite (``dask-sgd bench defaults``, nine problems:
W1, a noisy one with 200 features, unscaled columns with offsets, 10 classes, 3 %
positives, a target offset by 300, heavy-tailed noise under the Huber loss, the hinge loss
and float32 input), plus a tenth, nearly separable one (``tests/test_distributed.py``,
where the optimum's coefficients are large), first as a NumPy simulation of the
candidates, then on the cluster. Each of the three pieces (standardizing, the intercept's
start, averaging) was needed by at least one problem. The rate (on the suite's two workers)
is a compromise between the noisy problems, whose first epoch overshoots at 1.0, and the
nearly separable one, which travels too slowly at 0.3 (``docs/benchmarks.md``, "The
defaults suite"). Adagrad needs no schedule: its steps shrink by themselves. Since
2026-12-02 "local" scales its rate as "sync" does (the suite's two workers: 0.35 warmed up
to 0.49 over the first epoch, eight of nine problems as with 0.5 unscaled).

A setting the user gives is never changed: with a chosen ``optimizer`` or
``learning_rate``, nothing is standardized or averaged unless asked. The choice is made by
the first call that trains (``fit``, or the first ``partial_fit``), and later
``partial_fit`` calls keep it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: rows per minibatch in process: scikit-learn's estimator checks pass and a step stays cheap
IN_PROCESS_BATCH_SIZE = 8
#: rows per worker and step on Dask input: NumPy does the work, Python's per-step cost fades
DASK_BATCH_SIZE = 1024
#: ...but small data keeps at least this many steps per worker and epoch, so that an epoch
#: still moves the model (a few hundred rows, for instance, train in batches of 8)
MIN_DASK_STEPS_PER_EPOCH = 64
#: ``n_iter_no_change="auto"`` in process: scikit-learn's
N_ITER_NO_CHANGE = 5
#: the optimizer and constant rate of "auto" on Dask input, for one worker: k workers step
#: at √k × it (Adagrad's square-root rule, under every strategy but Downpour and SSP), so
#: the defaults suite's two workers train at 0.49, about the 0.5 the suite chose
DASK_OPTIMIZER, DASK_ETA0 = "adagrad", 0.35
#: ...on sparse input, whose columns are not standardized (``docs/sparse.md``): of 0.1-0.5,
#: the most problems within 1 % in sparse_defaults.py (2026-12-01, once Adagrad's L2 shrink
#: passed through its factor on each entry; docs/results/sparse-defaults)
DASK_SPARSE_ETA0 = 0.3
#: ...averaged from this share of the first epoch on
DASK_AVERAGE_FROM_EPOCH = 0.5
#: ...and stopped after this many epochs without improvement (scikit-learn's is 5: with a
#: model that is averaged, and a loss measured in standardized units, one epoch tells), or
#: as many as make ``MIN_DASK_STEPS_PER_EPOCH`` steps a unit (``dask_n_iter_no_change``)
DASK_N_ITER_NO_CHANGE = 1


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
    #: train in standardized coordinates, from the intercept-only optimum (Dask's "auto")
    standardized: bool = False


def batch_size(
    setting: int | str, rows_per_unit: float | None = None, largest: int = DASK_BATCH_SIZE
) -> int:
    """Rows per minibatch: in process (``rows_per_unit=None``) or per worker and step on Dask
    (at most ``largest`` for "auto").

    Examples
    --------
    >>> batch_size("auto"), batch_size("auto", 500_000), batch_size("auto", 2_000)
    (8, 1024, 31)
    >>> batch_size("auto", 500_000, largest=200)
    200
    >>> batch_size(64, 500_000)
    64
    """
    if setting != "auto":
        return int(setting)
    if rows_per_unit is None:
        return IN_PROCESS_BATCH_SIZE
    by_steps = int(rows_per_unit // MIN_DASK_STEPS_PER_EPOCH)
    return min(largest, max(IN_PROCESS_BATCH_SIZE, by_steps))


def dask_n_iter_no_change(steps_per_epoch: int) -> int:
    """``n_iter_no_change="auto"`` for the "auto" schedule on Dask input: one epoch tells when
    it has many steps, but small data's epochs (below 512 rows a unit, batches of 8 rows
    cannot make up ``MIN_DASK_STEPS_PER_EPOCH`` steps) are too short to: the rule waits as
    many epochs as make that many steps a unit. On diabetes (331 rows, 2 workers, 21 steps an
    epoch; means of three seeds) a patience of one epoch stopped the fit after 3 or 4 epochs
    at R² 0.330; this rule's 4 epochs stop it after 7 to 12 at 0.342; 20 epochs reach 0.350.

    Examples
    --------
    >>> dask_n_iter_no_change(200), dask_n_iter_no_change(64), dask_n_iter_no_change(21)
    (1, 1, 4)
    """
    return max(DASK_N_ITER_NO_CHANGE, math.ceil(MIN_DASK_STEPS_PER_EPOCH / steps_per_epoch))


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
    eta0_given: bool = True,
    sparse: bool = False,
) -> Schedule:
    """The schedule and optimizer that an estimator's settings mean for its input.

    ``in_process`` is the estimator's scikit-learn schedule. On Dask input, "auto" for both
    the rate and the optimizer is standardized, averaged Adagrad (see the module's
    docstring), at ``DASK_SPARSE_ETA0`` on ``sparse`` input; ``eta0`` then stays the
    user's if ``eta0_given``. Under the "optimal"
    schedule, whose rates are plain per-row SGD's, an "auto" optimizer is plain SGD.

    Examples
    --------
    >>> schedule("auto", 0.01, 0.5, "auto", in_process="optimal", on_dask=True, eta0_given=False)
    Schedule(learning_rate='constant', eta0=0.35, power_t=0.5, optimizer='adagrad', standardized=True)
    >>> schedule("auto", 0.01, 0.5, "auto", in_process="optimal", on_dask=False)
    Schedule(learning_rate='optimal', eta0=0.01, power_t=0.5, optimizer='sgd', standardized=False)
    """
    if on_dask and learning_rate == "auto" and optimizer == "auto":
        rate = eta0 if eta0_given else DASK_SPARSE_ETA0 if sparse else DASK_ETA0
        return Schedule("constant", rate, power_t, DASK_OPTIMIZER, standardized=True)
    if learning_rate == "auto":
        learning_rate = in_process
    if optimizer == "auto":
        optimizer = "sgd"
    return Schedule(learning_rate, eta0, power_t, optimizer)
