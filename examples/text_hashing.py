"""Classify text held in a Dask bag: dask-ml's HashingVectorizer, then SGDClassifier.

The vectorizer hashes each partition's documents on the workers into a Dask array of
``scipy.sparse`` CSR blocks (no vocabulary to learn, so no pass over the data before
training); ``SGDClassifier`` trains on those blocks where they lie. The sentences are
synthetic: each mixes words of one of two topics with words common to both.

Run with ``python examples/text_hashing.py``; the test suite runs it too.
"""

from __future__ import annotations

import dask.array as da
import dask.bag as db
import numpy as np
from dask_ml.feature_extraction.text import HashingVectorizer
from distributed import Client, LocalCluster
from sklearn.pipeline import Pipeline

from dask_sgd import SGDClassifier

TOPICS = [
    "goal match team score league coach player referee season striker keeper penalty",
    "oven recipe flour butter simmer garlic sauce dough bake pepper onion spoon",
]
COMMON = "the a of and to in is it that was for on with as at by this from"


def sentences(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``n`` sentences and their topics (0 or 1): 6 to 14 words, 40 % from the topic."""
    rng = np.random.default_rng(seed)
    topics, common = [words.split() for words in TOPICS], COMMON.split()
    labels = rng.integers(0, 2, n)
    texts = []
    for label in labels:
        length = rng.integers(6, 15)
        own = rng.random(length) < 0.4
        words = [rng.choice(topics[label]) if o else rng.choice(common) for o in own]
        texts.append(" ".join(words))
    return texts, labels


def labels_array(labels: np.ndarray, texts: db.Bag) -> da.Array:
    """The labels as a Dask array whose blocks line up with the bag's partitions."""
    bounds = np.cumsum([0, *texts.map_partitions(lambda part: [len(part)]).compute()])
    return da.from_array(labels, chunks=(tuple(np.diff(bounds)),))


def main(n_train: int = 4000, n_test: int = 1000) -> dict[str, float]:
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster),  # the client in use trains
    ):
        scores = {}
        texts, labels = sentences(n_train + n_test, seed=0)
        train = db.from_sequence(texts[:n_train], npartitions=4)
        test = db.from_sequence(texts[n_train:], npartitions=2)
        y_train = labels_array(labels[:n_train], train)
        model = Pipeline(
            [
                ("hash", HashingVectorizer(n_features=2**16, alternate_sign=False)),
                ("clf", SGDClassifier(loss="log_loss", max_iter=5, tol=None, random_state=0)),
            ]
        )
        model.fit(train, y_train)
        predicted = np.asarray(model.predict(test).compute())
        scores["held-out accuracy"] = float(np.mean(predicted == labels[n_train:]))
    for name, score in scores.items():
        print(f"{name}: {score:.3f}")
    return scores


if __name__ == "__main__":
    main()
