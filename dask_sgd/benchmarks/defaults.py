"""The defaults suite: a plain default ``fit`` on problems nobody tuned the defaults for.

    python -m dask_sgd.benchmarks.defaults [--quick] [--problems NAME ...] [--output DIR]

Nine problems, each generated on the workers of its own ``LocalCluster(n_workers=2,
threads_per_worker=1)`` from fixed seeds, with 200,000 to 1,000,000 training rows and a
held-out set of its own. For each:

- the **reference**: scikit-learn's exact solver for the same loss and penalty (the
  estimators' defaults, L2 with ``alpha=1e-4``), run to convergence on the training rows:
  ``LogisticRegression`` (multinomial for several classes, as ``SGDClassifier``'s log loss
  is),
  ``Ridge``, ``LinearSVC`` with the hinge loss, and for the Huber loss, which scikit-learn
  has no exact solver for, L-BFGS on the same objective written out in NumPy;
- fits **from scratch** of 1, 2 and 3 epochs (``max_iter=k, tol=None``) until the held-out
  metric reaches the reference's: within 0.1 % of its log-loss (``log_loss``), within 0.002
  of its R² (regression) or within 0.005 of its accuracy (hinge);
- a **plain default fit**, with no argument but ``loss``: its epochs (when its stopping rule
  ends it), time, held-out metric, and its epochs' mean training loss against the loss at
  the start (θ = 0).

A problem passes when the target is reached in at most 3 epochs, the default fit stops
within 2 epochs after that, and no epoch's mean loss is above the loss at the start.
Writes ``defaults.json`` and ``defaults.md`` to ``--output``. ``--quick`` runs every problem
at a fiftieth of its size, as the test suite does.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from distributed import Client, LocalCluster, wait
from scipy.optimize import minimize
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, log_loss, r2_score
from sklearn.svm import LinearSVC

import dask_sgd
from dask_sgd.datasets import _generate_blocks, make_classification_blocks
from dask_sgd.losses import get_loss

ALPHA = 1e-4  # the estimators' default penalty: l2, alpha=1e-4
EPSILON = 0.1  # SGDRegressor's default epsilon, which sets the Huber loss's kink
LOG_LOSS_RATIO, R2_GAP, ACCURACY_GAP = 1.001, 0.002, 0.005
MAX_EPOCHS_TO_TARGET, MAX_EPOCHS_AFTER = 3, 2
QUICK_FACTOR = 50
CHUNK_ROWS = 50_000


@dataclass(frozen=True)
class Problem:
    """A problem: ``make(n_rows, first_block)`` gives lazy ``(X, y)`` from fixed seeds."""

    name: str
    description: str
    loss: str
    n_train: int
    make: Callable
    n_test: int = 100_000

    @property
    def regression(self) -> bool:
        return self.loss in ("squared_error", "huber")

    @property
    def metric(self) -> str:
        return {"log_loss": "log-loss", "hinge": "accuracy"}.get(self.loss, "R²")


def _linear_blocks(n_features, draw_target, *, seed, regression=False, scale=None, offset=None):
    """Standard normal rows, a target drawn from them, then each column scaled and offset."""

    def make(n_rows, first_block):
        def draw(rng, n):
            Z = rng.standard_normal((n, n_features))
            X = Z if scale is None else Z * scale + offset
            return X, draw_target(rng, Z).astype(np.float64)

        return _generate_blocks(
            draw, n_rows, n_features, CHUNK_ROWS, seed, first_block, 0.0, np.float64,
            target_dtype=np.float64 if regression else np.int64,
        )

    return make


def _softmax_labels(weights, intercept=0.0):
    """Labels drawn from a multinomial logistic model (Gumbel-max over its logits)."""

    def classification_target(rng, Z):
        logits = Z @ weights + intercept
        if logits.shape[1] == 1:  # binary: logistic
            return (rng.random(len(Z)) < 1 / (1 + np.exp(-logits[:, 0]))).astype(int)
        return np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)

    return classification_target


def _linear_target(weights, intercept, noise):
    def regression_target(rng, Z):
        return Z @ weights + intercept + noise(rng, len(Z))

    return regression_target


def problems() -> list[Problem]:
    """The suite: each problem's data from its own seed."""
    rng = np.random.default_rng(2024)
    unscaled = 10.0 ** rng.uniform(-2, 2, 40)
    return [
        Problem(
            "w1", "W1: make_classification, 100 features, 5 % flipped labels", "log_loss",
            1_000_000,
            lambda n, first: make_classification_blocks(
                n, 100, n_informative=50, chunk_rows=CHUNK_ROWS, first_block=first
            ),
        ),
        Problem(
            "noisy-wide", "binary, 200 features, 20 % flipped labels, classes close together",
            "log_loss", 400_000,
            lambda n, first: make_classification_blocks(
                n, 200, n_informative=40, flip_y=0.2, class_sep=0.5, chunk_rows=CHUNK_ROWS,
                random_state=1, first_block=first,
            ),
        ),
        Problem(
            "unscaled", "5 classes, 40 columns scaled by 1e-2 to 1e2 and offset by up to "
            "10 times their scale", "log_loss", 400_000,
            _linear_blocks(
                40, _softmax_labels(rng.standard_normal((40, 5)) * 0.4), seed=2,
                scale=unscaled, offset=unscaled * rng.uniform(-10, 10, 40),
            ),
        ),
        Problem(
            "ten-classes", "10 classes, 60 features", "log_loss", 400_000,
            _linear_blocks(60, _softmax_labels(rng.standard_normal((60, 10)) * 0.3), seed=3),
        ),
        Problem(
            "imbalanced", "binary, 3 % positives, 50 features", "log_loss", 400_000,
            _linear_blocks(
                50, _softmax_labels(rng.standard_normal((50, 1)) * 0.3, -5.0), seed=4
            ),
        ),
        Problem(
            "offset-target", "regression, 20 features, target offset by 300", "squared_error",
            400_000,
            _linear_blocks(
                20,
                _linear_target(
                    rng.standard_normal(20) * 10, 300.0, lambda r, n: 5 * r.standard_normal(n)
                ),
                seed=5, regression=True,
            ),
        ),
        Problem(
            "heavy-tailed", "regression, 20 features, Student-t noise (3 degrees of freedom)",
            "huber", 400_000,
            _linear_blocks(
                20,
                _linear_target(
                    rng.standard_normal(20) * 3, 1.0, lambda r, n: 2 * r.standard_t(3, n)
                ),
                seed=6, regression=True,
            ),
        ),
        Problem(
            "hinge", "binary, 50 features, hinge loss", "hinge", 400_000,
            lambda n, first: make_classification_blocks(
                n, 50, n_informative=20, chunk_rows=CHUNK_ROWS, random_state=7,
                first_block=first,
            ),
        ),
        Problem(
            "float32", "W1's distribution in float32, 400,000 rows", "log_loss", 400_000,
            lambda n, first: make_classification_blocks(
                n, 100, n_informative=50, chunk_rows=CHUNK_ROWS, random_state=8,
                first_block=first, dtype=np.float32,
            ),
        ),
    ]


# --- the reference -------------------------------------------------------------------------


def reference_model(problem: Problem, X: np.ndarray, y: np.ndarray):
    """scikit-learn's exact solver for the problem's loss with the default penalty."""
    C = 1 / (ALPHA * len(y))  # alpha/2 |w|² + mean loss  ==  (|w|²/2 + C Σ loss) / (C n)
    X = np.asarray(X, dtype=np.float64)  # float32 cannot reach the solvers' tolerance
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if problem.loss == "log_loss":
            # Newton's method: exact whatever the columns' scales, where L-BFGS stalls;
            # several classes are multinomial, as SGDClassifier's log_loss is
            logistic = LogisticRegression(C=C, solver="newton-cholesky", tol=1e-10, max_iter=100)
            return logistic.fit(X, y)
        if problem.loss == "hinge":
            svc = LinearSVC(C=C, loss="hinge", dual=True, tol=1e-6, max_iter=20_000)
            return svc.fit(X, y)
        if problem.loss == "squared_error":
            return Ridge(alpha=ALPHA * len(y)).fit(X, y)
    return HuberLinear().fit(X, y)


class HuberLinear:
    """``mean huber_ε(y - Xw - b) + alpha/2 |w|²`` minimized by L-BFGS (SGDRegressor's
    Huber loss, which scikit-learn's ``HuberRegressor`` parametrizes differently)."""

    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float64)

        def objective(theta):
            residual = y - X @ theta[:-1] - theta[-1]
            small = np.abs(residual) <= EPSILON
            loss = np.where(small, 0.5 * residual**2, EPSILON * (np.abs(residual) - EPSILON / 2))
            dloss = np.where(small, residual, EPSILON * np.sign(residual))
            value = loss.mean() + 0.5 * ALPHA * theta[:-1] @ theta[:-1]
            grad = np.append(-(X.T @ dloss) / len(y) + ALPHA * theta[:-1], -dloss.mean())
            return value, grad

        start = np.append(np.zeros(X.shape[1]), np.median(y))
        found = minimize(objective, start, jac=True, method="L-BFGS-B", options=dict(
            maxiter=5000, ftol=1e-14, gtol=1e-10))
        self.coef_, self.intercept_ = found.x[:-1], found.x[-1]
        return self

    def predict(self, X):
        return X @ self.coef_ + self.intercept_


def score(problem: Problem, model, X, y) -> float:
    """The held-out metric: log-loss (lower is better), accuracy or R² (higher is better)."""
    if problem.loss == "log_loss":
        return log_loss(y, model.predict_proba(X))
    if problem.loss == "hinge":
        return accuracy_score(y, model.predict(X))
    return r2_score(y, model.predict(X))


def reaches(problem: Problem, value: float, reference: float) -> bool:
    if problem.loss == "log_loss":
        return value <= LOG_LOSS_RATIO * reference
    gap = ACCURACY_GAP if problem.loss == "hinge" else R2_GAP
    return value >= reference - gap


def start_loss(problem: Problem, y: np.ndarray) -> float:
    """The mean training loss at θ = 0, summed over the model's outputs as ``history_`` is
    (several classes under the log loss: the multinomial loss, log of the classes)."""
    if problem.regression:
        Y = y.reshape(-1, 1)
    else:
        classes = np.unique(y)
        if len(classes) > 2 and problem.loss == "log_loss":
            return float(np.log(len(classes)))
        Y = np.where(y[:, None] == classes[None, :], 1.0, -1.0)
        Y = Y[:, 1:] if len(classes) == 2 else Y
    loss = get_loss(problem.loss, epsilon=EPSILON)
    return float(loss.loss(Y, np.zeros_like(Y)).sum(axis=1).mean())


# --- the fits --------------------------------------------------------------------------------


def estimator(problem: Problem, **params):
    cls = dask_sgd.SGDRegressor if problem.regression else dask_sgd.SGDClassifier
    return cls(loss=problem.loss, **params)


def run_problem(problem: Problem, factor: int, max_epochs: int | None = None) -> dict:
    """The reference, the 1-, 2- and 3-epoch fits, and the default fit, on one cluster."""
    n_train, n_test = problem.n_train // factor, problem.n_test // factor
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        X, y = client.persist(list(problem.make(n_train, 0)))
        wait([X, y])
        X_test, y_test = (part.compute() for part in problem.make(n_test, 10**6))
        X_np, y_np = X.compute(), y.compute()
        started = time.perf_counter()
        reference = score(problem, reference_model(problem, X_np, y_np), X_test, y_test)
        reference_seconds = time.perf_counter() - started
        at_start = start_loss(problem, y_np)
        del X_np

        def fitted(**params) -> tuple[object, float]:
            model = estimator(problem, **params)
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(X, y)
            return model, time.perf_counter() - started

        by_epochs, epochs_to_target = {}, None
        for epochs in range(1, MAX_EPOCHS_TO_TARGET + 1):
            model, _ = fitted(max_iter=epochs, tol=None)
            by_epochs[epochs] = score(problem, model, X_test, y_test)
            if reaches(problem, by_epochs[epochs], reference):
                epochs_to_target = epochs
                break
        model, seconds = fitted(**({} if max_epochs is None else {"max_iter": max_epochs}))
        value = score(problem, model, X_test, y_test)
        epoch_losses = [entry["loss"] for entry in model.history_]

    stops_in_time = epochs_to_target is not None and (
        model.n_iter_ <= epochs_to_target + MAX_EPOCHS_AFTER
    )
    return {
        "problem": problem.name,
        "description": problem.description,
        "loss": problem.loss,
        "metric": problem.metric,
        "rows": n_train,
        "reference": reference,
        "reference_seconds": reference_seconds,
        "by_epochs": by_epochs,
        "epochs_to_target": epochs_to_target,
        "default_epochs": model.n_iter_,
        "default_stopped": model.n_iter_ < model.max_iter,  # by its rule, not by the cap
        "default_seconds": seconds,
        "default_metric": value,
        "default_reaches": reaches(problem, value, reference),
        "start_loss": at_start,
        "first_epoch_loss": epoch_losses[0],
        "max_epoch_loss": max(epoch_losses),
        "passes": stops_in_time and max(epoch_losses) <= at_start,
    }


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| problem | loss | rows | metric | reference | after 1 / 2 / 3 epochs | epochs to target"
        + " | default fit: epochs, s | its metric | first epoch's loss / at start | passes |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        epochs = " / ".join(f"{v:.4f}" for v in row["by_epochs"].values())
        lines.append(
            f"| {row['problem']} | {row['loss']} | {row['rows']:,} | {row['metric']} | "
            f"{row['reference']:.4f} | {epochs} | {row['epochs_to_target'] or 'not in 3'} | "
            f"{row['default_epochs']}{'' if row['default_stopped'] else ' (cap)'}, "
            f"{row['default_seconds']:.1f} | "
            f"{row['default_metric']:.4f} | "
            f"{row['first_epoch_loss']:.4g} / {row['start_loss']:.4g} | "
            f"{'yes' if row['passes'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    suite = {problem.name: problem for problem in problems()}
    parser.add_argument("--quick", action="store_true", help="every problem at 1/50 the size")
    parser.add_argument("--problems", nargs="+", choices=list(suite), default=list(suite))
    parser.add_argument("--output", default="defaults-results", help="a directory")
    parser.add_argument(
        "--max-epochs", type=int, default=None,
        help="cap the default fit's max_iter (for defaults that would run hundreds of epochs)",
    )
    args = parser.parse_args(argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.problems:
        rows.append(
            run_problem(suite[name], QUICK_FACTOR if args.quick else 1, args.max_epochs)
        )
        print(markdown_table(rows[-1:]).splitlines()[-1], flush=True)
    (output / "defaults.json").write_text(json.dumps(rows, indent=2))
    (output / "defaults.md").write_text(markdown_table(rows))
    print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
