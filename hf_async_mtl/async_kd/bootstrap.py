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

With `kd_signal` other than `score` the same is done for that signal (a mean over the examples, `async_kd.signals`):
its value on each resample is the mean of the resampled examples' parts, its trivial predictor the training prior.

`benchmarks/example_signals.py` replays this rule on stored selection predictions.
"""

from __future__ import annotations

import base64
import dataclasses
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..metrics import compute_task_metrics, main_metric_value
from ..tasks import TaskSpec
from .signals import SIGNALS, greater_is_better, per_example, trivial_per_example

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
    """Per task: the monitored metric on the selection split and on each resample at the last `smoothing` evaluations
    and over the best smoothed window, the trivial predictor's likewise, and from them the floor and decline margin of
    the next monitor update."""

    def __init__(
        self,
        specs: Mapping[str, TaskSpec],
        smoothing: int,
        z: float,
        resamples: int = RESAMPLES,
        min_delta: float = 0.0,
        signal: str = "score",
    ) -> None:
        if resamples < 2:
            raise ValueError(f"resamples must be >= 2, got {resamples}.")
        if signal not in SIGNALS:
            raise ValueError(f"signal must be one of {SIGNALS}, got {signal!r}.")
        self.signal = signal
        self.specs, self.smoothing, self.z, self.resamples, self.min_delta = (
            dict(specs),
            int(smoothing),
            float(z),
            int(resamples),
            float(min_delta),
        )
        # Only what the monitor reads is scored on the resamples: a built-in main metric leaves `evaluate` modules out.
        self._scoring = {
            t: dataclasses.replace(spec, evaluate_metrics=())
            if spec.metrics and (spec.main_metric == "score" or spec.main_metric in spec.metrics)
            else spec
            for t, spec in self.specs.items()
        }
        self.recent: dict[str, list[tuple[int, np.ndarray]]] = {}  # task -> the last `smoothing` [(step, [resamples + 1])]
        self.best: dict[str, tuple[int, np.ndarray]] = {}  # task -> (step, the best smoothed window's mean)
        self.trivial: dict[str, np.ndarray] = {}  # task -> [resamples + 1]
        self.labels_crc: dict[str, int] = {}  # task -> crc32 of its selection labels (a resume must see the same split)
        self.last: dict[str, tuple[float, float | None]] = {}  # task -> (floor, decline margin) of its last update

    def observe(self, task: str, step: int, predictions: Any, labels: Any, train_labels: Any) -> float:
        """Score one evaluation's selection predictions (`compute_task_metrics` input: logits, or regression outputs)
        on the split and its resamples; returns the value on the split itself."""
        spec = self._scoring[task]
        predictions, labels = np.asarray(predictions), np.asarray(labels).reshape(-1)
        if len(predictions) != len(labels) or len(labels) < 2:
            raise ValueError(f"Task {task!r}: {len(predictions)} predictions for {len(labels)} labels (need >= 2 of each, paired).")
        crc = zlib.crc32(np.ascontiguousarray(labels, dtype=np.float64).tobytes())
        if self.labels_crc.setdefault(task, crc) != crc:
            raise ValueError(f"Task {task!r}: the selection split's labels changed between evaluations (another split, or another order).")
        recent = self.recent.setdefault(task, [])
        if recent and int(step) <= recent[-1][0]:
            raise ValueError(f"Task {task!r}: step {step} is not after the last observed step {recent[-1][0]}.")
        draws = resample_indices(task, len(labels), self.resamples)
        if self.signal == "score":
            scores = np.asarray([_metric(spec, predictions, labels)] + [_metric(spec, predictions[d], labels[d]) for d in draws])
        else:
            scores = _means(per_example(self.signal, spec, predictions, labels), draws)
        recent.append((int(step), scores))
        del recent[: -self.smoothing]
        if task not in self.trivial:
            train = np.asarray(train_labels)
            if self.signal == "score":
                self.trivial[task] = np.asarray([_trivial(spec, train, labels)] + [_trivial(spec, train, labels[d]) for d in draws])
            else:
                self.trivial[task] = _means(trivial_per_example(self.signal, spec, train, labels), draws)
        return float(scores[0])

    def greater_is_better(self, task: str) -> bool:
        """The direction of the value this noise measures: the task's metric's, or (any other signal) greater."""
        return greater_is_better(self.signal, self.specs[task])

    def _current(self, task: str) -> np.ndarray:
        return np.mean([values for _, values in self.recent[task]], axis=0)

    def margins(self, task: str, best_smoothed_step: int | None) -> tuple[float, float | None]:
        """(floor, decline margin) for the monitor's update with the task's latest observation; `best_smoothed_step`
        is the monitor's best smoothed step before that update (None: no decline margin yet)."""
        sign = 1.0 if self.greater_is_better(task) else -1.0
        current = self._current(task)
        best = None
        if best_smoothed_step is not None:
            kept = self.best.get(task)
            if kept is None or kept[0] != int(best_smoothed_step):
                raise ValueError(
                    f"Task {task!r}: no kept window for the best smoothed step {best_smoothed_step} (kept: {kept and kept[0]})."
                )
            best = kept[1]
        # the window the monitor's best will be after this update (it improves by more than min_delta)
        top = current if best is None or sign * (current[0] - best[0]) > self.min_delta else best
        trivial = self.trivial[task]
        floor = float(trivial[0] + sign * self.z * np.std((top - trivial)[1:], ddof=1))
        margin = None if best is None else float(self.z * np.std((best - current)[1:], ddof=1))
        self.last[task] = (floor, margin)
        return floor, margin

    def keep_best(self, task: str, best_smoothed_step: int | None) -> None:
        """After the monitor's update: keep the current window when it became the best smoothed one."""
        recent = self.recent.get(task)
        if recent and best_smoothed_step is not None and int(best_smoothed_step) == recent[-1][0]:
            self.best[task] = (int(best_smoothed_step), self._current(task))

    def state_dict(self) -> dict[str, Any]:
        return {
            "signal": self.signal,
            "resamples": self.resamples,
            "recent": {t: [[step, _encode(v)] for step, v in h] for t, h in self.recent.items()},
            "best": {t: [step, _encode(v)] for t, (step, v) in self.best.items()},
            "trivial": {t: _encode(v) for t, v in self.trivial.items()},
            "labels_crc": dict(self.labels_crc),
            "last": {t: list(v) for t, v in self.last.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state.get("resamples", self.resamples)) != self.resamples:
            raise ValueError(f"The saved bootstrap noise has {state.get('resamples')} resamples, this run {self.resamples}.")
        if state.get("signal", "score") != self.signal:
            raise ValueError(f"The saved bootstrap noise measured signal {state.get('signal', 'score')!r}, this run {self.signal!r}.")
        self.recent = {t: [(int(step), _decode(v)) for step, v in h] for t, h in (state.get("recent") or {}).items()}
        self.best = {t: (int(step), _decode(v)) for t, (step, v) in (state.get("best") or {}).items()}
        self.trivial = {t: _decode(v) for t, v in (state.get("trivial") or {}).items()}
        self.labels_crc = {t: int(v) for t, v in (state.get("labels_crc") or {}).items()}
        self.last = {t: (float(v[0]), None if v[1] is None else float(v[1])) for t, v in (state.get("last") or {}).items()}


def _means(parts: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """[resamples + 1]: the mean of the examples' parts on the split itself, then on each resample."""
    return np.concatenate([[float(np.mean(parts))], parts[draws].mean(axis=1)])


def _encode(values: np.ndarray) -> str:
    """float64 values as one base64 string (exact, compact in a JSON checkpoint)."""
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f8").tobytes()).decode("ascii")


def _decode(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f8").astype(np.float64)
