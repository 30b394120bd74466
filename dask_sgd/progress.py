"""Watching a fit: one progress display per ``fit`` (``verbose``), and a plot of ``history_``."""

from __future__ import annotations

import sys
from typing import Any


class EpochProgress:
    """What ``verbose`` shows of one ``fit`` (a context manager): one display, never two.

    Where a bar can redraw in place (a terminal, a notebook), a tqdm bar over the epochs,
    with the last epoch's loss (and validation score) and samples per second in its
    postfix; the closing lines (convergence) follow the closed bar. Elsewhere (a log, a
    pipe), scikit-learn's line per epoch, and no bar: tqdm's own rule (``disable=None``).
    Disabled, it does nothing.

    ``max_iter`` is the most epochs the fit may run: a fit that converges earlier ends its
    bar there.
    """

    def __init__(self, max_iter: int, *, enabled: bool = True) -> None:
        self.max_iter, self.enabled = max_iter, enabled
        self.bar = None
        self._last_wall = 0.0
        self._after_bar: list[str] = []

    def __enter__(self):
        if self.enabled:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=self.max_iter, unit="epoch", desc="fit", dynamic_ncols=True, disable=None
            )
            if bar.disable:  # no terminal: the lines alone
                bar.close()
            else:
                self.bar = bar
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        for line in self._after_bar:
            self._print(line)
        self._after_bar.clear()

    @property
    def lines(self) -> bool:
        """Whether the display is a line per epoch (no bar)."""
        return self.enabled and self.bar is None

    def write(self, line: str) -> None:
        """Print a closing line: now, or after the bar."""
        if self.bar is not None:
            self._after_bar.append(line)
        elif self.enabled:
            self._print(line)

    def epoch(self, record: dict, line: str) -> None:
        """One epoch is done: move the bar, or print its line."""
        if self.lines:
            self._print(line)
        if self.bar is None:
            return
        seconds = record["wall_time"] - self._last_wall
        self._last_wall = record["wall_time"]
        postfix = {"loss": f"{record['loss']:.5g}"}
        if "validation_score" in record:
            postfix["validation_score"] = f"{record['validation_score']:.5g}"
        postfix["samples_per_s"] = f"{record['samples'] / max(seconds, 1e-9):,.0f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    @staticmethod
    def _print(line: str) -> None:
        print(line, file=sys.stdout, flush=True)


def plot_history(history: list[dict], axes: Any = None):
    """Training loss against wall time and against epochs, from an estimator's ``history_``.

    Draws on ``axes`` (two matplotlib axes) or on a new figure, which it returns.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from dask_sgd import SGDClassifier
    >>> X, y = make_classification(n_samples=300, random_state=0)
    >>> clf = SGDClassifier(max_iter=5, tol=None, random_state=0).fit(X, y)
    >>> figure = plot_history(clf.history_)
    >>> [axis.get_xlabel() for axis in figure.axes]
    ['wall time, s', 'epoch']
    >>> import matplotlib.pyplot as plt; plt.close(figure)
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - the message is the point
        raise ImportError("plot_history needs matplotlib: pip install matplotlib") from None
    if not history:
        raise ValueError("The history is empty: fit the estimator first.")
    if axes is None:
        figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    else:
        figure = axes[0].figure
    losses = [record["loss"] for record in history]
    axes[0].plot([record["wall_time"] for record in history], losses, "-o")
    axes[0].set_xlabel("wall time, s")
    axes[0].set_ylabel("training loss")
    axes[1].plot([record["epoch"] for record in history], losses, "-o")
    axes[1].set_xlabel("epoch")
    for axis in axes:
        axis.grid(True, alpha=0.3)
    return figure
