"""The epoch loop every engine shares: stopping rule, "adaptive" learning rate, history."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dask_sgd.engine.steps import TrainState
from dask_sgd.errors import NonFiniteParameters
from dask_sgd.progress import EpochProgress

#: run_epoch(state, lr_factor) -> (state, summed loss, rows seen[, extra history fields])
EpochRunner = Callable[[TrainState, float], tuple]


@dataclass
class ConvergenceMonitor:
    """scikit-learn's stopping rule for SGD.

    An epoch improves when the training objective drops by more than ``tol`` below the best
    so far (or, with a validation score, when the score rises by more than ``tol``). After
    ``n_iter_no_change`` epochs without improvement training stops, except with the
    "adaptive" schedule, which first divides the learning rate by 5 until it is below 1e-6.
    ``tol=None`` never stops early.
    """

    tol: float | None
    n_iter_no_change: int
    adaptive_eta0: float | None = None
    lr_factor: float = 1.0
    best: float = field(default=float("inf"))
    no_improvement: int = 0

    def observe(self, loss: float, score: float | None = None) -> bool:
        """Record one epoch; return True when training has converged."""
        value = loss if score is None else -score  # lower is better for both
        if self.tol is not None and value > self.best - self.tol:
            self.no_improvement += 1
        else:
            self.no_improvement = 0
        self.best = min(self.best, value)
        if self.no_improvement < self.n_iter_no_change:
            return False
        if self.adaptive_eta0 is not None and self.adaptive_eta0 * self.lr_factor > 1e-6:
            self.lr_factor /= 5
            self.no_improvement = 0
            return False
        return True


@dataclass
class EpochResult:
    state: TrainState
    history: list[dict]
    n_iter: int
    converged: bool


def train_epochs(
    run_epoch: EpochRunner,
    state: TrainState,
    *,
    max_iter: int,
    monitor: ConvergenceMonitor,
    validation_score: Callable[[TrainState], float] | None = None,
    first_epoch: int = 1,
    verbose: int = 0,
    on_epoch: Callable[[TrainState, list[dict], bool], None] | None = None,
) -> EpochResult:
    """Run up to ``max_iter`` epochs, recording one history entry per epoch.

    ``on_epoch(state, history, finished)`` runs after every epoch (to write a checkpoint);
    ``finished`` is true after the last one. A step with a non-finite gradient or result
    raises ``ValueError`` naming the epoch, the step and (on Dask) the partition.
    """
    history: list[dict] = []
    with EpochProgress(max_iter, enabled=bool(verbose)) as progress:
        started = time.perf_counter()
        for n_iter in range(1, max_iter + 1):
            epoch = first_epoch + n_iter - 1
            try:
                state, loss_sum, rows, *extra = run_epoch(state, monitor.lr_factor)
            except NonFiniteParameters as error:
                where = "" if error.partition is None else f", partition {error.partition}"
                raise ValueError(
                    f"Floating-point under-/overflow occurred at epoch #{epoch} (step {error.step}"
                    f"{where}: non-finite {error.what}, not applied). Scaling input data with "
                    "StandardScaler or MinMaxScaler might help, or a smaller learning rate (eta0), "
                    "or clip_norm."
                ) from None
            score = validation_score(state) if validation_score is not None else None
            record = {
                "epoch": epoch,
                "loss": loss_sum / max(rows, 1),
                "samples": rows,
                "wall_time": time.perf_counter() - started,
                "lr_factor": monitor.lr_factor,
            }
            if score is not None:
                record["validation_score"] = score
            for fields in extra:
                record.update(fields)
            history.append(record)
            validation = f", validation score {score:.6f}" if score is not None else ""
            progress.epoch(
                record,
                f"-- Epoch {epoch}: avg. loss {record['loss']:.6f}{validation}, "
                f"{rows} samples, {record['wall_time']:.2f} s",
            )
            # an averaged model is judged by its own objective where the engine measures it
            converged = monitor.observe(record.get("averaged_objective", record["loss"]), score)
            if on_epoch is not None:
                on_epoch(state, history, converged or n_iter == max_iter)
            if converged:
                progress.write(
                    f"Convergence after {n_iter} epochs took {record['wall_time']:.2f} seconds"
                )
                return EpochResult(state, history, n_iter, True)
        return EpochResult(state, history, max_iter, False)
