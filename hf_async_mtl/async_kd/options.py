"""`AsyncKDOptions`: every option of asynchronous convergence, with its one set of defaults and checks (no torch).

`MultiTaskTrainingArguments` exposes each field as `kd_<name>` (its defaults are read from here), the monitor,
the callback and the distillation objective are built from one `AsyncKDOptions`, so a default or a bound is
written once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from .signals import SIGNALS

LOSS_TYPES = ("kl", "mse")
ENSEMBLE_TYPES = ("parameters", "predictions")
SOFT_LABEL_MODES = ("precompute", "on_demand", "online")
NOISE_MODES = ("formula", "bootstrap")
ARGUMENT_PREFIX = "kd_"


@dataclass(frozen=True)
class AsyncKDOptions:
    """The convergence rule, the teacher and the distillation loss of async-KD (see docs/async_kd.md).

    Convergence rule:
        patience: Evaluations without improvement of a task's (smoothed) metric before it counts as converged.
        min_delta: Smallest change that counts as an improvement.
        min_steps: No task is declared converged before this step.
        require_improvement: A task converges only after its metric improved over its first evaluation.
        smoothing: Patience runs on the mean of the last `smoothing` evaluations (1 = raw values, the paper's rule).
        full_window: The smoothed series starts once `smoothing` evaluations exist, so a lucky first evaluation
            cannot become the best that later means must beat.
        trivial_gate: A task converges only once its smoothed best beats its trivial predictor (training majority
            class / mean) on the selection split by `margin_z` noise units.
        margin_z: Noise units (z) of the gate's margin, of the decline `require_decline` asks for and of refresh.
        decline_trigger: A task also converges when its smoothed metric has fallen below its best by the gate's
            margin, even if its best did not clear the floor (needs `require_decline=False`).
        require_decline: A task converges only once its smoothed metric has also fallen below its best by
            `margin_z` noise units at its own level: evidence that it got worse, not only that it stopped improving.
        noise: How the floor and the decline margin measure the selection split's noise: `formula` (binomial / Fisher
            formulas at the split's size) or `bootstrap` (resamples of the selection examples, the decline paired
            between evaluations: `async_kd.bootstrap`).
        signal: What the rule reads on the selection split: `score` (the task's metric, the paper's), or the mean
            over its examples of the true class's log-probability (`loss`), probability (`prob`) or minus the Brier
            score (`brier`); minus the MSE for regression (`async_kd.signals`). Other than `score`, needs
            `noise="bootstrap"` (no formula gives their noise).
        refresh: A converged task keeps being evaluated and takes a new teacher when it beats the old one by the margin.
        stop_when_all_converged: End training once every task has converged.

    Teacher and loss:
        temperature: Softmax temperature of the KL distillation loss (loss scaled by T²).
        loss: `kl` (KL(teacher‖student) on softened distributions) or `mse` (on logits).
        alpha: Weight of the distillation loss; 1 - alpha goes to the hard-label loss (1 = pure KD).
        top_k: Teacher built from a task's k best snapshots (1 = best only).
        ensemble: How k > 1 snapshots form the teacher: `parameters` (weight average) or `predictions`
            (mean probability / mean output of each snapshot's labels).
        soft_labels: `precompute` (one teacher pass over the training set at convergence, the paper),
            `on_demand` (each row the first time a batch draws it afterwards; same labels, kept in a table) or
            `online` (the teacher labels every distilled batch as it is drawn, nothing kept: memory independent of
            the task's size, the teacher's forward pass on every batch; the only mode for a streamed task).
        snapshot_dir: Keep best-parameter snapshots in this directory instead of CPU memory.
        label_batch_size: Batch size of the teacher's labelling pass (None: max(128, evaluation batch size)).
    """

    patience: int = 3
    min_delta: float = 0.0
    min_steps: int = 0
    require_improvement: bool = True
    smoothing: int = 2
    full_window: bool = True
    trivial_gate: bool = True
    margin_z: float = 2.0
    decline_trigger: bool = False
    require_decline: bool = True
    noise: str = "formula"
    signal: str = "score"
    refresh: bool = False
    stop_when_all_converged: bool = False
    temperature: float = 1.0
    loss: str = "kl"
    alpha: float = 1.0
    top_k: int = 1
    ensemble: str = "parameters"
    soft_labels: str = "precompute"
    snapshot_dir: str | None = None
    label_batch_size: int | None = None

    def __post_init__(self) -> None:
        for option in fields(self):  # "false" or 0 for an on/off option would count as on (or off) silently
            if option.type in ("bool", bool) and not isinstance(getattr(self, option.name), bool):
                raise ValueError(f"{ARGUMENT_PREFIX}{option.name} must be True or False, got {getattr(self, option.name)!r}.")
        if self.snapshot_dir is not None:
            if not isinstance(self.snapshot_dir, (str, os.PathLike)) or not os.fspath(self.snapshot_dir).strip():
                raise ValueError(
                    f"kd_snapshot_dir must be a directory path (None keeps snapshots in CPU memory), got {self.snapshot_dir!r}."
                )
            if os.path.isfile(self.snapshot_dir):
                raise ValueError(f"kd_snapshot_dir {os.fspath(self.snapshot_dir)} is a file, not a directory.")
        for name in ("patience", "smoothing", "top_k"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("min_steps", self.min_steps, minimum=0)
        if self.label_batch_size is not None:
            _check_int("label_batch_size", self.label_batch_size, minimum=1)
        for name in ("min_delta", "margin_z"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{ARGUMENT_PREFIX}{name} must be a finite number >= 0, got {value!r}.")
        if (
            isinstance(self.temperature, bool)
            or not isinstance(self.temperature, (int, float))
            or not (math.isfinite(self.temperature) and self.temperature > 0)
        ):
            raise ValueError(f"kd_temperature must be a finite number > 0, got {self.temperature!r}.")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"kd_alpha must be in [0, 1], got {self.alpha!r}.")
        for name, choices in (
            ("loss", LOSS_TYPES),
            ("ensemble", ENSEMBLE_TYPES),
            ("soft_labels", SOFT_LABEL_MODES),
            ("noise", NOISE_MODES),
            ("signal", SIGNALS),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"{ARGUMENT_PREFIX}{name} must be one of {choices}, got {getattr(self, name)!r}.")
        if self.decline_trigger and self.require_decline:
            raise ValueError(
                "kd_decline_trigger converges a task on a decline alone, kd_require_decline asks a plateau for a "
                "decline as well: choose one (--kd_require_decline false with --kd_decline_trigger)."
            )

        if self.signal != "score" and self.noise != "bootstrap":
            raise ValueError(
                f"kd_signal={self.signal!r} needs kd_noise='bootstrap' (no formula gives its noise on the selection split): "
                "add --kd_noise bootstrap, or use --kd_signal score."
            )
        if self.signal != "score" and self.refresh:
            raise ValueError(
                f"kd_refresh compares a converged task's metric with its teacher's by the formula margin; with kd_signal="
                f"{self.signal!r} there is none: use kd_signal='score' or leave kd_refresh off."
            )

    @classmethod
    def from_arguments(cls, arguments: Any) -> AsyncKDOptions:
        """The options of an object with `kd_<name>` attributes (`MultiTaskTrainingArguments`)."""
        return cls(**{f.name: getattr(arguments, ARGUMENT_PREFIX + f.name) for f in fields(cls)})

    @classmethod
    def argument_names(cls) -> tuple[str, ...]:
        """The `kd_<name>` argument of every option."""
        return tuple(ARGUMENT_PREFIX + f.name for f in fields(cls))

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of option `name` (`patience` or `kd_patience`)."""
        return getattr(cls, name.removeprefix(ARGUMENT_PREFIX))

    def rule(self) -> dict[str, Any]:
        """The options that decide when a task converges and what it learns from (a resumed run must keep them)."""
        state = asdict(self)
        for name in ("snapshot_dir", "label_batch_size", "stop_when_all_converged"):
            state.pop(name)
        return state


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{ARGUMENT_PREFIX}{name} must be an integer >= {minimum}, got {value!r}.")


def check_options_for_tasks(options: AsyncKDOptions, specs: Mapping[str, Any], pooled: Sequence[str], streamed: Sequence[str]) -> None:
    """The soft-label mode and loss fit the distilled tasks: `pooled` have prompt-template pools, `streamed` are
    streamed (a clear `ValueError` otherwise)."""
    if options.soft_labels in ("on_demand", "online") and pooled:
        raise ValueError(
            f"kd_soft_labels={options.soft_labels!r} would label each example from whichever template its batch drew; "
            f"task(s) {pooled} have template pools: use kd_soft_labels='precompute' (labels follow the task's prompt_eval)."
        )
    # An ensemble of classifiers (a template pool averaged, or k snapshots' predictions) is a mean probability: it
    # has no logits for `mse` to match (a student equal to every teacher would still have a large loss).
    averaged = [t for t in pooled if specs[t].prompt_eval == "average" and not specs[t].is_regression]
    predictions = options.top_k > 1 and options.ensemble == "predictions"
    classes = [t for t, spec in specs.items() if not spec.is_regression]
    if options.loss == "mse" and (averaged or (predictions and classes)):
        what = (
            f"task(s) {averaged} average their template pool's probabilities (prompt_eval 'average')"
            if averaged
            else f"kd_top_k {options.top_k} with kd_ensemble 'predictions' averages the snapshots' probabilities for {classes}"
        )
        raise ValueError(
            f"kd_loss='mse' matches the teacher's logits, but {what}, which have no logits: use kd_loss 'kl'"
            + (", or prompt_eval 'first'" if averaged else ", or kd_ensemble 'parameters'")
            + "."
        )
    if streamed and options.soft_labels != "online":
        raise ValueError(
            f"kd_soft_labels={options.soft_labels!r} keeps a table over a task's training set; streamed task(s) {streamed} "
            "have no end to label: use kd_soft_labels='online' (the teacher labels each distilled batch as it is drawn)."
        )
