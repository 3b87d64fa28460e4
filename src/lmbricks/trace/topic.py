"""Topic from routing: can a linear classifier tell a document's domain from its expert histogram?

Features of a document are its per-layer expert-selection shares (layers x experts, see
:func:`lmbricks.trace.stats.doc_histograms`). The classifier is standardisation followed by a
linear SVM (scikit-learn ``LinearSVC``), scored by stratified k-fold cross-validation over the
documents. Two baselines go beside it, scored on the same folds: the majority class, and the same
classifier on bag-of-words features (token-id counts), which says how much of the routing signal
is just the vocabulary of the domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lmbricks.errors import ConfigError
from lmbricks.trace.stats import doc_histograms
from lmbricks.trace.types import RoutingTrace


@dataclass
class TopicScore:
    """Cross-validated accuracy of one feature set.

    Attributes:
        features: what the classifier saw (``"layer 3"``, ``"all layers"``, ``"bag of words"``,
            ``"majority class"``).
        accuracy: mean accuracy over the folds.
        stderr: standard deviation of the fold accuracies divided by sqrt(folds).
        folds: number of folds.
    """

    features: str
    accuracy: float
    stderr: float
    folds: int


def _svm(seed: int) -> Any:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    return make_pipeline(StandardScaler(), LinearSVC(C=1.0, max_iter=20_000, random_state=seed))


def cross_validate(x: np.ndarray, y: np.ndarray, model: Any, folds: int, seed: int = 0) -> tuple[float, float]:
    """Mean and standard error of accuracy over stratified k-fold splits (shuffled with ``seed``).

    Args:
        x: (D, F) features.
        y: (D,) integer labels.
        model: a scikit-learn estimator (cloned per fold).
        folds: number of folds (>= 2, at most the smallest class size).
        seed: shuffling seed; the same seed gives the same folds for every feature set.

    Returns:
        ``(mean accuracy, stderr)``.
    """
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    scores = []
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y):
        fitted = clone(model).fit(x[train], y[train])
        scores.append(float((fitted.predict(x[test]) == y[test]).mean()))
    arr = np.asarray(scores)
    return float(arr.mean()), float(arr.std(ddof=1) / np.sqrt(len(arr))) if len(arr) > 1 else 0.0


def bag_of_words(trace: RoutingTrace) -> np.ndarray:
    """(D, V') token-id counts per document over the V' token ids that occur in the trace."""
    vocab, column = torch.unique(trace.token_ids, return_inverse=True)
    counts = torch.zeros(trace.num_docs, len(vocab), dtype=torch.float64)
    counts.index_put_((trace.doc_ids, column), torch.ones(trace.num_tokens, dtype=torch.float64), accumulate=True)
    return counts.numpy()


def topic_scores(trace: RoutingTrace, folds: int = 5, seed: int = 0, per_layer: bool = True) -> list[TopicScore]:
    """Domain classification from routing histograms, per layer and all layers, beside the baselines.

    Args:
        trace: a trace with at least two domains and ``folds`` documents in each.
        folds: stratified k-fold count (reduced to the smallest domain's size, at least 2).
        seed: fold shuffling and SVM seed.
        per_layer: also score each layer alone (one row per traced layer).

    Returns:
        Rows: ``majority class``, ``bag of words``, ``all layers``, then ``layer <n>`` for each layer.

    Raises:
        ConfigError: fewer than two domains, or a domain with fewer than two documents.
    """
    from sklearn.dummy import DummyClassifier

    labels = {d: i for i, d in enumerate(trace.domains)}
    y = np.asarray([labels[d] for d in trace.doc_domains])
    if len(labels) < 2:
        raise ConfigError(f"topic classification needs at least two domains (got {trace.domains})")
    sizes = np.bincount(y)
    if sizes.min() < 2:
        small = trace.domains[int(sizes.argmin())]
        raise ConfigError(f"domain {small!r} has {sizes.min()} document(s); topic classification needs at least 2")
    k = int(min(folds, sizes.min()))
    if k < 2:
        raise ConfigError(f"folds must be >= 2 (got {folds})")
    hist = doc_histograms(trace).numpy()  # (D, L, E)
    rows = [
        TopicScore(
            "majority class",
            *cross_validate(hist[:, 0], y, DummyClassifier(strategy="most_frequent"), k, seed),
            k,
        ),
        TopicScore("bag of words", *cross_validate(bag_of_words(trace), y, _svm(seed), k, seed), k),
        TopicScore("all layers", *cross_validate(hist.reshape(len(y), -1), y, _svm(seed), k, seed), k),
    ]
    if per_layer:
        for i, layer in enumerate(trace.layers):
            rows.append(TopicScore(f"layer {layer}", *cross_validate(hist[:, i], y, _svm(seed), k, seed), k))
    return rows
