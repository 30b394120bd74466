"""Time to accuracy: dask_sgd against its peers on one workload, side by side, in one run.

    python -m dask_sgd.benchmarks.tta --workload dense-logreg [--quick] [--repeats 3] [--output DIR]
    python -m dask_sgd.benchmarks.tta --workload sparse-ctr [--quick] [--n-features 2**20]
    python -m dask_sgd.benchmarks.tta --workload sparse-ctr --compare-features 20,24
    python -m dask_sgd.benchmarks.tta --workload mlp [--quick]

Follows ``BENCHMARKS.md``. This docstring describes W1 (dense-logreg); W2 (sparse-ctr: its
rows, its reference, cached, its target, its sweeps, the width comparison) is in
:mod:`dask_sgd.benchmarks.w2`, and its table adds bytes per step and peak worker memory;
W3 (mlp: a network, its target a held-out accuracy, its PyTorch peers) is in
:mod:`dask_sgd.benchmarks.w3`. The data is generated once, split, and persisted on one
``LocalCluster(n_workers=2, threads_per_worker=1)`` before any clock starts; single-process
peers get the same rows as NumPy arrays. The target is a held-out log-loss of at most
1.001 × that of a reference fit (scikit-learn's LogisticRegression run to convergence).

Each contender has a *budget* ladder (``max_iter``, or epochs for the SGD learners). A run
fits from scratch at each budget in turn, timing ``fit`` alone, then scores the held-out
rows off the clock, and stops at the first budget that reaches the target: its fit time is
the run's time to target. Each contender runs ``--repeats`` times; the table reports the
median with min and max. Writes ``tta.json``, ``tta.md`` and ``tta.png`` to ``--output``.

Every fit on Dask input is a user's first fit on its data: each budget of each run gets the
training rows persisted again under keys of its own (a copy of each persisted partition,
made where that partition is, so placed as ``persist`` placed the rows) and waited for
before the clock starts, and released after it. No replica, block or cache left by an
earlier fit is there to make it cheaper. A throw-away dask_sgd fit on a few rows first
starts the cluster's machinery (and the workers import dask-ml), so that the first
contender does not pay a new cluster's first fit. Beside each dask_sgd time to target, and
labelled as such, the table reports a *refit on data already seen*: a second fit at the
budget that reached the target, on the same rows right after the first.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import statistics
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import scipy.sparse
from distributed import Client, LocalCluster, wait
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.linear_model import SGDClassifier as SklearnSGD
from sklearn.metrics import log_loss

import dask_sgd
from dask_sgd.benchmarks import w2, w3
from dask_sgd.benchmarks.memory import PeakMemory

WORKLOADS = {
    "dense-logreg": dict(n_samples=1_100_000, n_test=100_000, n_features=100, n_informative=50),
    "sparse-ctr": w2.SIZE,
    "mlp": w3.SIZE,
}
#: ``--quick``: the same workload, small enough for a smoke test
QUICK = dict(n_samples=11_000, n_test=1_000, n_features=20, n_informative=10)
TARGET_RATIO = 1.001
STRATEGIES = ("local", "sync", "backup", "downpour", "ssp")


@dataclass
class Contender:
    """A learner at one setting: ``make(budget)`` builds an unfitted model, and
    ``fit(model, data, budget)`` fits it (default: ``model.fit`` on the NumPy or, with
    ``on_dask``, the Dask rows); ``epochs`` says whether the budget counts passes; ``refit``
    that a second fit on the same rows is timed too."""

    name: str
    setting: str
    make: Callable[[int | None], Any]
    budgets: list
    on_dask: bool = False
    epochs: bool = False
    fit: Callable[[Any, dict, int | None], Any] | None = None
    #: also time a second fit at the reaching budget on the same rows ("refit")
    refit: bool = False
    #: sample the workers' peak memory during each fit (Dask input)
    memory: bool = False
    #: a failure is a row saying why (a peer that refuses sparse blocks), not the run's end
    may_fail: bool = False
    #: runs of this contender, where not ``--repeats`` (a reference solver of minutes)
    repeats: int | None = None
    #: the fitted model's ``fit_seconds_`` is the fit's time (a peer that starts processes
    #: of its own times its training alone, as dask_sgd's clock starts on a running cluster)
    self_timed: bool = False

    def run_fit(self, model, data: dict, budget):
        if self.fit is not None:
            return self.fit(model, data, budget)
        X, y = (data["dX"], data["dy"]) if self.on_dask else (data["X"], data["y"])
        return model.fit(X, y)


def strategy_rows(setting: str | None, make: Callable[[str, int], Any], budgets: list,
                  **options: Any) -> list[Contender]:  # fmt: skip
    """A dask_sgd contender per strategy, each fitting ``make(strategy, budget)`` for an
    epoch budget; ``setting`` None: what a user who does not tune gets ("local" is the
    default strategy)."""
    return [
        Contender(
            f"dask_sgd {strategy}",
            setting or ("default" if strategy == "local" else "defaults"),
            lambda b, s=strategy: make(s, b), budgets, epochs=True, refit=True, **options,
        )
        for strategy in STRATEGIES
    ]  # fmt: skip


def _sgd_classifier(strategy: str, budget: int, **settings: Any) -> dask_sgd.SGDClassifier:
    return dask_sgd.SGDClassifier(
        loss="log_loss", strategy=strategy, max_iter=budget, tol=None, random_state=0,
        **settings,
    )  # fmt: skip


def incremental_fit(model, data: dict, budget: int):
    """dask-ml's Incremental: one ``partial_fit`` pass over the blocks per epoch."""
    for _ in range(budget):
        model.partial_fit(data["dX"], data["dy"], classes=[0, 1])
    return model


def contenders(quick: bool) -> list[Contender]:
    """Every peer of ``BENCHMARKS.md`` and every dask_sgd strategy, default and tuned."""
    from dask_ml.linear_model import LogisticRegression as DaskLogisticRegression
    from dask_ml.wrappers import Incremental

    epochs = [1, 2, 3] if not quick else [1, 2]
    ours = epochs if not quick else [1]  # quick: ten dask_sgd rows, one fit each
    iterations = [5, 8, 12, 20, 50, 100] if not quick else [5, 20]
    tuned_sgd = dict(loss="log_loss", alpha=1e-5, learning_rate="invscaling", eta0=0.01)
    ours_tuned = dict(optimizer="adam", learning_rate="constant", eta0=1e-3, alpha=1e-6)
    ours_tuned |= dict(batch_size=1024 if not quick else 32, local_steps=32)
    rows = [
        Contender("sklearn LogisticRegression", "default", lambda b: LogisticRegression(), [None]),
        Contender(
            "sklearn LogisticRegression", "tuned: max_iter",
            lambda b: LogisticRegression(max_iter=b), iterations,
        ),
        Contender(
            "sklearn SGDClassifier", "default (log_loss)",
            lambda b: SklearnSGD(loss="log_loss", random_state=0), [None],
        ),
        Contender(
            "sklearn SGDClassifier", "tuned: alpha 1e-5, invscaling, eta0 0.01",
            lambda b: SklearnSGD(**tuned_sgd, max_iter=b, tol=None, random_state=0),
            epochs, epochs=True,
        ),
        Contender(
            "dask-ml LogisticRegression lbfgs", "default",
            lambda b: DaskLogisticRegression(solver="lbfgs"), [None], on_dask=True,
        ),
        Contender(
            "dask-ml LogisticRegression lbfgs", "tuned: max_iter",
            lambda b: DaskLogisticRegression(solver="lbfgs", max_iter=b), iterations[:5],
            on_dask=True,
        ),
        Contender(
            "dask-ml LogisticRegression admm", "max_iter (its default, 100, is its default solver)",
            lambda b: DaskLogisticRegression(solver="admm", max_iter=b),
            [5, 10] if not quick else [2, 5], on_dask=True,
        ),
        Contender(
            "dask-ml Incremental(SGDClassifier)", "tuned SGDClassifier, epochs",
            lambda b: Incremental(SklearnSGD(**tuned_sgd, random_state=0)),
            epochs, on_dask=True, epochs=True, fit=incremental_fit,
        ),
    ]  # fmt: skip
    rows += strategy_rows(None, _sgd_classifier, ours, on_dask=True)
    rows += strategy_rows(
        "tuned: adam 1e-3, batch 1024 per worker, local_steps 32",
        lambda s, b: _sgd_classifier(s, b, **ours_tuned), ours, on_dask=True,
    )  # fmt: skip
    return rows


def sparse_contenders(
    quick: bool, tuned: dict, reference: dict, ours: list[int] | None = None
) -> list[Contender]:
    """W2's peers and every dask_sgd strategy, default and tuned (``tuned``: the sweeps'
    best settings, :func:`w2.sweeps`), dask_sgd's at the epoch budgets ``ours``
    (:data:`w2.OUR_EPOCHS` if None)."""
    from dask_ml.linear_model import LogisticRegression as DaskLogisticRegression
    from dask_ml.wrappers import Incremental

    ours = ours or ([1] if quick else w2.OUR_EPOCHS)
    epochs = w2.SKLEARN_EPOCHS if not quick else [1, 2]  # an epoch costs them under a second

    def chosen(best, grid):
        """The sweep's best setting and how it was chosen."""
        if best is None:
            first = w2.describe(grid[0])
            return grid[0], f"every setting of {len(grid)} failed; the first: {first}"
        return best, f"best of {len(grid)}: {w2.describe(best)}"

    sk, swept = chosen(tuned["sklearn"], w2.SKLEARN_GRID)
    mine, ours_swept = chosen(tuned["ours"], w2.OURS_GRID)
    c = reference["C"]
    common = dict(on_dask=True, may_fail=True, memory=True)
    rows = [
        Contender(
            "sklearn SGDClassifier", "default (log_loss)",
            lambda b: SklearnSGD(loss="log_loss", random_state=0), [None],
        ),
        Contender(
            "sklearn SGDClassifier", f"tuned ({swept}), epochs",
            lambda b: SklearnSGD(loss="log_loss", max_iter=b, tol=None, random_state=0, **sk),
            epochs, epochs=True,
        ),
        Contender(
            "sklearn LogisticRegression (reference)", f"lbfgs, C {c:g}, tol 1e-4, max_iter",
            lambda b: LogisticRegression(C=c, tol=1e-4, max_iter=b),
            [50] if quick else [50, 100, 200, 400, 2000], repeats=1,
        ),
        Contender(
            "dask-ml Incremental(SGDClassifier)", f"tuned SGDClassifier ({w2.describe(sk)}), epochs",
            lambda b: Incremental(SklearnSGD(loss="log_loss", random_state=0, **sk)),
            epochs, epochs=True, fit=incremental_fit, **common,
        ),
        Contender(
            "dask-ml LogisticRegression lbfgs", "default (on CSR blocks)",
            lambda b: DaskLogisticRegression(solver="lbfgs"), [None], **common,
        ),
    ]  # fmt: skip
    rows += strategy_rows(None, _sgd_classifier, ours, **common)
    rows += strategy_rows(
        f"tuned ({ours_swept}; swept with local)",
        lambda s, b: _sgd_classifier(s, b, **mine), ours, **common,
    )  # fmt: skip
    return rows


def make_data(client, n_samples: int, n_test: int, n_features: int, n_informative: int):
    """The workload's rows: train and test as NumPy, train also persisted on the cluster."""
    X, y = make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=n_informative,
        flip_y=0.05,
        random_state=0,
    )
    n_train = n_samples - n_test
    X_train, y_train = X[:n_train], y[:n_train]
    chunk_rows = -(-n_train // 8)  # eight blocks, four per worker
    dX, dy = client.persist(
        [
            da.from_array(X_train, chunks=(chunk_rows, n_features)),
            da.from_array(y_train, chunk_rows),
        ]
    )
    wait([dX, dy])
    return {
        "X": X_train,
        "y": y_train,
        "dX": dX,
        "dy": dy,
        "X_test": X[n_train:],
        "y_test": y[n_train:],
    }


def _copy(block):
    return block.copy() if scipy.sparse.issparse(block) else np.array(block, copy=True)


def fresh_rows(client, data: dict) -> dict:
    """``data`` with its Dask training rows persisted again under keys of their own, and
    waited for: each partition copied where it is, so placed as ``persist`` placed it, with
    nothing that an earlier fit left (a replica, a block) attached to the new keys."""
    token = uuid.uuid4().hex
    dX = data["dX"].map_blocks(_copy, name=f"tta-X-{token}")
    dy = data["dy"].map_blocks(_copy, name=f"tta-y-{token}")
    dX, dy = client.persist([dX, dy])
    wait([dX, dy])
    return data | {"dX": dX, "dy": dy}


def release_rows(client, data: dict) -> None:
    """Release the rows that :func:`fresh_rows` persisted."""
    client.cancel([data["dX"], data["dy"]])


def _import(name: str) -> None:
    importlib.import_module(name)


def warm_up(client, n_features: int) -> None:
    """Start the cluster's machinery off the clock: the workers import dask-ml, and one
    dask_sgd fit on a few rows (its own) runs once."""
    client.run(_import, "dask_ml.linear_model")
    X, y = make_classification(n_samples=2_000, n_features=n_features, random_state=1)
    dX, dy = client.persist([da.from_array(X, chunks=(250, -1)), da.from_array(y, 250)])
    wait([dX, dy])
    dask_sgd.SGDClassifier(loss="log_loss", max_iter=1, tol=None, random_state=0).fit(dX, dy)
    client.cancel([dX, dy])


def held_out_log_loss(model, data: dict) -> float:
    proba = model.predict_proba(data["X_test"])
    if dask.is_dask_collection(proba):
        proba = proba.compute()
    return float(log_loss(data["y_test"], np.asarray(proba)))


def held_out_accuracy(model, data: dict) -> float:
    predicted = model.predict(data["X_test"])
    if dask.is_dask_collection(predicted):
        predicted = predicted.compute()
    return float(np.mean(np.asarray(predicted) == data["y_test"]))


@dataclass(frozen=True)
class Metric:
    """What a workload's target is on: the points' and rows' field (``key``, ``best_key``),
    its label, how a fitted model scores, and which way is better."""

    key: str
    label: str
    score: Callable[[Any, dict], float]
    higher_is_better: bool = False

    def reached(self, value: float, target: float) -> bool:
        return value >= target if self.higher_is_better else value <= target

    def best(self, values) -> float:
        return max(values) if self.higher_is_better else min(values)

    @property
    def best_key(self) -> str:
        return f"best_{self.key}"


LOG_LOSS = Metric("log_loss", "held-out log-loss", held_out_log_loss)
ACCURACY = Metric("accuracy", "held-out accuracy", held_out_accuracy, higher_is_better=True)
METRICS = {metric.key: metric for metric in (LOG_LOSS, ACCURACY)}


def timed_fit(contender: Contender, data: dict, budget, client=None) -> tuple[Any, float, int]:
    """A new model at ``budget``, fitted: the model, the seconds of its fit alone, and the
    workers' peak memory during it (0 unless ``contender.memory``: sampled by a thread of
    this process, every 0.2 s, a call to each worker that costs about a millisecond)."""
    model = contender.make(budget)
    memory = PeakMemory(client) if contender.memory and client is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # small budgets are the point
        # the peers' own deprecations: dask-ml reads old Dask settings and passes
        # deprecated options to SciPy's L-BFGS-B
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        if memory is not None:
            memory.__enter__()
        try:
            started = time.perf_counter()
            contender.run_fit(model, data, budget)
            seconds = time.perf_counter() - started
            if contender.self_timed:
                seconds = model.fit_seconds_
        finally:
            if memory is not None:
                memory.__exit__(None, None, None)
    return model, seconds, memory.peak if memory is not None else 0


def run_contender(
    contender: Contender, data: dict, target: float, client=None, metric: Metric = LOG_LOSS
) -> list[dict]:
    """One run: fit at each budget until the target is reached (on ``metric``); the points
    on the way.

    With ``client``, a contender on Dask input fits each budget on rows of its own
    (:func:`fresh_rows`), as a user's first fit on them; at the budget that reaches the
    target, a ``refit`` contender then fits again on the same rows ("refit_seconds")."""
    points = []
    for budget in contender.budgets:
        rows = fresh_rows(client, data) if client is not None and contender.on_dask else data
        try:
            try:
                model, seconds, peak = timed_fit(contender, rows, budget, client)
            except Exception as error:
                if not contender.may_fail:
                    raise
                return [{"budget": budget, "error": f"{type(error).__name__}: {error}"[:500]}]
            value = metric.score(model, data)  # off the clock
            point = {"budget": budget, "seconds": seconds, metric.key: value}
            if contender.memory:
                point["peak_worker_bytes"] = peak
                pushed, pulled = w2.bytes_per_step(model)
                point |= {"bytes_pushed_per_step": pushed, "bytes_pulled_per_step": pulled}
            if metric.reached(value, target) and contender.refit:
                model, point["refit_seconds"], _ = timed_fit(contender, rows, budget)
                point[f"refit_{metric.key}"] = metric.score(model, data)
        finally:
            if rows is not data:
                release_rows(client, rows)
        points.append(point)
        if metric.reached(value, target):
            break
    return points


def summarize(
    contender: Contender, runs: list[list[dict]], target: float, n_train: int,
    metric: Metric = LOG_LOSS,
) -> dict:  # fmt: skip
    """Median time to target (or "not reached" and the best metric), over the runs; a run
    that failed makes the row "failed" with the reason."""
    errors = [point["error"] for run in runs for point in run if "error" in point]
    if errors:
        return {"contender": contender.name, "setting": contender.setting, "runs": runs,
                "failed": errors[0], "reached": False, metric.best_key: None}  # fmt: skip
    reached = [run[-1] for run in runs if metric.reached(run[-1][metric.key], target)]
    row = {
        "contender": contender.name,
        "setting": contender.setting,
        "runs": runs,
        metric.best_key: metric.best(point[metric.key] for run in runs for point in run),
        "reached": len(reached) == len(runs),
    }
    if contender.memory:  # at the last budget of each run (the reaching one, where reached)
        last = [run[-1] for run in runs]
        row["peak_worker_bytes"] = statistics.median(p["peak_worker_bytes"] for p in last)
        for key in ("bytes_pushed_per_step", "bytes_pulled_per_step"):
            values = [p[key] for p in last if p.get(key) is not None]
            row[key] = statistics.median(values) if values else None
    if row["reached"]:
        times = [point["seconds"] for point in reached]
        budgets = [point["budget"] for point in reached]
        row |= {
            "seconds_to_target": statistics.median(times),
            "seconds_min": min(times),
            "seconds_max": max(times),
            "budget_to_target": statistics.median(b for b in budgets if b is not None)
            if budgets[0] is not None
            else None,
        }
        if contender.epochs:
            row["samples_per_second"] = statistics.median(
                n_train * point["budget"] / point["seconds"] for point in reached
            )
        if contender.refit:  # not a first fit: the same rows, fitted once already
            refits = [point["refit_seconds"] for point in reached]
            row |= {
                "refit_seconds": statistics.median(refits),
                "refit_seconds_min": min(refits),
                "refit_seconds_max": max(refits),
            }
    return row


def _mib(value) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f}"


def _per_step(value) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def markdown_table(
    rows: list[dict], target: float, reference: float | None, ratio: float = TARGET_RATIO,
    metric: Metric = LOG_LOSS,
) -> str:  # fmt: skip
    """Every contender's time to target as a first fit; the last column, labelled as such,
    is a refit on data already seen (blank where none was timed). Where rows measured them
    (W2), bytes pushed and pulled per step and peak worker memory come before it. The
    target is ``ratio`` × a ``reference``'s metric, or (``reference`` None) a fixed one."""
    extra = any("peak_worker_bytes" in row or "failed" in row for row in rows)
    side = "≥" if metric.higher_is_better else "≤"
    target_line = f"Target: {metric.label} {side} {target:.5f}"
    if reference is not None:
        target_line += f" (reference {reference:.5f} × {ratio})"
    lines = [
        target_line + ".",
        (
            "Every time to target is a first fit on its data; the last column is not (a second "
            "fit at the same budget on the same rows)."
        ),
        "",
        "| contender | setting | time to target, s (median [min, max]) | budget "
        + f"| samples/s | best {metric.label.removeprefix('held-out ')} | "
        + ("bytes pushed/step | bytes pulled/step | peak worker memory, MiB | " if extra else "")
        + "refit on data already seen, s (median [min, max]) |",
        "| --- | --- | ---: | ---: | ---: | ---: | " + ("---: | ---: | ---: | " if extra else "")
        + "---: |",
    ]  # fmt: skip
    for row in rows:
        if "failed" in row:
            cells = ["failed: " + row["failed"].replace("|", "/").replace("\n", " ")[:200]]
            cells += [""] * (6 if extra else 3)
            lines.append(f"| {row['contender']} | {row['setting']} | " + " | ".join(cells) + " |")
            continue
        if row["reached"]:
            time_cell = (
                f"{row['seconds_to_target']:.2f} [{row['seconds_min']:.2f}, "
                f"{row['seconds_max']:.2f}]"
            )
        else:
            time_cell = "not reached"
        refit_cell = (
            f"{row['refit_seconds']:.2f} [{row['refit_seconds_min']:.2f}, "
            f"{row['refit_seconds_max']:.2f}]"
            if "refit_seconds" in row
            else ""
        )
        budget = row.get("budget_to_target")
        rate = row.get("samples_per_second")
        measured = ""
        if extra:
            measured = (
                f"{_per_step(row.get('bytes_pushed_per_step'))} | "
                f"{_per_step(row.get('bytes_pulled_per_step'))} | "
                f"{_mib(row.get('peak_worker_bytes'))} | "
                if "peak_worker_bytes" in row
                else " |  |  | "
            )
        lines.append(
            f"| {row['contender']} | {row['setting']} | {time_cell} | "
            f"{'' if budget is None else f'{budget:g}'} | "
            f"{'' if rate is None else f'{rate:,.0f}'} | {row[metric.best_key]:.5f} | "
            f"{measured}{refit_cell} |"
        )
    return "\n".join(lines) + "\n"


def results_table(results: dict) -> str:
    """:func:`markdown_table` of a run's JSON results."""
    metric = METRICS[results.get("metric", LOG_LOSS.key)]
    return markdown_table(
        results["rows"],
        results[f"target_{metric.key}"],
        results.get(f"reference_{metric.key}"),
        results.get("target_ratio", TARGET_RATIO),
        metric,
    )


def plot(
    rows: list[dict], reference: float | None, path: Path, ratio: float = TARGET_RATIO,
    metric: Metric = LOG_LOSS, target: float | None = None,
) -> None:  # fmt: skip
    """Held-out log-loss above the reference's against fit time (both log scales): each
    contender's budgets, median over runs; the target is ``ratio`` − 1 above. Without a
    ``reference``: the metric itself (linear scale) and the ``target``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(12, 5.5))
    for row in rows:
        if "failed" in row:
            continue
        by_budget: dict = {}
        for run in row["runs"]:
            for point in run:
                by_budget.setdefault(point["budget"], []).append(point)
        xs = [statistics.median(p["seconds"] for p in pts) for pts in by_budget.values()]
        ys = [statistics.median(p[metric.key] for p in pts) for pts in by_budget.values()]
        if reference is not None:
            ys = [max(y / reference - 1, 1e-5) for y in ys]  # at or below: 1e-5
        style = "-o" if row["contender"].startswith("dask_sgd") else "--s"
        axes.plot(xs, ys, style, label=f"{row['contender']} ({row['setting'].split(':')[0]})")
    axes.axhline(ratio - 1 if reference is not None else target, color="black", linewidth=1,
                 label="target")  # fmt: skip
    axes.set_xscale("log")
    axes.set_xlabel("fit wall time, s")
    if reference is not None:
        axes.set_yscale("log")
        axes.set_ylabel(f"{metric.label} / reference − 1")
    else:
        axes.set_ylabel(metric.label)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _features(text: str) -> int:
    """A column count: ``1048576``, ``2**20`` or ``2^20``."""
    for power in ("**", "^"):
        if power in text:
            base, exponent = text.split(power)
            return int(base) ** int(exponent)
    return int(text)


def warm_up_sparse(client) -> None:
    """Off the clock, the workers import dask-ml and one dask_sgd fit on a few sparse rows
    of its own runs: the sparse path's first use (a failure is printed: the rows then say
    what fails)."""
    client.run(_import, "dask_ml.linear_model")
    X, y = w2.make_ctr_blocks(2_000, 2**12, chunk_size=250, random_state=1)
    X, y = client.persist([X, y])
    wait([X, y])
    try:
        dask_sgd.SGDClassifier(loss="log_loss", max_iter=1, tol=None, random_state=0).fit(X, y)
    except Exception as error:  # noqa: BLE001 (reported: the rows then say what fails)
        print(f"sparse warm-up fit failed: {type(error).__name__}: {error}"[:500], flush=True)
    finally:
        client.cancel([X, y])


def run_contenders(
    client, contender_list, data, target, args, metric: Metric = LOG_LOSS
) -> list[dict]:
    """Each contender ``--repeats`` times (or its own), summarized and printed."""
    rows = []
    for contender in contender_list:
        label = f"{contender.name} [{contender.setting}]"
        if args.only not in contender.name or (args.skip and args.skip in label):
            continue
        repeats = contender.repeats or args.repeats
        runs = [run_contender(contender, data, target, client, metric) for _ in range(repeats)]
        row = summarize(contender, runs, target, len(data["y"]), metric)
        rows.append(row)
        if "failed" in row:
            print(f"{label}: failed: {row['failed']}", flush=True)
            continue
        reached = f"{row['seconds_to_target']:.2f} s" if row["reached"] else "not reached"
        if "refit_seconds" in row:
            reached += f" (refit on data already seen {row['refit_seconds']:.2f} s)"
        if "peak_worker_bytes" in row:
            reached += (
                f"; bytes/step pushed {_per_step(row['bytes_pushed_per_step'])}, pulled "
                f"{_per_step(row['bytes_pulled_per_step'])}; peak worker memory "
                f"{_mib(row['peak_worker_bytes'])} MiB"
            )
        print(f"{label}: {reached}, best {row[metric.best_key]:.5f}", flush=True)
    return rows


@contextlib.contextmanager
def new_client():
    """A client of a new ``LocalCluster(n_workers=2, threads_per_worker=1)``."""
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        yield client


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="dense-logreg")
    parser.add_argument("--quick", action="store_true", help="a small size, for a smoke test")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="run only contenders whose name has this")
    parser.add_argument("--skip", default=None, help='skip "name [setting]" that has this')
    parser.add_argument("--output", default="tta-results", help="a directory")
    parser.add_argument(
        "--n-features", type=_features, default=None,
        help="sparse-ctr: the hashed columns (default 2**20; --quick 2**16)",
    )  # fmt: skip
    parser.add_argument(
        "--compare-features", default=None, metavar="E1,E2",
        help="sparse-ctr: instead of time to target, fit each dask_sgd strategy (defaults, "
        "--compare-epochs epochs) on the same rows at 2**E1 and 2**E2 columns: bytes per "
        "step, time per epoch, peak worker memory",
    )  # fmt: skip
    parser.add_argument(
        "--n-samples", type=int, default=None,
        help="sparse-ctr: training rows (default 1,000,000; in eight blocks)",
    )  # fmt: skip
    parser.add_argument("--n-test", type=int, default=None, help="sparse-ctr: held-out rows")
    parser.add_argument(
        "--our-epochs", default=None, metavar="E1,E2,...",
        help="sparse-ctr: dask_sgd's epoch budgets (default: w2.OUR_EPOCHS)",
    )  # fmt: skip
    parser.add_argument("--compare-epochs", type=int, default=2)
    parser.add_argument(
        "--compare-repeats", type=int, default=1,
        help="sparse-ctr, with --compare-features: fits of each strategy at each width "
        "(the figures are their medians)",
    )  # fmt: skip
    parser.add_argument(
        "--reference-cache", default=None,
        help="sparse-ctr: the file that keeps L* per generator setting "
        "(default: w2-reference.json in --output)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    sparse = args.workload == "sparse-ctr"
    if sparse:
        size = dict(w2.QUICK if args.quick else w2.SIZE)
        if args.n_features is not None:
            size["n_features"] = args.n_features
        if args.n_samples is not None:
            size["n_samples"] = args.n_samples
            size["chunk_size"] = -(-args.n_samples // 8)  # eight blocks, four per worker
        if args.n_test is not None:
            size["n_test"] = args.n_test
    else:
        size = QUICK if args.quick else WORKLOADS[args.workload]
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    ratio = w2.TARGET_RATIO if sparse else TARGET_RATIO

    if sparse and args.compare_features:
        exponents = [int(e) for e in args.compare_features.split(",")]
        strategies = [s for s in STRATEGIES if args.only in f"dask_sgd {s}"]
        comparison = w2.compare_features(
            new_client, size, exponents, strategies, args.compare_epochs, warm_up_sparse,
            repeats=args.compare_repeats,
        )  # fmt: skip
        comparison |= {"size": size, "generator": w2.generator_key(size)}
        (output / "w2-compare.json").write_text(json.dumps(comparison, indent=2))
        table = w2.comparison_table(comparison)
        (output / "w2-compare.md").write_text(table)
        print(table)
        return comparison
    if args.workload == "mlp":
        return write_results(run_mlp(args), output)

    with new_client() as client:
        extra: dict = {}
        if sparse:
            data = w2.make_data(client, **size)
            warm_up_sparse(client)
            cache = Path(args.reference_cache or output / "w2-reference.json")
            found = w2.reference(data, size, cache)
            reference = found["log_loss"]
            extra = {
                "generator": found["key"],
                "reference": found,
                **{k: data[k] for k in ("bayes_log_loss", "base_log_loss", "positive_rate",
                                        "nnz_per_row")},
            }  # fmt: skip
            print(
                f"rows: {data['nnz_per_row']:.1f} non-zeros each, {data['positive_rate']:.3f} "
                f"positive; held out: base-rate log-loss {data['base_log_loss']:.5f}, Bayes "
                f"{data['bayes_log_loss']:.5f}; L* {reference:.5f} (C {found['C']:g}"
                f"{', cached' if found['cached'] else ''})",
                flush=True,
            )
        else:
            data = make_data(client, **size)
            warm_up(client, size["n_features"])
            reference_model = LogisticRegression(C=1e6, tol=1e-6, max_iter=300)
            reference = held_out_log_loss(reference_model.fit(data["X"], data["y"]), data)
        target = ratio * reference
        print(f"reference held-out log-loss {reference:.5f}; target {target:.5f}", flush=True)
        if sparse:
            extra["sweeps"] = w2.sweeps(data, args.quick, client)
            ours = [int(e) for e in args.our_epochs.split(",")] if args.our_epochs else None
            contender_list = sparse_contenders(args.quick, extra["sweeps"], found, ours)
        else:
            contender_list = contenders(args.quick)
        rows = run_contenders(client, contender_list, data, target, args)

    results = {
        "workload": args.workload,
        "size": size,
        "repeats": args.repeats,
        "reference_log_loss": reference,
        "target_log_loss": target,
        "target_ratio": ratio,
        **extra,
        "rows": rows,
    }
    return write_results(results, output)


def run_mlp(args) -> dict:
    """W3 (:mod:`dask_sgd.benchmarks.w3`): every contender's time to the held-out
    accuracy target."""
    size = w3.QUICK if args.quick else w3.SIZE
    with new_client() as client:
        data = w3.make_data(client, **size)
        w3.warm_up(client, data)
        target = w3.TARGET_ACCURACY
        print(f"target held-out accuracy {target}", flush=True)
        contender_list = w3.contenders(args.quick)
        rows = run_contenders(client, contender_list, data, target, args, ACCURACY)
    return {
        "workload": args.workload, "size": size, "repeats": args.repeats,
        "metric": ACCURACY.key, "target_accuracy": target, "rows": rows,
    }  # fmt: skip


def write_results(results: dict, output: Path) -> dict:
    """``tta.json``, its table (``tta.md``, also printed) and its plot (``tta.png``)."""
    metric = METRICS[results.get("metric", LOG_LOSS.key)]
    (output / "tta.json").write_text(json.dumps(results, indent=2))
    table = results_table(results)
    (output / "tta.md").write_text(table)
    plot(
        results["rows"], results.get(f"reference_{metric.key}"), output / "tta.png",
        results.get("target_ratio", TARGET_RATIO), metric, results[f"target_{metric.key}"],
    )  # fmt: skip
    print(table)
    return results


if __name__ == "__main__":
    main()
