"""Task metrics computed locally with numpy/scipy.

`evaluate.load(...)` fetches metric scripts from the Hugging Face Hub, which is not reachable in
offline training jobs, so the GLUE metrics are re-implemented here. Each metric takes
`(predictions, labels)` as 1-D arrays of class ids (classification) or floats (regression) and
returns a Python float.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from scipy.stats import rankdata

from hf_async_mtl.tasks import TaskSpec

__all__ = [
    "METRICS",
    "accuracy",
    "f1",
    "matthews_correlation",
    "pearson",
    "spearmanr",
    "compute_task_metrics",
    "main_metric_value",
    "glue_score",
]


def _check_pair(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate that a metric gets two non-empty 1-D arrays of the same length."""
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if predictions.ndim != 1 or labels.ndim != 1:
        raise ValueError(
            f"Metrics need 1-D predictions and labels, got shapes {predictions.shape} and {labels.shape}."
        )
    if predictions.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Predictions and labels differ in length: {predictions.shape[0]} vs {labels.shape[0]}."
        )
    if predictions.shape[0] == 0:
        raise ValueError("Cannot compute a metric on empty predictions/labels.")
    return predictions, labels


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of predicted class ids equal to the label."""
    predictions, labels = _check_pair(predictions, labels)
    return float(np.mean(predictions == labels))


def f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Binary F1 score of the positive class 1 (GLUE's MRPC/QQP convention).

    When there is no positive prediction and no positive label, F1 is undefined; 0.0 is returned
    like sklearn's `f1_score` default (`zero_division="warn"` counts as 0).
    """
    predictions, labels = _check_pair(predictions, labels)
    pred_pos = predictions == 1
    true_pos = labels == 1
    tp = float(np.sum(pred_pos & true_pos))
    fp = float(np.sum(pred_pos & ~true_pos))
    fn = float(np.sum(~pred_pos & true_pos))
    denominator = 2.0 * tp + fp + fn
    return 0.0 if denominator == 0 else 2.0 * tp / denominator


def matthews_correlation(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation coefficient, multi-class form (equal to the 2x2 formula for binary).

    Uses the confusion-matrix formulation of sklearn's `matthews_corrcoef`. When every prediction
    (or every label) is the same class the coefficient is 0/0; it is reported as 0.0, sklearn's
    convention, so that a collapsed model scores "no correlation" instead of poisoning averages
    with NaN.
    """
    predictions, labels = _check_pair(predictions, labels)
    classes, encoded = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    n = labels.shape[0]
    true_ids, pred_ids = encoded[:n], encoded[n:]
    confusion = np.zeros((classes.size, classes.size), dtype=np.float64)
    np.add.at(confusion, (true_ids, pred_ids), 1.0)
    t_sum = confusion.sum(axis=1)  # occurrences of each class in the labels
    p_sum = confusion.sum(axis=0)  # occurrences of each class in the predictions
    correct = np.trace(confusion)
    samples = confusion.sum()
    cov_ytyp = correct * samples - np.dot(t_sum, p_sum)
    cov_ypyp = samples**2 - np.dot(p_sum, p_sum)
    cov_ytyt = samples**2 - np.dot(t_sum, t_sum)
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two float arrays; 0.0 when either is constant (undefined)."""
    x = x.astype(np.float64) - np.mean(x, dtype=np.float64)
    y = y.astype(np.float64) - np.mean(y, dtype=np.float64)
    denominator = np.sqrt(np.dot(x, x) * np.dot(y, y))
    if denominator == 0:
        # Constant predictions make the correlation 0/0. Following sklearn's MCC convention we
        # report 0.0 ("no correlation") rather than NaN, which would break score averages and
        # best-checkpoint comparisons.
        return 0.0
    # Clip guards against rounding pushing |r| a hair above 1.
    return float(np.clip(np.dot(x, y) / denominator, -1.0, 1.0))


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson correlation between predicted and gold scores (0.0 if either is constant)."""
    predictions, labels = _check_pair(predictions, labels)
    return _correlation(predictions, labels)


def spearmanr(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Spearman rank correlation, ties given their average rank (0.0 if either is constant)."""
    predictions, labels = _check_pair(predictions, labels)
    return _correlation(rankdata(predictions, method="average"), rankdata(labels, method="average"))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews_correlation": matthews_correlation,
    "pearson": pearson,
    "spearmanr": spearmanr,
}


def _as_column(array: np.ndarray, what: str, spec: TaskSpec) -> np.ndarray:
    """Flatten `[N]` or `[N, 1]` to `[N]`; anything else is a shape error."""
    if array.ndim == 2 and array.shape[1] == 1:
        return array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"Task {spec.name!r}: {what} must have shape [N] or [N, 1], got {array.shape}.")
    return array


def compute_task_metrics(spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Compute every metric of `spec.metrics` plus `"score"`, their unweighted mean.

    Args:
        spec: The task; decides classification vs regression and which metrics to report.
        predictions: Raw logits `[N, num_labels]` for classification (the argmax is taken), or
            predicted scores `[N]` / `[N, 1]` for regression.
        labels: Gold class ids `[N]` (or `[N, 1]`) in `[0, num_labels)`, or gold floats for regression.

    Returns:
        `{metric_name: value, ..., "score": mean}` with Python floats.

    Raises:
        ValueError: on empty input, mismatched or wrong shapes, non-finite values, labels outside
            the task's classes (e.g. the `-1` of an unlabelled test split) or an unknown metric.
    """
    unknown = [name for name in spec.metrics if name not in METRICS]
    if unknown:
        raise ValueError(f"Task {spec.name!r}: unknown metric(s) {unknown}; known metrics: {sorted(METRICS)}.")
    predictions = np.asarray(predictions)
    labels = _as_column(np.asarray(labels), "labels", spec)
    if predictions.shape[0:1] == (0,) or labels.size == 0:
        raise ValueError(f"Task {spec.name!r}: cannot compute metrics on empty predictions/labels.")
    if not np.all(np.isfinite(predictions)):
        # A diverged model produces NaN/inf; surfacing it beats reporting a meaningless score.
        raise ValueError(f"Task {spec.name!r}: predictions contain NaN or infinite values.")

    if spec.is_regression:
        predictions = _as_column(predictions, "regression predictions", spec).astype(np.float64)
        labels = labels.astype(np.float64)
        if not np.all(np.isfinite(labels)):
            raise ValueError(f"Task {spec.name!r}: labels contain NaN or infinite values.")
    else:
        if predictions.ndim != 2 or predictions.shape[1] != spec.num_labels:
            raise ValueError(
                f"Task {spec.name!r}: classification predictions must be logits of shape "
                f"[N, {spec.num_labels}], got {predictions.shape}."
            )
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError(f"Task {spec.name!r}: classification labels must be integer class ids.")
        labels = labels.astype(np.int64)
        if labels.min() < 0 or labels.max() >= spec.num_labels:
            raise ValueError(
                f"Task {spec.name!r}: labels must lie in [0, {spec.num_labels}), found values in "
                f"[{labels.min()}, {labels.max()}] (an unlabelled test split uses -1)."
            )
        predictions = np.argmax(predictions, axis=-1)

    if predictions.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Task {spec.name!r}: {predictions.shape[0]} predictions but {labels.shape[0]} labels."
        )
    results = {name: METRICS[name](predictions, labels) for name in spec.metrics}
    results["score"] = float(np.mean(list(results.values())))
    return results


def main_metric_value(spec: TaskSpec, metrics: Mapping[str, float]) -> float:
    """Return the value of `spec.main_metric` (e.g. `"score"`) from a `compute_task_metrics` result.

    Raises:
        ValueError: if the metric is missing, listing the keys that are present.
    """
    if spec.main_metric not in metrics:
        raise ValueError(
            f"Task {spec.name!r}: main metric {spec.main_metric!r} not among the computed metrics "
            f"{sorted(metrics)}."
        )
    return float(metrics[spec.main_metric])


def glue_score(per_task: Mapping[str, Mapping[str, float]]) -> float:
    """GLUE average: the unweighted mean over tasks of each task's `"score"` (its metric mean).

    Args:
        per_task: `{task_name: compute_task_metrics(...) result}`. Every entry counts once, so a
            caller reporting MNLI matched and mismatched separately decides how they are weighted.

    Raises:
        ValueError: if `per_task` is empty or a task has no `"score"`.
    """
    if not per_task:
        raise ValueError("glue_score needs the metrics of at least one task.")
    missing = [name for name, metrics in per_task.items() if "score" not in metrics]
    if missing:
        raise ValueError(f"glue_score: task(s) {missing} have no 'score' entry (use compute_task_metrics).")
    return float(np.mean([float(metrics["score"]) for metrics in per_task.values()]))
