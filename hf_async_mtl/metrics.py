"""Task metrics: built-in ones computed locally with numpy/scipy, plus optional `evaluate` modules.

`evaluate.load(...)` fetches metric scripts from the Hugging Face Hub, which is not reachable in
offline training jobs, so the GLUE metrics are re-implemented here (`METRICS`). Each takes
`(predictions, labels)` as 1-D arrays of class ids (classification) or floats (regression) and
returns a Python float.

A task may add `evaluate` modules (`TaskSpec.evaluate_metrics`: Hub ids, or paths of local metric
scripts, which load offline). `compute_task_metrics` loads each one with `evaluate.load` the first
time it is needed, caches it for the process (by id; a path by its absolute path) and calls
`compute(predictions=..., references=...)` with the same 1-D predictions and labels as the
built-in metrics. The numeric values it returns (ints, floats, numpy scalars; lists, strings and
the like are dropped) join the metrics dict under their own keys; a key already taken (a built-in
metric of the task, `"score"`, or an earlier module's key) is prefixed with the module's name,
e.g. `max_error_accuracy` for key `accuracy` of `metrics/max_error.py`. An id that cannot be
loaded, or a module whose computation fails, raises a one-line `ValueError` naming the task and
the metric id.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy.stats import rankdata

from hf_async_mtl.tasks import TaskSpec, as_column

__all__ = [
    "METRICS",
    "accuracy",
    "f1",
    "matthews_correlation",
    "pearson",
    "spearmanr",
    "compute_task_metrics",
    "evaluate_module_name",
    "load_evaluate_metric",
    "main_metric_value",
    "glue_score",
]


def _check_pair(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate that a metric gets two non-empty 1-D arrays of the same length."""
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if predictions.ndim != 1 or labels.ndim != 1:
        raise ValueError(f"Metrics need 1-D predictions and labels, got shapes {predictions.shape} and {labels.shape}.")
    if predictions.shape[0] != labels.shape[0]:
        raise ValueError(f"Predictions and labels differ in length: {predictions.shape[0]} vs {labels.shape[0]}.")
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


# Loaded `evaluate` modules, by metric id (a local path: by its absolute path).
_EVALUATE_MODULES: dict[str, Any] = {}


def _is_local_path(metric_id: str) -> bool:
    """A metric id names a local script (or directory) rather than a Hub module."""
    return (
        metric_id.endswith(".py")
        or metric_id.startswith((".", "~", os.sep))
        or (os.altsep is not None and metric_id.startswith(os.altsep))
        or os.path.exists(metric_id)
    )


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def evaluate_module_name(metric_id: str) -> str:
    """The name that prefixes a module's colliding keys: the id's last part, without `.py`."""
    name = os.path.basename(metric_id.rstrip("/\\"))
    if name.endswith(".py"):
        name = name[: -len(".py")]
    return re.sub(r"[^0-9A-Za-z_]", "_", name) or "evaluate"


def load_evaluate_metric(task: str, metric_id: str) -> Any:
    """The `evaluate` module `metric_id` of task `task`, loaded on first use and then cached.

    Raises:
        ValueError: one line naming the task and the metric id, when the local script does not
            exist or `evaluate.load` fails (an unknown Hub id, no network, a broken script).
    """
    key = os.path.abspath(os.path.expanduser(metric_id)) if _is_local_path(metric_id) else metric_id
    module = _EVALUATE_MODULES.get(key)
    if module is not None:
        return module
    if _is_local_path(metric_id) and not os.path.exists(key):
        raise ValueError(f"Task {task!r}: evaluate metric {metric_id!r} cannot be loaded: no metric script at {key}.")
    try:
        import evaluate

        module = evaluate.load(key, keep_in_memory=True)
    except Exception as error:  # noqa: BLE001 - any failure becomes one clear line
        raise ValueError(f"Task {task!r}: evaluate metric {metric_id!r} cannot be loaded ({_one_line(error)}).") from None
    _EVALUATE_MODULES[key] = module
    return module


def _as_number(value: Any) -> float | None:
    """`value` as a float when it is a real number (not a bool); otherwise `None`."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.integer, np.floating)):
        return None
    return float(value)


def _evaluate_metrics(spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray, taken: set[str]) -> dict[str, float]:
    """Numeric results of `spec.evaluate_metrics`; keys in `taken` get the module-name prefix."""
    modules = [(metric_id, load_evaluate_metric(spec.name, metric_id)) for metric_id in spec.evaluate_metrics]
    results: dict[str, float] = {}
    for metric_id, module in modules:
        try:
            output = module.compute(predictions=predictions.tolist(), references=labels.tolist())
        except Exception as error:  # noqa: BLE001
            raise ValueError(f"Task {spec.name!r}: evaluate metric {metric_id!r} failed ({_one_line(error)}).") from None
        converted = {str(name): _as_number(value) for name, value in (output or {}).items()}
        numeric = {name: value for name, value in converted.items() if value is not None}
        if not numeric:
            raise ValueError(f"Task {spec.name!r}: evaluate metric {metric_id!r} returned no number (got {sorted(output or {})}).")
        for name, value in numeric.items():
            key = name if name not in taken else f"{evaluate_module_name(metric_id)}_{name}"
            if key in taken:
                raise ValueError(f"Task {spec.name!r}: evaluate metric {metric_id!r} returns {name!r}, and {key!r} is taken too.")
            taken.add(key)
            results[key] = value
    return results


def compute_task_metrics(spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Compute every metric of `spec.metrics` and `spec.evaluate_metrics`, plus `"score"`.

    `"score"` is the unweighted mean of the built-in `spec.metrics` (the GLUE convention); only a
    task without built-in metrics averages the numbers its `evaluate` modules return instead.
    `evaluate` modules are loaded on the first call (see the module docstring for their keys).

    Args:
        spec: The task; decides classification vs regression and which metrics to report.
        predictions: Raw logits `[N, num_labels]` for classification (the argmax is taken), or
            predicted scores `[N]` / `[N, 1]` for regression.
        labels: Gold class ids `[N]` (or `[N, 1]`) in `[0, num_labels)`, or gold floats for regression.

    Returns:
        `{metric_name: value, ..., "score": mean}` with Python floats.

    Raises:
        ValueError: on empty input, mismatched or wrong shapes, non-finite values, labels outside
            the task's classes (e.g. the `-1` of an unlabelled test split), an unknown metric, an
            `evaluate` module that cannot be loaded or fails, or a `main_metric` not among the keys.
    """
    unknown = [name for name in spec.metrics if name not in METRICS]
    if unknown:
        raise ValueError(f"Task {spec.name!r}: unknown metric(s) {unknown}; known metrics: {sorted(METRICS)}.")
    predictions = np.asarray(predictions)
    labels = as_column(np.asarray(labels), f"Task {spec.name!r}: labels")
    if predictions.shape[0:1] == (0,) or labels.size == 0:
        raise ValueError(f"Task {spec.name!r}: cannot compute metrics on empty predictions/labels.")
    if not np.all(np.isfinite(predictions)):
        # A diverged model produces NaN/inf; surfacing it beats reporting a meaningless score.
        raise ValueError(f"Task {spec.name!r}: predictions contain NaN or infinite values.")

    if spec.is_regression:
        predictions = as_column(predictions, f"Task {spec.name!r}: regression predictions").astype(np.float64)
        labels = labels.astype(np.float64)
        if not np.all(np.isfinite(labels)):
            raise ValueError(f"Task {spec.name!r}: labels contain NaN or infinite values.")
    else:
        if predictions.ndim != 2 or predictions.shape[1] != spec.num_labels:
            raise ValueError(
                f"Task {spec.name!r}: classification predictions must be logits of shape [N, {spec.num_labels}], got {predictions.shape}."
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
        raise ValueError(f"Task {spec.name!r}: {predictions.shape[0]} predictions but {labels.shape[0]} labels.")
    results = {name: METRICS[name](predictions, labels) for name in spec.metrics}
    extra = _evaluate_metrics(spec, predictions, labels, taken={*results, "score"}) if spec.evaluate_metrics else {}
    # The score averages finite values: a module's NaN (e.g. a correlation of constant predictions) stays reported
    # under its own key but would make the score, the GLUE average and every selection by them NaN. None finite: 0.0,
    # the built-in correlations' convention for an undefined value.
    finite = [value for value in (results.values() or extra.values()) if math.isfinite(value)]
    score = float(np.mean(finite)) if finite else 0.0
    results.update(extra)
    results["score"] = score
    if spec.main_metric not in results:
        raise ValueError(f"Task {spec.name!r}: main metric {spec.main_metric!r} not among the computed metrics {sorted(results)}.")
    return results


def main_metric_value(spec: TaskSpec, metrics: Mapping[str, float]) -> float:
    """Return the value of `spec.main_metric` (e.g. `"score"`) from a `compute_task_metrics` result.

    Raises:
        ValueError: if the metric is missing, listing the keys that are present.
    """
    if spec.main_metric not in metrics:
        raise ValueError(f"Task {spec.name!r}: main metric {spec.main_metric!r} not among the computed metrics {sorted(metrics)}.")
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
