"""Input checks and conversions shared by the estimators: targets, weights, validation split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

Array = Any


def encode_targets(y: np.ndarray, classes: np.ndarray, *, one_hot: bool, dtype: Any) -> np.ndarray:
    """Targets as the losses expect them, one column per model output.

    Two classes give one column in {-1, +1} (+1 for ``classes[1]``); more classes give one
    column per class, in {-1, +1} (one-vs-rest) or in {0, 1} (``one_hot``, multinomial).

    Examples
    --------
    >>> encode_targets(np.array(["a", "b", "a"]), np.array(["a", "b"]), one_hot=False, dtype=float)
    array([[-1.],
           [ 1.],
           [-1.]])
    """
    if len(classes) == 2:
        return np.where(y == classes[1], 1, -1).astype(dtype).reshape(-1, 1)
    is_class = y[:, None] == classes[None, :]
    low = 0 if one_hot else -1
    return np.where(is_class, 1, low).astype(dtype)


@dataclass(frozen=True)
class TargetEncoder:
    """Encodes targets, and folds class weights into their sample weights.

    In process it encodes all of ``y`` once; on Dask, each block as a training unit
    starts, so raw labels can stay in the persisted blocks.
    ``classes=None`` is regression: targets become one float column.
    """

    classes: np.ndarray | None = None
    one_hot: bool = False
    class_weight: np.ndarray | None = None  # one weight per class, in the order of classes
    #: a regression target becomes ``(y − target_center) / target_scale`` (standardized)
    target_center: float = 0.0
    target_scale: float = 1.0

    def __call__(self, y, sample_weight, dtype) -> tuple[np.ndarray, np.ndarray | None]:
        if self.classes is None:
            Y = np.asarray(y, dtype=np.float64).reshape(-1, 1)
            if self.target_center or self.target_scale != 1:
                Y = (Y - self.target_center) / self.target_scale
            return Y.astype(dtype, copy=False), sample_weight
        Y = encode_targets(y, self.classes, one_hot=self.one_hot, dtype=dtype)
        if self.class_weight is None:
            return Y, sample_weight
        weights = self.class_weight[np.searchsorted(self.classes, y)].astype(dtype)
        return Y, weights if sample_weight is None else weights * sample_weight


def check_labels_known(y: np.ndarray, classes: np.ndarray) -> None:
    """Raise when ``y`` has a label outside ``classes`` (``partial_fit`` after the first call)."""
    unseen = np.setdiff1d(y, classes)
    if unseen.size:
        raise ValueError(
            f"y contains labels {unseen.tolist()} that are not in classes {classes.tolist()}; "
            "pass every class to the first call of partial_fit."
        )


def validation_split(
    y: np.ndarray,
    sample_weight: np.ndarray | None,
    *,
    validation_fraction: float,
    stratify: bool,
    random_state: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation row indices for early stopping, as scikit-learn's SGD splits."""
    splitter = StratifiedShuffleSplit if stratify else ShuffleSplit
    cv = splitter(test_size=validation_fraction, random_state=random_state)
    try:
        train, validation = next(cv.split(np.zeros((y.shape[0], 1)), y))
    except ValueError as error:  # too few rows, or a class too small to stratify
        raise ValueError(
            f"Splitting {y.shape[0]} samples into a train set and a validation set with "
            f"validation_fraction={validation_fraction} failed ({error}). Please either change "
            "validation_fraction, increase number of samples, or disable early_stopping."
        ) from error
    if train.size == 0 or validation.size == 0:
        raise ValueError(
            f"Splitting {y.shape[0]} samples into a train set and a validation set with "
            f"validation_fraction={validation_fraction} led to an empty set "
            f"({train.size} and {validation.size} samples). Please either change "
            "validation_fraction, increase number of samples, or disable early_stopping."
        )
    if sample_weight is not None and not np.any(sample_weight[validation]):
        raise ValueError(
            "The sample weights for validation set are all zero, consider using a "
            "different random state."
        )
    return train, validation
