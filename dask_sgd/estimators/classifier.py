"""SGDClassifier: linear classifiers trained by minibatch SGD, scikit-learn's API."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.base import _fit_context
from sklearn.linear_model._base import LinearClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from dask_sgd.blocks import is_dask_collection
from dask_sgd.data import TargetEncoder, check_labels_known
from dask_sgd.estimators._base import BaseSGD
from dask_sgd.estimators._dask import predict_blocks
from dask_sgd.estimators._training import keep_state_on_error
from dask_sgd.losses import CLASSIFICATION_LOSSES, REGRESSION_LOSSES, log_softmax
from dask_sgd.models import Model


class SGDClassifier(LinearClassifierMixin, BaseSGD):
    """Linear classifier (SVM, logistic regression, …) trained by minibatch SGD.

    A drop-in for :class:`sklearn.linear_model.SGDClassifier`: the same parameters with the
    same meaning, plus ``batch_size`` and ``optimizer``. Each step applies the mean gradient
    of ``batch_size`` rows, ``θ ← θ − η_t · d_t``, where ``d_t`` is the optimizer's direction
    and ``η_t`` the learning-rate schedule at step ``t``. ``batch_size=1`` with
    ``optimizer="sgd"`` is scikit-learn's algorithm, except that the l1 penalty uses its
    subgradient (coefficients get small, not exactly zero) and the rows are shuffled by
    another random generator.

    The defaults depend on the input (:mod:`dask_sgd.defaults`). In process (NumPy, pandas,
    SciPy) they are scikit-learn's algorithm in minibatches of 8 rows. On Dask input,
    "auto" (``learning_rate`` and ``optimizer`` both) trains in standardized coordinates
    (the objective stays scikit-learn's, in the data's units), from the intercepts of the
    best model without features, with Adagrad at a constant rate of 0.35 × √(workers) (0.5
    on two) on 1024 rows per worker and step, averaged over each epoch (from the middle of
    the first), by local SGD ("local"):
    scikit-learn's per-row settings would take minutes per epoch and stall far from the
    optimum on a million rows.

    Several classes are fitted one-vs-rest, all classes at once, except ``loss="log_loss"``,
    which fits a multinomial (softmax) model.

    Parameters
    ----------
    loss : str, default="hinge"
        One of "hinge", "log_loss", "modified_huber", "squared_hinge", "perceptron", or a
        regression loss ("squared_error", "huber", "epsilon_insensitive",
        "squared_epsilon_insensitive").
    penalty : {"l2", "l1", "elasticnet"} or None, default="l2"
        Penalty on the coefficients (never on the intercept).
    alpha : float, default=1e-4
        Strength of the penalty; also sets the "optimal" learning rate.
    l1_ratio : float, default=0.15
        Share of l1 in the elastic net.
    fit_intercept : bool, default=True
    max_iter : int, default=1000
        Maximum number of epochs (passes over the data).
    tol : float or None, default=1e-3
        Training stops after ``n_iter_no_change`` epochs whose training objective (mean loss
        plus penalty) is not lower than the best so far minus ``tol``. None never stops
        early.
    shuffle : bool, default=True
        Visit the rows in a new random order every epoch.
    verbose : int, default=0
        Print one line per epoch.
    epsilon : float, default=0.1
        Width of the "huber" and epsilon-insensitive losses.
    random_state : int, RandomState instance or None, default=None
    learning_rate : {"auto", "optimal", "constant", "invscaling", "adaptive"}, default="auto"
        "optimal" is ``1 / (alpha (t0 + t))``; "constant" is ``eta0``; "invscaling" is
        ``eta0 / (t + 1) ** power_t``; "adaptive" is ``eta0``, divided by 5 whenever
        ``n_iter_no_change`` epochs pass without improvement. ``t`` counts updates. "auto"
        is "optimal" in process (scikit-learn's default) for the classification losses, and
        "invscaling" (SGDRegressor's default) for the regression losses, for which "optimal"
        starts far too fast (scikit-learn's own fit with ``loss="squared_error"`` throws the
        coefficients to about 1e13 first). On Dask input, with ``optimizer="auto"``, it is
        the standardized, averaged Adagrad of :mod:`dask_sgd.defaults` (a constant 0.35,
        scaled by the strategy).
    eta0 : float or "auto", default="auto"
        The rate of "constant" and "adaptive", and the first rate of "invscaling". "auto" is
        0.01 (scikit-learn's default), and 0.1 with ``optimizer="adagrad"``, whose steps
        shrink like ``1 / sqrt(t)`` by themselves; 0.5 for the "auto" schedule on Dask.
    power_t : float, default=0.5
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows (stratified) and stop when their accuracy
        stops improving.
    validation_fraction : float, default=0.1
    n_iter_no_change : int or "auto", default="auto"
        Epochs without improvement before training stops. "auto" is 5 (scikit-learn's),
        and 1 for the "auto" schedule on Dask input, whose model is averaged (on small data,
        as many as make 64 steps a worker: :func:`dask_sgd.defaults.dask_n_iter_no_change`).
    class_weight : dict, "balanced" or None, default=None
        Weights multiplied into every row's sample weight, by its class.
    warm_start : bool, default=False
        Start ``fit`` from the current coefficients.
    average : bool or int, default=False
        Averaged SGD: store the mean of the parameters over the updates from that sample on
        (on Dask input the parameter-server shards keep the mean). The "auto" schedule on
        Dask input averages from the middle of the first epoch, then over each epoch, unless
        this says otherwise.
    batch_size : int or "auto", default="auto"
        Rows per minibatch (on Dask input, per worker and step). The learning rate applies
        to the minibatch's mean gradient, as in PyTorch; ``batch_size=1`` is scikit-learn's
        per-sample SGD (and as slow as a Python loop over rows can be). "auto" is 8 in
        process, less below 1024 dense rows so that an epoch takes at least 128 steps (one
        row per step below 256 rows: scikit-learn's algorithm where it costs little; sparse
        rows, slow to take one at a time, keep 8); on Dask
        input 1024, less on small data so that each worker takes at least 64 steps per
        epoch (never less than 8). ``batch_size_`` holds the value used.
    optimizer : str, GradientTransformation or "auto", default="auto"
        "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", or a transformation from
        :mod:`dask_sgd.optim`. The adaptive ones want a small ``eta0`` (1e-3 for "adam" at
        a constant rate; 0.01 with "invscaling"; see ``eta0``). "auto" is "sgd", except on
        Dask input with ``learning_rate="auto"``, where it is the standardized, averaged
        "adagrad" of :mod:`dask_sgd.defaults`.
    clip_norm : float or None, default=None
        Gradient-norm clipping: a minibatch gradient whose Euclidean norm exceeds this is
        scaled down to it (per worker on Dask input). A gradient or an update that is NaN or
        infinite is never applied, clipped or not: ``fit`` raises ``ValueError`` naming the
        epoch, the step and, on Dask input, the partition.
    strategy : {"local", "sync", "backup", "downpour", "ssp"}, default="local"
        How Dask input is trained (NumPy, pandas and SciPy input train in process):
        "sync" is synchronous data parallelism, one minibatch of ``batch_size`` rows per
        worker and step, the mean of the workers' gradients applied once by the parameter
        server; "backup" is "sync" that applies the first gradients to arrive and drops
        the ``n_backup`` late ones; "local" is local SGD, each worker taking
        ``local_steps`` steps on its own before the parameter server averages the workers'
        parameters; "downpour" is asynchronous SGD, workers pulling and pushing without
        waiting for each other; "ssp" is asynchronous SGD in which no worker runs more than
        ``staleness_bound`` steps ahead of the slowest. See ``docs/strategies.md``, which
        also says how to add a strategy (any registered name is accepted). The fit follows
        the cluster: workers that join train from the next snapshot on, and the units of
        workers that leave hand their blocks on (``docs/distributed.md``).
    n_backup : int, default=1
        "backup": workers whose gradients a step does without; fewer than the workers
        (should workers leave during the fit, at least one gradient counts).
    local_steps : int or "auto", default="auto"
        "local": steps each worker takes between two averagings. "auto" sizes the rounds by
        time: a fit's first segment (64 steps) measures a step and an exchange, and from
        then on a round lasts at least 4 exchanges, 8 to 64 steps in powers of two,
        re-measured at every snapshot (``history_[i]["local_steps"]``). An integer makes
        the fit reproducible; "auto" rounds can differ between two runs of the same fit.
    elastic_rate : float in (0, 1] or None, default=None
        "local": elastic averaging (EASGD, Zhang et al. 2015) with this moving rate β: the
        averaged model moves ``β`` of the way to the workers' mean, and each worker is
        pulled ``β / k`` of the way to it but otherwise keeps its own copy. None: every
        worker restarts from the mean.
    overlap : bool, default=False
        "local": True lets a worker go on training while its round's parameters are on
        their way to the parameter server, and apply the mean it missed one round late
        (``θ_j ← θ_j + (mean − θ_j at the push)``), so that no worker waits for the
        network. False (the default) waits for every round's mean before the next round
        (the textbook local SGD): on the defaults suite overlapping let the workers' copies
        drift a round further apart (a noisy problem's first epoch then ended above its
        starting loss) and saved no time that rounds sized by time had left to save.
        Elastic averaging is the same either way. See ``docs/strategies.md``.
    n_fetch, n_push : int, default=1
        "downpour": steps between two pulls of the parameters, and steps whose mean
        gradient one push carries.
    staleness_aware_lr : bool, default=False
        "downpour" and "ssp": divide the learning rate of a push by its staleness (the
        updates other workers applied since its parameters were pulled).
    staleness_bound : int, default=3
        "ssp": steps a worker may run ahead of the slowest one (0 keeps them in lockstep).
    n_shards : int or None, default=None
        Parameter-server shards for Dask input; None is one per 131,072 parameters, at
        most one per worker (one for most linear models: fewer messages per exchange).
        More shards than parameters is an error.
    scale_learning_rate : bool, default=True
        Dask input: the linear scaling rule, the learning rate times the number of workers
        ``k`` (the effective batch ``k · batch_size`` over the reference ``batch_size``),
        ``√k`` for Adagrad, Adam and RMSProp; for "sync", "backup" and "local" (the
        asynchronous strategies apply each worker's minibatch as a step of its own).
    warmup_epochs : float, default=1.0
        Dask input: the scaled learning rate is reached gradually, from the unscaled one,
        over this many epochs (0 turns warmup off).
    snapshot_steps : int, default=1000
        Dask input: the client keeps a consistent snapshot of the parameter server every
        this many steps. If a worker holding a shard dies, the shards are recreated from
        the last snapshot on the surviving workers and training goes on: at most this
        many steps are lost (``history_[i]["recoveries"]``). Smaller costs a little time per
        snapshot (one round of task submissions).
    snapshot_seconds : float, default=30.0
        Dask input: snapshots are also taken about this often: a segment between two
        snapshots is shortened to about this long when steps are slow. A worker retiring
        gracefully (``retire_workers``, ``Adaptive``, ``--lifetime``) waits for the next
        snapshot, where its shards move to the other workers.
    checkpoint_path : str, path or None, default=None
        A directory (or fsspec URL) where a checkpoint is written after every epoch of
        ``fit`` and after every ``partial_fit``: numeric arrays and a JSON manifest, no
        pickle, written atomically. If it holds the checkpoint of an unfinished ``fit``
        of the same model, ``fit`` resumes from there (exactly, in process; on Dask, the
        workers' positions in their blocks restart). :func:`dask_sgd.load` reads it.

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    classes_ : ndarray of shape (n_classes,)
    n_iter_ : int
        Epochs run by the last ``fit`` (1 for ``partial_fit``).
    t_ : int
        Steps taken, plus one (scikit-learn's convention): optimizer updates in process and
        for "sync", "backup" and "local"; minibatches for "downpour"; steps per worker for
        "ssp" (each worker's clock).
    batch_size_ : int
        The ``batch_size`` of the last call (rows per worker and step on Dask input).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` has string column names.
    history_ : list of dict
        One record per epoch: "epoch", "loss" (the training objective, mean loss plus
        penalty, measured on each minibatch before its update: scikit-learn's convergence
        measure), "samples", "wall_time" (seconds since the start of
        the call), "lr_factor" and, with early stopping, "validation_score". On Dask input
        also "samples_per_worker" (by worker address, sorted), "workers" (training at
        the end of the epoch), "membership" when workers joined or left (for each change:
        the step, the workers after it, the addresses that joined and left), "shard_moves"
        when shards left a retiring worker; "dropped" ("backup": late gradients dropped);
        "staleness_mean", "staleness_max" ("downpour", "ssp": updates applied between a
        push's pull and the push) and "clock_lead_max" ("ssp": the largest number of steps a
        worker was ahead of the slowest when it pushed); "recoveries" when a parameter-server
        shard was lost in that epoch: for each, the step of the snapshot it restarted
        from, the updates lost and the reason.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from dask_sgd import SGDClassifier
    >>> X, y = make_classification(n_samples=200, random_state=0)
    >>> clf = SGDClassifier(loss="log_loss", random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 2)
    >>> clf.score(X, y) > 0.8
    True
    """

    _parameter_constraints: ClassVar[dict] = {
        **BaseSGD._parameter_constraints,
        "loss": [StrOptions(set(CLASSIFICATION_LOSSES))],
        "class_weight": [StrOptions({"balanced"}), dict, None],
    }

    def __init__(
        self,
        loss="hinge",
        *,
        penalty="l2",
        alpha=0.0001,
        l1_ratio=0.15,
        fit_intercept=True,
        max_iter=1000,
        tol=1e-3,
        shuffle=True,
        verbose=0,
        epsilon=0.1,
        random_state=None,
        learning_rate="auto",
        eta0="auto",
        power_t=0.5,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change="auto",
        class_weight=None,
        warm_start=False,
        average=False,
        batch_size="auto",
        optimizer="auto",
        clip_norm=None,
        strategy="local",
        n_backup=1,
        local_steps="auto",
        elastic_rate=None,
        overlap=False,
        n_fetch=1,
        n_push=1,
        staleness_aware_lr=False,
        staleness_bound=3,
        n_shards=None,
        scale_learning_rate=True,
        warmup_epochs=1.0,
        snapshot_steps=1000,
        snapshot_seconds=30.0,
        checkpoint_path=None,
    ):
        self.loss = loss
        self.penalty = penalty
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.shuffle = shuffle
        self.verbose = verbose
        self.epsilon = epsilon
        self.random_state = random_state
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.class_weight = class_weight
        self.warm_start = warm_start
        self.average = average
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.clip_norm = clip_norm
        self.strategy = strategy
        self.n_backup = n_backup
        self.local_steps = local_steps
        self.elastic_rate = elastic_rate
        self.overlap = overlap
        self.n_fetch = n_fetch
        self.n_push = n_push
        self.staleness_aware_lr = staleness_aware_lr
        self.staleness_bound = staleness_bound
        self.n_shards = n_shards
        self.scale_learning_rate = scale_learning_rate
        self.warmup_epochs = warmup_epochs
        self.snapshot_steps = snapshot_steps
        self.snapshot_seconds = snapshot_seconds
        self.checkpoint_path = checkpoint_path

    @_fit_context(prefer_skip_nested_validation=True)
    @keep_state_on_error
    def fit(self, X, y, coef_init=None, intercept_init=None, sample_weight=None):
        """Fit the model: up to ``max_iter`` epochs from zero (or warm) coefficients.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        coef_init : ndarray of shape (n_classes, n_features), default=None
        intercept_init : ndarray of shape (n_classes,), default=None
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : SGDClassifier
        """
        return self._fit(
            X,
            y,
            sample_weight,
            is_partial=False,
            coef_init=coef_init,
            intercept_init=intercept_init,
        )

    @_fit_context(prefer_skip_nested_validation=True)
    @keep_state_on_error
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over ``X``, continuing from the current state (optimizer state included).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like of shape (n_classes,), default=None
            Every class; required on the first call, ignored afterwards.
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : SGDClassifier
        """
        return self._fit(X, y, sample_weight, is_partial=True, classes=classes)

    def _check_first_partial_fit(self, classes) -> None:
        if self.class_weight == "balanced":
            raise ValueError(
                "class_weight 'balanced' is not supported for partial_fit. In order to "
                "use 'balanced' weights, use compute_class_weight('balanced', "
                "classes=classes, y=y). In place of y you can use a large enough sample "
                "of the full training set target to properly estimate the class "
                "frequency distributions. Pass the resulting weights as the "
                "class_weight parameter."
            )
        if classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")

    def _set_classes(self, labels, *, first_call: bool, classes) -> None:
        """Learn ``classes_`` (from ``classes`` or the labels) or check the labels against it."""
        check_classification_targets(labels)
        if first_call:
            self.classes_ = np.unique(labels if classes is None else np.asarray(classes))
            self._check_two_classes()
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"`classes={np.unique(classes)!r}` is not the same as on the first call to "
                f"partial_fit, was: {self.classes_!r}"
            )
        check_labels_known(np.unique(labels), self.classes_)

    def _target_encoder(self, labels, counts, *, first_call: bool, classes) -> TargetEncoder:
        """Learn or check ``classes_`` from the labels and their counts; weigh the classes."""
        self._set_classes(labels, first_call=first_call, classes=classes)
        class_weight = None
        if self.class_weight == "balanced":  # n_samples / (n_classes * count)
            per_class = np.zeros(len(self.classes_))
            per_class[np.searchsorted(self.classes_, labels)] = counts
            class_weight = per_class.sum() / (len(self.classes_) * per_class)
        elif self.class_weight is not None:  # a dict: the labels play no part
            class_weight = compute_class_weight(
                self.class_weight, classes=self.classes_, y=self.classes_
            )
        return TargetEncoder(self.classes_, self._is_multinomial(), class_weight)

    # --- prediction on Dask input -------------------------------------------------------------

    def decision_function(self, X):
        """Signed distance to the decision boundary; lazy for Dask input.

        Parameters
        ----------
        X : {array-like, sparse matrix, Dask array or data frame} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_classes)
        """
        if is_dask_collection(X):
            check_is_fitted(self)
            columns = None if len(self.classes_) == 2 else len(self.classes_)
            return predict_blocks(
                self, "decision_function", X, n_columns=columns, dtype=self.coef_.dtype
            )
        check_is_fitted(self)
        scores = self._raw_predictions(X)
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict(self, X):
        """Predicted class of each row; lazy for Dask input.

        Parameters
        ----------
        X : {array-like, sparse matrix, Dask array or data frame} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        if is_dask_collection(X):
            check_is_fitted(self)
            return predict_blocks(self, "predict", X, n_columns=None, dtype=self.classes_.dtype)
        return super().predict(X)

    # --- probabilities ------------------------------------------------------------------------

    def _check_proba(self):
        if self.loss not in ("log_loss", "modified_huber"):
            raise AttributeError(f"probability estimates are not available for loss={self.loss!r}")
        return True

    @available_if(_check_proba)
    def predict_proba(self, X):
        """Class probabilities: logistic (binary), softmax (multinomial), or modified Huber.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        if is_dask_collection(X):
            return predict_blocks(
                self, "predict_proba", X, n_columns=len(self.classes_), dtype=self.coef_.dtype
            )
        scores = self.decision_function(X)
        if self.loss == "log_loss":
            if scores.ndim == 1:
                positive = 0.5 * (1 + np.tanh(0.5 * scores))  # the logistic function, stably
                return np.column_stack([1 - positive, positive])
            return np.exp(log_softmax(scores))
        return modified_huber_proba(scores)

    @available_if(_check_proba)
    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        if is_dask_collection(X):
            check_is_fitted(self)
            return predict_blocks(
                self, "predict_log_proba", X, n_columns=len(self.classes_), dtype=self.coef_.dtype
            )
        # the logarithm of predict_proba itself, as scikit-learn's: -inf where a probability
        # rounds to 0, so that exp() of it is predict_proba
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    # --- what BaseSGD asks of a subclass ------------------------------------------------------

    def _auto_learning_rate(self) -> str:
        """scikit-learn's "optimal" for the classification losses, SGDRegressor's
        "invscaling" for the regression losses.

        "optimal" starts at ``1 / sqrt(sqrt(alpha))`` (10 at the default alpha), a rate
        sized for the classification losses. A squared error converges per row only below
        about ``2 / |x|²`` (0.7 on two scaled features): at 10, scikit-learn's own fit throws
        the coefficients to about 1e13 and recovers as the rate decays, or not, depending on
        the shuffle, and the epsilon-insensitive losses never settle. With "invscaling",
        scikit-learn's own SGDClassifier trains all four regression losses well.
        """
        return "invscaling" if self.loss in REGRESSION_LOSSES else "optimal"

    def _n_outputs(self) -> int:
        return 1 if len(self.classes_) == 2 else len(self.classes_)

    def _is_multinomial(self) -> bool:
        return self.loss == "log_loss" and len(self.classes_) > 2

    def _check_two_classes(self) -> None:
        if len(self.classes_) < 2:
            raise ValueError(
                f"The number of classes has to be greater than one; got {len(self.classes_)} class"
            )

    def _score_params(self, model: Model, theta, X, y, sample_weight) -> float:
        raw = model.raw(theta, X)
        indices = (raw[:, 0] > 0).astype(int) if raw.shape[1] == 1 else raw.argmax(axis=1)
        return accuracy_score(y, self.classes_[indices], sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


def modified_huber_proba(scores: np.ndarray) -> np.ndarray:
    """scikit-learn's probability estimates for the modified Huber loss.

    Binary: ``(clip(score, -1, 1) + 1) / 2``. Several classes: the same per class, normalised
    to sum to one (uniform where every class scores -1 or less).
    """
    prob = (np.clip(scores, -1, 1) + 1) / 2
    if prob.ndim == 1:
        return np.column_stack([1 - prob, prob])
    totals = prob.sum(axis=1, keepdims=True)
    uniform = np.full_like(prob, 1 / prob.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, prob / totals, uniform)
