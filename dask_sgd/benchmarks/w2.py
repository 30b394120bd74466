"""W2 sparse-ctr for the time-to-accuracy benchmark (``tta.py --workload sparse-ctr``).

The rows are :func:`dask_sgd.datasets.make_ctr_blocks`: 2^20 hashed columns, float32 CSR
blocks made on the workers; the held-out rows come from the same true model (another block
range). The reference L* is the best held-out log-loss of scikit-learn's LogisticRegression
(lbfgs, tol 1e-4, max_iter 2000) over C in {0.1, 1}: minutes at full size, so it is kept in
``w2-reference.json`` beside the results, keyed by the generator's parameters, and computed
again only for a setting not there. The target is 1.002 × L*.

The "tuned" rows of scikit-learn's SGDClassifier and of dask_sgd are the best setting of a
small sweep run first in the same run (each setting fitted once, scikit-learn's for 10
epochs, dask_sgd's for one; the lowest held-out log-loss wins); the sweep's every setting
and loss is printed and saved.

``--compare-features 20,24`` fits every dask_sgd strategy (defaults) on the same rows hashed
to 2^20 and to 2^24 columns and reports what the model's width must not change: bytes pushed
and pulled per step and time per epoch (within 10 %), and the peak worker memory at the
widest against the worker's share of the data, plus 3 × the model's bytes in the shards it
holds, plus the process's baseline.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np
from distributed import wait
from sklearn.linear_model import LogisticRegression
from sklearn.linear_model import SGDClassifier as SklearnSGD
from sklearn.metrics import log_loss

import dask_sgd
from dask_sgd.benchmarks.memory import PeakMemory, worker_rss, worker_shares
from dask_sgd.datasets import make_ctr_blocks
from dask_sgd.workers import worker_statuses

#: full size: 1,000,000 training rows in eight blocks (four per worker), 100,000 held out
SIZE = dict(n_samples=1_000_000, n_test=100_000, n_features=2**20, chunk_size=125_000)
#: ``--quick``: a smoke test's size
QUICK = dict(n_samples=6_000, n_test=1_500, n_features=2**16, chunk_size=750)
TARGET_RATIO = 1.002
REFERENCE_C = (0.1, 1.0)
#: held-out blocks are numbered from here: no training set reaches it
TEST_FIRST_BLOCK = 1_000_000
#: the sweep behind scikit-learn SGDClassifier's "tuned" row (and dask-ml Incremental's)
SKLEARN_GRID = [
    dict(alpha=alpha, **rate)
    for alpha in (1e-6, 1e-5, 1e-4)  # 1e-4: its default
    for rate in (dict(learning_rate="optimal"), dict(learning_rate="adaptive", eta0=0.05))
]
#: scikit-learn's SGDClassifier and dask-ml's Incremental: their epoch budgets (on 100,000
#: rows, the default, alpha 1e-4 with its optimal schedule, was 0.458 after 3 epochs and 0.433
#: when its own stopping rule ended it), and the sweep's
SKLEARN_EPOCHS = [1, 2, 3, 5, 10, 20]
#: dask_sgd's epoch budgets (each a first fit of its own)
OUR_EPOCHS = [1, 2, 3, 4, 6]
SKLEARN_SWEEP_EPOCHS = 10
#: the sweep behind dask_sgd's "tuned" rows (one epoch each, with the default strategy,
#: "local"); in process on 100,000 rows, Adagrad at 0.1 was best after one epoch
OURS_GRID = [
    dict(alpha=1e-5),
    dict(alpha=1e-6, optimizer="adagrad", learning_rate="constant", eta0=0.1),
    dict(alpha=1e-5, optimizer="adagrad", learning_rate="constant", eta0=0.1),
    dict(alpha=1e-6, optimizer="adam", learning_rate="constant", eta0=1e-3),
]


def describe(setting: dict) -> str:
    return ", ".join(f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"
                     for key, value in setting.items())  # fmt: skip


def generator_key(size: dict, random_state: int = 0) -> str:
    """What the rows depend on: the reference of one key serves every run of it."""
    return (
        f"make_ctr_blocks(n_samples={size['n_samples']}, n_features={size['n_features']}, "
        f"chunk_size={size['chunk_size']}, random_state={random_state}); held out: "
        f"n_samples={size['n_test']}, first_block={TEST_FIRST_BLOCK}"
    )


def make_data(client, n_samples: int, n_test: int, n_features: int, chunk_size: int) -> dict:
    """Training rows persisted on the cluster (made there) and gathered once for the
    single-process peers; held-out rows, their true probabilities, the Bayes and the
    base-rate log-loss."""
    X, y = make_ctr_blocks(n_samples, n_features, chunk_size=chunk_size)
    dX, dy = client.persist([X, y])
    wait([dX, dy])
    X_test, y_test, p_test = make_ctr_blocks(
        n_test, n_features, chunk_size=chunk_size, first_block=TEST_FIRST_BLOCK,
        return_proba=True,
    )  # fmt: skip
    X_train, y_train = client.compute([dX, dy], sync=True)
    X_test, y_test, p_test = client.compute([X_test, y_test, p_test], sync=True)
    rate = float(y_train.mean())
    return {
        "X": X_train.tocsr(), "y": y_train, "dX": dX, "dy": dy,
        "X_test": X_test.tocsr(), "y_test": y_test,
        "bayes_log_loss": float(log_loss(y_test, p_test)),
        "base_log_loss": float(log_loss(y_test, np.full(len(y_test), rate))),
        "positive_rate": rate,
        "nnz_per_row": X_train.nnz / X_train.shape[0],
    }  # fmt: skip


def reference(data: dict, size: dict, cache: Path) -> dict:
    """L*: the best held-out log-loss of LogisticRegression(lbfgs, tol 1e-4, max_iter 2000)
    over C in :data:`REFERENCE_C`, from ``cache`` where its key (the generator's parameters
    and the held-out rows' fingerprint) is there, else fitted and added to it."""
    # the held-out rows' fingerprint: a generator changed since the file was kept misses it
    fingerprint = f"{int(data['y_test'].sum())}/{float(data['X_test'].sum()):.9g}"
    key = f"{generator_key(size)}; fingerprint {fingerprint}"
    kept = json.loads(cache.read_text()) if cache.exists() else {}
    if key in kept:
        return kept[key] | {"cached": True, "key": key}
    by_c = {}
    for c in REFERENCE_C:
        started = time.perf_counter()
        model = LogisticRegression(C=c, tol=1e-4, max_iter=2000).fit(data["X"], data["y"])
        proba = model.predict_proba(data["X_test"])[:, 1]
        by_c[str(c)] = {
            "log_loss": float(log_loss(data["y_test"], proba)),
            "seconds": time.perf_counter() - started,
            "iterations": int(model.n_iter_[0]),
        }
        print(f"reference LogisticRegression C={c}: {by_c[str(c)]}", flush=True)
    best = min(by_c, key=lambda c: by_c[c]["log_loss"])
    kept[key] = {"log_loss": by_c[best]["log_loss"], "C": float(best), "by_C": by_c}
    cache.write_text(json.dumps(kept, indent=2))
    return kept[key] | {"cached": False, "key": key}


def sweep(name: str, make, grid: list[dict], data: dict, fit) -> tuple[dict, list[dict]]:
    """Fit ``make(setting)`` once per setting of ``grid`` (``fit(model, data)``); the
    setting with the lowest held-out log-loss (None if every one failed), and every
    setting's result. A setting that fails is kept with its error, never chosen."""
    results = []
    for setting in grid:
        try:
            model = make(setting)
            started = time.perf_counter()
            fit(model, data)
            seconds = time.perf_counter() - started
            loss = float(log_loss(data["y_test"], model.predict_proba(data["X_test"])[:, 1]))
            results.append({"setting": setting, "log_loss": loss, "seconds": seconds})
        except Exception as error:  # noqa: BLE001 (a refused setting: kept, with why)
            results.append({"setting": setting, "error": f"{type(error).__name__}: {error}"})
        print(f"sweep {name} [{describe(setting)}]: {results[-1]}", flush=True)
    scored = [result for result in results if "log_loss" in result]
    if not scored:
        return None, results
    return min(scored, key=lambda result: result["log_loss"])["setting"], results


def sweeps(data: dict, quick: bool, client) -> dict:
    """The tuned settings of scikit-learn's SGDClassifier and of dask_sgd."""
    epochs = 2 if quick else SKLEARN_SWEEP_EPOCHS
    sklearn_best, sklearn_results = sweep(
        "sklearn SGDClassifier",
        lambda s: SklearnSGD(loss="log_loss", max_iter=epochs, tol=None, random_state=0, **s),
        SKLEARN_GRID, data, lambda model, d: model.fit(d["X"], d["y"]),
    )  # fmt: skip
    ours_best, ours_results = sweep(
        "dask_sgd local",
        lambda s: dask_sgd.SGDClassifier(
            loss="log_loss", max_iter=1, tol=None, random_state=0, **s
        ),
        OURS_GRID, data, lambda model, d: model.fit(d["dX"], d["dy"]),
    )  # fmt: skip
    return {
        "sklearn": sklearn_best, "sklearn_results": sklearn_results,
        "ours": ours_best, "ours_results": ours_results,
    }  # fmt: skip


def bytes_per_step(model) -> tuple[float | None, float | None]:
    """Bytes pushed and pulled per step in the last epoch, where the engine records them."""
    history = getattr(model, "history_", None) or [{}]
    last = history[-1]
    return last.get("bytes_pushed_per_step"), last.get("bytes_pulled_per_step")


def model_bytes(n_features: int) -> int:
    """A linear model's float64 coefficients and intercept."""
    return (n_features + 1) * 8


def _copy_block(block):
    return block.copy()


def fresh_rows(client, size: dict, n_features: int) -> tuple:
    """The training rows made on the workers, copied under keys of their own, persisted and
    waited for (only the copies stay): a first fit finds them as ``persist`` placed them."""
    token = uuid.uuid4().hex
    X, y = make_ctr_blocks(size["n_samples"], n_features, chunk_size=size["chunk_size"])
    X = X.map_blocks(_copy_block, name=f"w2-X-{token}", meta=X._meta)
    y = y.map_blocks(_copy_block, name=f"w2-y-{token}", meta=y._meta)
    X, y = client.persist([X, y])
    wait([X, y])
    return X, y


def _compare_one(client, size: dict, n_features: int, strategy: str, epochs: int, warm_up):
    """One fit of :func:`compare_features` on a new cluster: its figures, or its error."""
    warm_up(client)
    n_workers = len(worker_statuses(client))
    baseline = worker_rss(client)
    X, y = fresh_rows(client, size, n_features)
    shares = worker_shares(client, X, y)
    model = dask_sgd.SGDClassifier(
        loss="log_loss", strategy=strategy, max_iter=epochs, tol=None, random_state=0
    )
    try:
        with PeakMemory(client) as memory:
            started = time.perf_counter()
            model.fit(X, y)
            seconds = time.perf_counter() - started
    except Exception as error:  # noqa: BLE001 (a refused strategy: kept, with why)
        return {"error": f"{type(error).__name__}: {error}"}
    finally:
        client.cancel([X, y])
    walls = [h["wall_time"] for h in model.history_]
    per_epoch = (walls[-1] - walls[0]) / (len(walls) - 1) if len(walls) > 1 else walls[0]
    pushed, pulled = bytes_per_step(model)
    # the memory goal's bound: share + 3 × the model's bytes in the shards the worker
    # holds (one shard per worker by default) + the process's baseline
    model_share = model_bytes(n_features) / n_workers
    bounds = {w: shares.get(w, 0) + 3 * model_share + baseline[w] for w in baseline}
    worst = max(bounds, key=lambda w: memory.peaks[w] / bounds[w])
    return {
        "seconds": seconds, "seconds_per_epoch": per_epoch,
        "bytes_pushed_per_step": pushed, "bytes_pulled_per_step": pulled,
        "peak_worker_bytes": memory.peaks[worst], "share_bytes": shares.get(worst, 0),
        "baseline_bytes": baseline[worst], "model_bytes_per_worker": model_share,
        "memory_bound_bytes": bounds[worst],
        "memory_within_bound": memory.peaks[worst] <= bounds[worst],
    }  # fmt: skip


def compare_features(
    new_client,
    size: dict,
    exponents: list[int],
    strategies,
    epochs: int,
    warm_up,
    repeats: int = 1,
) -> dict:
    """Each strategy's default fit on the same rows at each width 2 ** exponent: bytes per
    step, time per epoch and peak worker memory, and the goals' ratios between the
    narrowest and the widest. Each fit runs on a new cluster (``new_client()``, a context
    manager), warmed up by ``warm_up(client)``: what an earlier fit kept in a worker's memory
    must not count in the baseline (it did, and grew by about 300 MB per fit at 2^24; and a
    restart of the workers after a fit at 100,000 rows hung). Then the workers' baseline
    memory is read, and the fit gets rows of its own.

    With ``repeats``, every fit runs that many times, the widths taken in turn (a load that
    comes and goes reaches both): the figures are the medians (the peak memory, the
    largest), and each run's time per epoch is kept (``seconds_per_epoch_runs``)."""  # fmt: skip
    runs: dict = {exponent: {strategy: [] for strategy in strategies} for exponent in exponents}
    for _ in range(repeats):
        for strategy in strategies:
            for exponent in exponents:
                with new_client() as client:
                    run = _compare_one(client, size, 2**exponent, strategy, epochs, warm_up)
                runs[exponent][strategy].append(run)
                print(f"2^{exponent} {strategy}: {run}", flush=True)
    widths = {
        exponent: {strategy: _summary(runs[exponent][strategy]) for strategy in strategies}
        for exponent in exponents
    }
    narrow, wide = min(exponents), max(exponents)
    ratios = {}
    for strategy in strategies:
        a, b = widths[narrow].get(strategy, {}), widths[wide].get(strategy, {})
        if "error" in a or "error" in b:
            continue
        ratios[strategy] = {
            key: (b[key] / a[key] if a.get(key) and b.get(key) is not None else None)
            for key in ("bytes_pushed_per_step", "bytes_pulled_per_step", "seconds_per_epoch")
        } | {"memory_within_bound": b["memory_within_bound"]}
    return {
        "exponents": exponents, "epochs": epochs, "repeats": repeats, "widths": widths,
        "ratios": ratios,
    }  # fmt: skip


def _summary(runs: list[dict]) -> dict:
    """One fit's figures from its runs: the medians, the largest peak memory (against its
    run's bound), and every run's time per epoch; the first error if a run failed."""
    errors = [run for run in runs if "error" in run]
    if errors:
        return errors[0]
    summary = {
        key: float(np.median([run[key] for run in runs]))
        if all(run.get(key) is not None for run in runs) else None
        for key in runs[0]
        if key not in ("peak_worker_bytes", "memory_bound_bytes", "memory_within_bound")
    }  # fmt: skip
    worst = max(runs, key=lambda run: run["peak_worker_bytes"] / run["memory_bound_bytes"])
    return summary | {
        "peak_worker_bytes": worst["peak_worker_bytes"],
        "memory_bound_bytes": worst["memory_bound_bytes"],
        "memory_within_bound": all(run["memory_within_bound"] for run in runs),
        "seconds_per_epoch_runs": [run["seconds_per_epoch"] for run in runs],
    }


def comparison_table(comparison: dict) -> str:
    """The width goals: ratios widest / narrowest (goal: within 10 %) and the memory bound."""
    narrow, wide = min(comparison["exponents"]), max(comparison["exponents"])
    # by width, whether the exponents are ints (in the run) or strings (read back from JSON)
    widths = {int(exponent): fits for exponent, fits in comparison["widths"].items()}
    lines = [
        f"Same rows hashed to 2^{narrow} and 2^{wide} columns; ratios 2^{wide} / 2^{narrow} "
        "(goal: within 0.9–1.1); peak worker memory at 2^{wide} against its share of the data "
        "+ 3 × the model's bytes in its shards + its baseline.".replace("{wide}", str(wide)),
        "",
        (
            "| strategy | bytes pushed/step | bytes pulled/step | s/epoch | peak memory, MiB "
            "| bound, MiB | within bound |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]

    def cell(value):
        return "n/a" if value is None else f"{value:.3f}"

    repeats = comparison.get("repeats", 1)
    if repeats > 1:  # each width's own times, from every run
        lines[0] += f" Medians of {repeats} fits each; the peak memory is the largest."
        lines[2] += f" s/epoch at 2^{narrow}, runs | s/epoch at 2^{wide}, runs |"
        lines[3] += " --- | --- |"

    def runs(result):
        return ", ".join(f"{seconds:.2f}" for seconds in result["seconds_per_epoch_runs"])

    for strategy, ratio in comparison["ratios"].items():
        at_wide = widths[wide][strategy]
        lines.append(
            f"| {strategy} | {cell(ratio['bytes_pushed_per_step'])} | "
            f"{cell(ratio['bytes_pulled_per_step'])} | {cell(ratio['seconds_per_epoch'])} | "
            f"{at_wide['peak_worker_bytes'] / 2**20:,.0f} | "
            f"{at_wide['memory_bound_bytes'] / 2**20:,.0f} | "
            f"{'yes' if ratio['memory_within_bound'] else 'NO'} |"
            + (f" {runs(widths[narrow][strategy])} | {runs(at_wide)} |" if repeats > 1 else "")
        )
    for exponent, by_strategy in widths.items():
        for strategy, result in by_strategy.items():
            if "error" in result:
                lines.append(f"| {strategy} (2^{exponent}) | failed: {result['error']} ||||||")
    return "\n".join(lines) + "\n"
