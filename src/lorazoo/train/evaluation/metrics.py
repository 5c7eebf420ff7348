"""GLUE-style metrics computed offline (sklearn/scipy), named as the `evaluate` library names them.

Not through `evaluate`: ``evaluate.load("glue", ...)`` fetches the metric's script from the Hugging Face
Hub, which offline machines cannot reach, and a local metric module would only wrap the same sklearn /
scipy calls that evaluate's own glue metric makes. So `evaluate` is not a dependency.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np


def _accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    return float((preds == labels).mean())


def _f1(preds: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, preds))


def _matthews(preds: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(labels, preds))


def _pearson(preds: np.ndarray, labels: np.ndarray) -> float:
    from scipy.stats import pearsonr

    return float(pearsonr(preds, labels)[0])


def _spearman(preds: np.ndarray, labels: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(preds, labels)[0])


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _accuracy,
    "f1": _f1,
    "matthews_correlation": _matthews,
    "pearson": _pearson,
    "spearmanr": _spearman,
}


def compute(keys: Sequence[str], preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {key: METRICS[key](preds, labels) for key in keys}


def majority_rate(labels: Sequence) -> float:
    """Accuracy of always predicting the most frequent label: the floor a classifier must beat."""
    if not len(labels):
        return float("nan")
    return Counter(labels).most_common(1)[0][1] / len(labels)
