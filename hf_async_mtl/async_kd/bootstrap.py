"""The selection split's noise measured by resampling its examples (`kd_noise="bootstrap"`; no torch).

With the default `kd_noise="formula"` the rule's floor and decline margin come from formulas at the split's size
(`convergence_floor`, `noise_margin`: a proportion's binomial sd at 1/2, a correlation's sd near 0). Those treat two
evaluations as two independent samples. They are the same examples, scored by two states of one model: a change from
one evaluation to another is much less noisy than either value, so the formula can hide a real decline (a task that
loses several points on dev while its selection score moves less than the formula's margin).

`BootstrapNoise` measures the noise instead. At every evaluation it scores the task's monitored metric on B = 400
resamples of the selection examples (with replacement; the same resamples at every evaluation, seeded by the task's
name and the split's size), and gives the monitor, before each update:

- the floor: trivial + z · sd over the resamples of (W − trivial), W the smoothed window that is the best once this
  evaluation counts and the trivial predictor's value recomputed on each resample (its majority-class accuracy moves
  with the resampled labels);
- the decline margin: z · sd over the resamples of (best smoothed window − current window), paired.

`benchmarks/example_signals.py` replays this rule on stored selection predictions.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..metrics import compute_task_metrics, main_metric_value
from ..tasks import TaskSpec

RESAMPLES = 400
_SALT = 0xB007


def resample_indices(task: str, size: int, resamples: int = RESAMPLES) -> np.ndarray:
    """[resamples, size] indices into a task's `size` selection examples, the same for a given task name and size."""
    rng = np.random.default_rng([_SALT, zlib.crc32(task.encode("utf-8")), size])
    return rng.integers(0, size, size=(resamples, size))


def _metric(spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(main_metric_value(spec, compute_task_metrics(spec, predictions, labels)))


def _trivial(spec: TaskSpec, train_labels: np.ndarray, labels: np.ndarray) -> float:
    # trivial_predictor_value's predictor (majority class / training mean), scored on these labels
    if spec.is_regression:
        return _metric(spec, np.full(len(labels), float(np.mean(train_labels)), dtype=np.float32), labels)
    majority = int(np.bincount(train_labels.astype(int), minlength=spec.num_labels).argmax())
    logits = np.zeros((len(labels), spec.num_labels), dtype=np.float32)
    logits[:, majority] = 1.0
    return _metric(spec, logits, labels)


class BootstrapNoise:
    """Per task: the monitored metric on the selection split and on each resample at every evaluation, the trivial
    predictor's likewise, and from them the floor and decline margin of the next monitor update."""

    def __init__(self, specs: Mapping[str, TaskSpec], smoothing: int, z: float, resamples: int = RESAMPLES) -> None:
        if resamples < 2:
            raise ValueError(f"resamples must be >= 2, got {resamples}.")
        self.specs, self.smoothing, self.z, self.resamples = dict(specs), int(smoothing), float(z), int(resamples)
        self.values: dict[str, list[tuple[int, np.ndarray]]] = {}  # task -> [(step, [resamples + 1])]
        self.trivial: dict[str, np.ndarray] = {}  # task -> [resamples + 1]

    def observe(self, task: str, step: int, predictions: Any, labels: Any, train_labels: Any) -> float:
        """Score one evaluation's selection predictions (`compute_task_metrics` input: logits, or regression outputs)
        on the split and its resamples; returns the value on the split itself."""
        spec = self.specs[task]
        predictions, labels = np.asarray(predictions), np.asarray(labels).reshape(-1)
        if len(predictions) != len(labels) or len(labels) < 2:
            raise ValueError(f"Task {task!r}: {len(predictions)} predictions for {len(labels)} labels (need >= 2 of each, paired).")
        history = self.values.setdefault(task, [])
        if history and int(step) <= history[-1][0]:
            raise ValueError(f"Task {task!r}: step {step} is not after the last observed step {history[-1][0]}.")
        draws = resample_indices(task, len(labels), self.resamples)
        scores = [_metric(spec, predictions, labels)] + [_metric(spec, predictions[d], labels[d]) for d in draws]
        history.append((int(step), np.asarray(scores)))
        if task not in self.trivial:
            train = np.asarray(train_labels)
            self.trivial[task] = np.asarray([_trivial(spec, train, labels)] + [_trivial(spec, train, labels[d]) for d in draws])
        return scores[0]

    def _window(self, task: str, position: int) -> np.ndarray:
        history = self.values[task]
        return np.mean([values for _, values in history[max(0, position - self.smoothing + 1) : position + 1]], axis=0)

    def margins(self, task: str, best_smoothed_step: int | None) -> tuple[float, float | None]:
        """(floor, decline margin) for the monitor's update with the task's latest observation; `best_smoothed_step`
        is the monitor's best smoothed step before that update (None: no decline margin yet)."""
        spec, history = self.specs[task], self.values[task]
        sign = 1.0 if spec.greater_is_better else -1.0
        current = self._window(task, len(history) - 1)
        steps = [step for step, _ in history]
        best = None if best_smoothed_step is None else self._window(task, steps.index(int(best_smoothed_step)))
        top = current if best is None or sign * current[0] > sign * best[0] else best
        trivial = self.trivial[task]
        floor = float(trivial[0] + sign * self.z * np.std((top - trivial)[1:], ddof=1))
        margin = None if best is None else float(self.z * np.std((best - current)[1:], ddof=1))
        return floor, margin

    def state_dict(self) -> dict[str, Any]:
        return {
            "resamples": self.resamples,
            "values": {t: [[step, v.tolist()] for step, v in h] for t, h in self.values.items()},
            "trivial": {t: v.tolist() for t, v in self.trivial.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state.get("resamples", self.resamples)) != self.resamples:
            raise ValueError(f"The saved bootstrap noise has {state.get('resamples')} resamples, this run {self.resamples}.")
        self.values = {t: [(int(step), np.asarray(v, dtype=np.float64)) for step, v in h] for t, h in (state.get("values") or {}).items()}
        self.trivial = {t: np.asarray(v, dtype=np.float64) for t, v in (state.get("trivial") or {}).items()}
