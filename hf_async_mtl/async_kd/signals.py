"""What the convergence rule reads on the selection split (`kd_signal`; no torch).

`score` (the default) is the task's own metric as the evaluation reports it (accuracy, F1, MCC, correlations), the
paper's choice. The others are means over the selection examples of a per-example quantity of the predicted
distribution, so they move with every example's confidence, not only with the examples that cross the decision
boundary, and their noise is measured by resampling those examples (`kd_noise="bootstrap"`, which they require):

- `loss`: the mean log-probability of the true class (minus the cross-entropy, probabilities clipped at 1e-7);
- `prob`: the mean probability of the true class;
- `brier`: minus the Brier score, mean over examples of sum over classes (p_k - [k = y])^2.

For a regression task all three are minus the mean squared error. Every signal but `score` is greater-is-better
whatever the task's metric. `benchmarks/example_signals.py` replays the same signals on stored predictions
(binary tasks, from the true class's probability), which is how one was chosen (benchmarks/async_kd_regime.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

SIGNALS = ("score", "loss", "prob", "brier")
PROBABILITY_CLIP = 1e-7


def _probabilities(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def per_example(signal: str, spec: Any, predictions: Any, labels: Any) -> np.ndarray:
    """[N]: each selection example's part of `signal` (their mean is the signal; greater is better).

    `predictions` are what the evaluation computes metrics on: logits [N, num_labels] for classification, outputs
    [N] / [N, 1] for regression.
    """
    _check(signal)
    labels = np.asarray(labels).reshape(-1)
    if spec.is_regression:
        outputs = np.asarray(predictions, dtype=np.float64).reshape(len(labels), -1)[:, 0]
        return -((outputs - labels.astype(np.float64)) ** 2)
    probabilities = _probabilities(predictions)
    if probabilities.shape != (len(labels), spec.num_labels):
        raise ValueError(
            f"Task {spec.name!r}: {signal} needs logits [N, {spec.num_labels}] for {len(labels)} labels, got {probabilities.shape}."
        )
    return _from_probabilities(signal, probabilities, labels.astype(np.int64))


def greater_is_better(signal: str, spec: Any) -> bool:
    """The direction of what the rule reads: the task's metric's for `score`, greater for every other signal."""
    return bool(spec.greater_is_better) if signal == "score" else True


def _check(signal: str) -> None:
    if signal not in SIGNALS or signal == "score":
        raise ValueError(f"Only the mean signals {SIGNALS[1:]} have per-example parts, not {signal!r}.")


def _from_probabilities(signal: str, probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    p_true = probabilities[np.arange(len(labels)), labels]
    if signal == "prob":
        return p_true
    if signal == "loss":
        return np.log(np.clip(p_true, PROBABILITY_CLIP, 1.0))
    # brier: sum_k p_k^2 - 2 p_true + 1 (binary: 2 (1 - p_true)^2)
    return -(np.sum(probabilities**2, axis=-1) - 2.0 * p_true + 1.0)


def trivial_per_example(signal: str, spec: Any, train_labels: Any, labels: Any) -> np.ndarray:
    """[N]: the trivial predictor's part of `signal` on each example: the training set's class prior as every
    example's distribution (classification), the training mean as every output (regression)."""
    _check(signal)
    labels = np.asarray(labels).reshape(-1)
    train = np.asarray(train_labels).reshape(-1)
    if spec.is_regression:
        return -((float(np.mean(train.astype(np.float64))) - labels.astype(np.float64)) ** 2)
    counts = np.bincount(train.astype(np.int64), minlength=spec.num_labels).astype(np.float64)
    prior = np.broadcast_to(counts / counts.sum(), (len(labels), spec.num_labels))
    return _from_probabilities(signal, prior, labels.astype(np.int64))
