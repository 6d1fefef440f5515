"""Per-task convergence monitoring on validation metrics (no torch needed).

Asynchronous-convergence MTL (Lu et al., NAACL 2022 industry track) needs to know, for each task
separately, when its validation metric has stopped improving and at which step it was best: that
step's parameters become the task's teacher. `ConvergenceMonitor` is the bookkeeping for this:
feed it the validation values after every evaluation and it reports new bests and tasks that have
just converged (patience-based early stopping, per task).

The paper gives no rule for small, noisy validation sets, where the plain rule (patience on raw
values) converges on a blip: CoLA's MCC going 0 → 0.07 → 0 on 500 examples looks like a peak. Two
guards make the decision rest on evidence (smoothing defaults to 2 here and in `MultiTaskTrainingArguments`; floors
are off by default here, on in `MultiTaskTrainingArguments`, which computes them):

- `smoothing`: patience runs on the mean of the last `smoothing` values, so one blip neither resets
  nor ends it;
- `floors`: a task converges only once its smoothed best clears a floor — its trivial predictor's
  value (majority class / training mean) plus a margin for the split's size (`convergence_floor`) —
  so a task that has learnt nothing is never frozen into a teacher that knows nothing.

A third guard asks for evidence that the task got worse, not merely that it stopped improving
(`require_decline`, on by default here and in `MultiTaskTrainingArguments`): with evaluations every 100 steps a large task's
slow rise looks flat for three evaluations (SST-2 in the 3,000-step anchor run "converged" at step 1,200 on a teacher
from step 800, and ended 3 dev points below equal weighting), and with it only a decline beyond the split's noise at
the task's own level (`noise_margin`) ends a task's true-label training. Issue #42 measured both rules over five seeds
where tasks converge apart (benchmarks/async_kd_regime.md): neither gained; the plateau rule left RTE below equal
weighting beyond its interval, the decline rule no task.

The teacher is always the best *raw* value's step (`best_step`), the step whose parameters were kept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .options import AsyncKDOptions

_DEFAULTS = AsyncKDOptions()  # the monitor's defaults are the library's rule

_STATE_VERSION = 3
# How far a metric's value on n examples strays by chance, per unit of 1/sqrt(n): a proportion at most
# 0.5 (binomial sd at p = 1/2); a correlation or MCC near 0 about 1 (its sd under no association).
_NOISE_SCALE = {"accuracy": 0.5, "f1": 0.5, "matthews_correlation": 1.0, "pearson": 1.0, "spearmanr": 1.0}


def convergence_floor(trivial_value: float, metrics: tuple[str, ...], num_examples: int, z: float, greater_is_better: bool = True) -> float:
    """The value a task's smoothed best must clear before it may converge.

    `trivial_value` is the trivial predictor's value of the monitored metric on the selection split,
    `metrics` the metrics it averages (one for a single metric), `num_examples` the split's size and
    `z` the number of noise units demanded: floor = trivial ± z · scale / sqrt(n), where scale is 0.5
    for proportions (accuracy, F1) and 1 for correlations (MCC, Pearson, Spearman), averaged over
    `metrics` (1 for a metric not listed, or when none is named). On 500 examples with z = 2, CoLA's MCC must exceed 0.089.
    """
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}.")
    if not math.isfinite(z) or z < 0:
        raise ValueError(f"z must be a finite number >= 0, got {z}.")
    # A metric not listed, or none named (a task scored only by `evaluate` metrics), gets the larger scale.
    scale = sum(_NOISE_SCALE.get(m, 1.0) for m in metrics) / len(metrics) if metrics else 1.0
    margin = z * scale / math.sqrt(num_examples)
    return trivial_value + margin if greater_is_better else trivial_value - margin


def noise_margin(value: float, metrics: tuple[str, ...], num_examples: int, z: float) -> float:
    """How far a metric at `value` on `num_examples` examples strays by chance, times `z`.

    The standard deviation at the metric's own level: sqrt(p(1 - p)) / sqrt(n) for a proportion (accuracy,
    F1), (1 - r^2) / sqrt(n) for a correlation or MCC (Fisher's approximation), 1 / sqrt(n) for anything else;
    averaged over `metrics` (a score that averages several metrics is passed as their common value).
    SST-2 at 90 % on 500 examples with z = 2: 2.7 points; STS-B at 0.82: 2.9 points; RTE at 62 % on 249: 6.2.
    """
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}.")
    if not math.isfinite(z) or z < 0:
        raise ValueError(f"z must be a finite number >= 0, got {z}.")
    if isinstance(metrics, str):
        raise ValueError(f"metrics must be a tuple of metric names, got the string {metrics!r}.")
    deviations = []
    for metric in metrics or ("",):
        if metric in ("accuracy", "f1"):
            p = min(max(value, 0.0), 1.0)
            deviations.append(math.sqrt(p * (1.0 - p)))
        elif metric in ("matthews_correlation", "pearson", "spearmanr"):
            r = min(abs(value), 1.0)
            deviations.append(1.0 - r * r)
        else:
            deviations.append(1.0)
    # A metric at its bound (100 % accuracy) has no sampling spread by this formula, but one changed
    # prediction still moves it by 1 / n: never less than that.
    return z * max(sum(deviations) / len(deviations), 1.0 / math.sqrt(num_examples)) / math.sqrt(num_examples)


@dataclass
class TaskHistory:
    """Convergence state of one task.

    Attributes:
        greater_is_better: Direction of the monitored metric.
        history: Every `(step, value)` recorded, including those after convergence.
        best_value: Best raw value seen before convergence (`None` until the first update).
        best_step: Step at which `best_value` was recorded (the teacher's step).
        best_smoothed: Best smoothed value (mean of the last `smoothing` raw values) before convergence.
        best_smoothed_step: Step at which `best_smoothed` was reached.
        evaluations_without_improvement: Evaluations since the smoothed value last improved.
        converged: Whether the task has converged; never reset once set.
        converged_step: Step of the evaluation at which the task converged.
    """

    greater_is_better: bool
    history: list[tuple[int, float]] = field(default_factory=list)
    best_value: float | None = None
    best_step: int | None = None
    best_smoothed: float | None = None
    best_smoothed_step: int | None = None
    evaluations_without_improvement: int = 0
    converged: bool = False
    converged_step: int | None = None


@dataclass(frozen=True)
class ConvergenceUpdate:
    """What one `ConvergenceMonitor.update` call changed (task names in monitor order)."""

    new_best: tuple[str, ...] = ()
    newly_converged: tuple[str, ...] = ()


class ConvergenceMonitor:
    """Tracks each task's validation metric and decides when the task has converged.

    A value improves on the best when it exceeds it by more than `min_delta` (or falls below it by
    more than `min_delta` for lower-is-better metrics); the first value is always a new best. A
    task converges once `patience` evaluations in a row brought no improvement of the smoothed
    value, the step is at least `min_steps`, the smoothed best clears the task's floor (if any) and, with
    `require_decline`, the smoothed value has fallen below its best by more than the task's decline margin.
    A converged task stays converged: later values are appended to its history but change neither
    its best nor its convergence. The defaults are `AsyncKDOptions`'. With `smoothing=1`, `full_window=False`,
    `require_improvement=False`, `require_decline=False` and no floors this is plain patience-based
    early stopping per task (the paper's rule).

    Args:
        directions: Task name -> `greater_is_better` of its monitored metric.
        patience: Evaluations without improvement needed to converge (>= 1).
        min_delta: Minimum change that counts as an improvement (>= 0).
        min_steps: No task converges before this global step (>= 0).
        require_improvement: A task converges only once its best is later than its first
            evaluation, so a task still on its initial plateau (e.g. CoLA's MCC stuck at 0 while the
            model predicts the majority class) is not frozen at a point where it has learnt nothing.
        full_window: The smoothed series starts once `smoothing` evaluations exist: a first, unaveraged
            evaluation can neither set the smoothed best nor start the patience count, and
            `require_improvement` asks the smoothed best to come after the first full window. Without
            it, one lucky first evaluation (RTE at 57 % after 200 steps) was a smoothed best that three
            noisy later means failed to beat, and the task froze before it learnt (v2, async_kd seed 2).
        require_decline: Besides patience (and the floor), a task converges only once its smoothed value has
            fallen below its best smoothed value by more than its decline margin: a plateau is not enough. On by
            default (the monitor's defaults are `AsyncKDOptions()`'); it needs a margin per task (`noise` or
            `decline_margins`): a task that reaches a plateau without one is an error.
        noise: Task -> (monitored metrics, selection-split size): the decline margin of such a task is
            `noise_margin(best smoothed value, metrics, size, decline_z)`, at the task's own level. A task in
            `decline_margins` keeps that fixed margin instead.
        decline_z: Noise units of the margins computed from `noise`.
    """

    def __init__(
        self,
        directions: Mapping[str, bool],
        patience: int = _DEFAULTS.patience,
        min_delta: float = _DEFAULTS.min_delta,
        min_steps: int = _DEFAULTS.min_steps,
        require_improvement: bool = _DEFAULTS.require_improvement,
        smoothing: int = _DEFAULTS.smoothing,
        floors: Mapping[str, float] | None = None,
        decline_margins: Mapping[str, float] | None = None,
        full_window: bool = _DEFAULTS.full_window,
        require_decline: bool = _DEFAULTS.require_decline,
        noise: Mapping[str, tuple[tuple[str, ...], int]] | None = None,
        decline_z: float = _DEFAULTS.margin_z,
    ) -> None:
        if not directions:
            raise ValueError("ConvergenceMonitor needs at least one task in `directions`.")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1, got {patience!r}.")
        if not isinstance(min_delta, (int, float)) or not math.isfinite(min_delta) or min_delta < 0:
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}.")
        if isinstance(min_steps, bool) or not isinstance(min_steps, int) or min_steps < 0:
            raise ValueError(f"min_steps must be an integer >= 0, got {min_steps!r}.")
        if isinstance(smoothing, bool) or not isinstance(smoothing, int) or smoothing < 1:
            raise ValueError(f"smoothing must be an integer >= 1, got {smoothing!r}.")
        unknown = sorted(set(floors or {}) - {str(name) for name in directions})
        if unknown:
            raise ValueError(f"floors given for unknown tasks {unknown}; monitored tasks: {list(directions)}.")
        for task, floor in (floors or {}).items():
            if not isinstance(floor, (int, float)) or not math.isfinite(floor):
                raise ValueError(f"Task {task!r}: floor must be a finite number, got {floor!r}.")
        for task, margin in (decline_margins or {}).items():
            if str(task) not in {str(name) for name in directions}:
                raise ValueError(f"decline_margins given for unknown task {task!r}; monitored tasks: {list(directions)}.")
            if not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
                raise ValueError(f"Task {task!r}: decline margin must be a finite number >= 0, got {margin!r}.")
        for task, spec in (noise or {}).items():
            if str(task) not in {str(name) for name in directions}:
                raise ValueError(f"noise given for unknown task {task!r}; monitored tasks: {list(directions)}.")
            if not isinstance(spec, (tuple, list)) or len(spec) != 2:
                raise ValueError(f"Task {task!r}: noise must be (metric names, selection-split size), got {spec!r}.")
            metrics, size = spec
            if isinstance(metrics, str) or not all(isinstance(m, str) for m in metrics):
                raise ValueError(f"Task {task!r}: noise needs a tuple of metric names, got {metrics!r}.")
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"Task {task!r}: noise needs the selection split's size (an integer >= 1), got {size!r}.")
        if not isinstance(decline_z, (int, float)) or not math.isfinite(decline_z) or decline_z < 0:
            raise ValueError(f"decline_z must be a finite number >= 0, got {decline_z!r}.")
        self.require_decline = bool(require_decline)
        self.noise = {str(task): (tuple(str(m) for m in metrics), int(size)) for task, (metrics, size) in (noise or {}).items()}
        self.decline_z = float(decline_z)
        self.smoothing = smoothing
        self.floors = {str(task): float(floor) for task, floor in (floors or {}).items()}
        self.decline_margins = {str(task): float(m) for task, m in (decline_margins or {}).items()}
        self.patience = patience
        self.min_delta = float(min_delta)
        self.min_steps = min_steps
        self.require_improvement = bool(require_improvement)
        self.full_window = bool(full_window)
        self._tasks: dict[str, TaskHistory] = {str(name): TaskHistory(greater_is_better=bool(gib)) for name, gib in directions.items()}

    # ------------------------------------------------------------------ updates
    def update(self, step: int, values: Mapping[str, float]) -> ConvergenceUpdate:
        """Record the validation values of an evaluation at `step`.

        `values` may hold any subset of the tasks (tasks can be evaluated at different times).
        Each task's steps must strictly increase. Everything is validated before anything is
        recorded, so a rejected call leaves the monitor unchanged.

        Raises:
            ValueError: unknown task, non-finite value, or a step not after the task's last one.
        """
        if isinstance(step, bool) or not isinstance(step, int):
            raise ValueError(f"step must be an integer, got {step!r}.")
        checked: dict[str, float] = {}
        for task, raw in values.items():
            if task not in self._tasks:
                raise ValueError(f"Unknown task {task!r} at step {step}; monitored tasks: {list(self._tasks)}.")
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise ValueError(f"Task {task!r} at step {step}: value {raw!r} is not a number.") from None
            if not math.isfinite(value):
                # A NaN would silently never improve and trigger a bogus convergence.
                raise ValueError(f"Task {task!r} at step {step}: validation value is not finite ({value}).")
            history = self._tasks[task].history
            if history and step <= history[-1][0]:
                raise ValueError(
                    f"Task {task!r}: step {step} is not after the previous evaluation step {history[-1][0]}; steps must strictly increase."
                )
            checked[task] = value

        new_best: list[str] = []
        newly_converged: list[str] = []
        for task, state in self._tasks.items():  # monitor order, so results are deterministic
            if task not in checked:
                continue
            value = checked[task]
            state.history.append((step, value))
            if state.converged:
                continue
            if self._improves(state.best_value, value, state.greater_is_better):
                state.best_value, state.best_step = value, step
                new_best.append(task)
            if self.full_window and len(state.history) < self.smoothing:
                continue  # the smoothed series starts with the first full window
            smoothed = self.smoothed_value(task)
            assert smoothed is not None  # the history just got this value
            if self._improves(state.best_smoothed, smoothed, state.greater_is_better):
                state.best_smoothed, state.best_smoothed_step = smoothed, step
                state.evaluations_without_improvement = 0
                continue
            state.evaluations_without_improvement += 1
            if self.full_window:
                improved_once = state.best_smoothed_step != state.history[self.smoothing - 1][0]
            else:
                improved_once = state.best_step != state.history[0][0]
            plateau = (
                state.evaluations_without_improvement >= self.patience
                and (improved_once or not self.require_improvement)
                and self.clears_floor(task)
            )
            if self.require_decline:
                if plateau and self.decline_margin(task) is None:
                    raise ValueError(
                        f"Task {task!r} reached a plateau at step {step}, but require_decline has no decline margin for it: "
                        "give the monitor `noise` (its metrics and selection-split size) or `decline_margins`, or "
                        "require_decline=False (the plateau rule). Without one it could never converge."
                    )
                ready = plateau and self.declined(task)
            else:  # the opt-in decline trigger (fixed margins) converges a task even below its floor
                ready = plateau or (task in self.decline_margins and self.declined(task))
            if step >= self.min_steps and ready:
                state.converged, state.converged_step = True, step
                newly_converged.append(task)
        return ConvergenceUpdate(new_best=tuple(new_best), newly_converged=tuple(newly_converged))

    def _improves(self, best: float | None, value: float, greater_is_better: bool) -> bool:
        if best is None:
            return True
        if greater_is_better:
            return value > best + self.min_delta
        return value < best - self.min_delta

    def smoothed_value(self, task: str) -> float | None:
        """Mean of the task's last `smoothing` values (`None` before its first evaluation)."""
        history = self._state(task).history
        if not history:
            return None
        window = [value for _, value in history[-self.smoothing :]]
        return sum(window) / len(window)

    def decline_margin(self, task: str) -> float | None:
        """The drop below the best smoothed value that counts as a decline: the fixed margin of the decline trigger,
        else (with `require_decline`) the noise at the task's best smoothed level; `None` when neither applies yet."""
        state = self._state(task)
        if task in self.decline_margins:
            return self.decline_margins[task]
        if self.require_decline and task in self.noise and state.best_smoothed is not None:
            metrics, size = self.noise[task]
            return noise_margin(state.best_smoothed, metrics, size, self.decline_z)
        return None

    def declined(self, task: str) -> bool:
        """Whether the task's smoothed value is below its best smoothed value by more than its decline margin."""
        state = self._state(task)
        margin = self.decline_margin(task)
        if margin is None or state.best_smoothed is None:
            return False
        smoothed = self.smoothed_value(task)
        assert smoothed is not None  # a best smoothed value means the history is not empty
        drop = state.best_smoothed - smoothed
        return (drop if state.greater_is_better else -drop) > margin

    def clears_floor(self, task: str) -> bool:
        """Whether the task's smoothed best clears its floor (always true without one)."""
        state = self._state(task)
        floor = self.floors.get(task)
        if floor is None:
            return True
        if state.best_smoothed is None:
            return False
        return state.best_smoothed > floor if state.greater_is_better else state.best_smoothed < floor

    # ------------------------------------------------------------------ queries
    def _state(self, task: str) -> TaskHistory:
        try:
            return self._tasks[task]
        except KeyError:
            raise KeyError(f"Unknown task {task!r}; monitored tasks: {list(self._tasks)}.") from None

    @property
    def tasks(self) -> tuple[str, ...]:
        """All monitored task names, in construction order."""
        return tuple(self._tasks)

    def is_converged(self, task: str) -> bool:
        """Whether `task` has converged."""
        return self._state(task).converged

    @property
    def converged_tasks(self) -> tuple[str, ...]:
        """Tasks that have converged."""
        return tuple(t for t, s in self._tasks.items() if s.converged)

    @property
    def active_tasks(self) -> tuple[str, ...]:
        """Tasks still training on their own labels (not converged)."""
        return tuple(t for t, s in self._tasks.items() if not s.converged)

    @property
    def all_converged(self) -> bool:
        """True once every task has converged."""
        return all(s.converged for s in self._tasks.values())

    def best_step(self, task: str) -> int | None:
        """Step of the task's best value (`None` before its first evaluation)."""
        return self._state(task).best_step

    def best_value(self, task: str) -> float | None:
        """The task's best value (`None` before its first evaluation)."""
        return self._state(task).best_value

    def best_smoothed(self, task: str) -> float | None:
        """The task's best smoothed value (`None` before its first evaluation)."""
        return self._state(task).best_smoothed

    def best_smoothed_step(self, task: str) -> int | None:
        """The step whose window holds the best smoothed value (None before the first full window)."""
        return self._state(task).best_smoothed_step

    def converged_step(self, task: str) -> int | None:
        """Step at which the task converged (`None` while active)."""
        return self._state(task).converged_step

    def history(self, task: str) -> list[tuple[int, float]]:
        """A copy of every `(step, value)` recorded for the task."""
        return list(self._state(task).history)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable snapshot of the configuration and every task's state."""
        return {
            "version": _STATE_VERSION,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "min_steps": self.min_steps,
            "require_improvement": self.require_improvement,
            "smoothing": self.smoothing,
            "full_window": self.full_window,
            "floors": dict(self.floors),
            "decline_margins": dict(self.decline_margins),
            "require_decline": self.require_decline,
            "noise": {task: [list(metrics), size] for task, (metrics, size) in self.noise.items()},
            "decline_z": self.decline_z,
            "tasks": {
                task: {
                    "greater_is_better": s.greater_is_better,
                    "history": [[step, value] for step, value in s.history],
                    "best_value": s.best_value,
                    "best_step": s.best_step,
                    "best_smoothed": s.best_smoothed,
                    "best_smoothed_step": s.best_smoothed_step,
                    "evaluations_without_improvement": s.evaluations_without_improvement,
                    "converged": s.converged,
                    "converged_step": s.converged_step,
                }
                for task, s in self._tasks.items()
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the task states from `state_dict()` output (e.g. when resuming training).

        The monitor keeps its own configuration (patience, min_delta, min_steps, smoothing, floors, decline margins,
        require_decline, noise, decline_z); the stored tasks and their
        directions must match this monitor's, since resuming with a different task set or a
        flipped metric direction would make the stored bests meaningless.
        """
        if state.get("version") not in (2, _STATE_VERSION):  # version 2 had no decline requirement
            raise ValueError(f"Unsupported ConvergenceMonitor state version {state.get('version')!r}.")
        stored = state.get("tasks", {})
        if set(stored) != set(self._tasks):
            raise ValueError(f"ConvergenceMonitor state holds tasks {sorted(stored)} but this monitor tracks {sorted(self._tasks)}.")
        restored: dict[str, TaskHistory] = {}
        for task, current in self._tasks.items():
            s = stored[task]
            if bool(s["greater_is_better"]) != current.greater_is_better:
                raise ValueError(f"Task {task!r}: stored greater_is_better differs from this monitor's direction.")
            restored[task] = TaskHistory(
                greater_is_better=current.greater_is_better,
                history=[(int(step), float(value)) for step, value in s["history"]],
                best_value=None if s["best_value"] is None else float(s["best_value"]),
                best_step=None if s["best_step"] is None else int(s["best_step"]),
                best_smoothed=None if s["best_smoothed"] is None else float(s["best_smoothed"]),
                best_smoothed_step=None if s.get("best_smoothed_step") is None else int(s["best_smoothed_step"]),
                evaluations_without_improvement=int(s["evaluations_without_improvement"]),
                converged=bool(s["converged"]),
                converged_step=None if s["converged_step"] is None else int(s["converged_step"]),
            )
        self._tasks = restored  # assigned only after every task parsed, so a bad state changes nothing

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> ConvergenceMonitor:
        """Build a monitor with the stored configuration and task states."""
        directions = {task: bool(s["greater_is_better"]) for task, s in state.get("tasks", {}).items()}
        monitor = cls(
            directions,
            patience=int(state["patience"]),
            min_delta=float(state["min_delta"]),
            min_steps=int(state["min_steps"]),
            require_improvement=bool(state.get("require_improvement", False)),
            smoothing=int(state["smoothing"]),
            floors=state.get("floors") or None,
            decline_margins=state.get("decline_margins") or None,
            full_window=bool(state.get("full_window", False)),
            require_decline=bool(state.get("require_decline", False)),
            noise={task: (tuple(metrics), int(size)) for task, (metrics, size) in (state.get("noise") or {}).items()} or None,
            decline_z=float(state.get("decline_z", 2.0)),
        )
        monitor.load_state_dict(state)
        return monitor
