"""Fit SGDClassifier and SGDRegressor on scikit-learn's bundled data sets.

Run with ``python examples/quickstart.py``; the test suite runs it too.
"""

from __future__ import annotations

from sklearn.datasets import load_diabetes, load_digits
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dask_sgd import SGDClassifier, SGDRegressor


def main() -> dict[str, float]:
    scores = {}
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    classifier = make_pipeline(
        StandardScaler(),
        SGDClassifier(loss="log_loss", optimizer="adam", learning_rate="constant", eta0=1e-3),
    )
    scores["digits accuracy"] = classifier.fit(X_train, y_train).score(X_test, y_test)

    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    regressor = make_pipeline(StandardScaler(), SGDRegressor(random_state=0))
    scores["diabetes R²"] = regressor.fit(X_train, y_train).score(X_test, y_test)

    for name, score in scores.items():
        print(f"{name}: {score:.3f}")
    return scores


if __name__ == "__main__":
    main()
