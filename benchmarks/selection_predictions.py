"""Per-example selection-split predictions at every evaluation (#42 item 4: continuous convergence signals).

The stored curves hold each task's selection *score* and *loss* per evaluation; a continuous score (mean probability
of the true class, Brier score) and a bootstrap over the selection examples need each example's prediction. Attached
to a trainer, `SelectionPredictions` keeps, for every evaluation of a task's selection split (the evaluation set keyed
by the task's own name; `<task>_dev...` splits are skipped), the probability of the true class (classification) or the
prediction (regression), as float16, in one fixed order per task (the evaluation's longest-first order), with the
labels once. `save` writes one compressed `.npz`: `<task>/steps` [E], `<task>/values` [E, N], `<task>/labels` [N].

    recorder = SelectionPredictions.attach(trainer)   # before trainer.train()
    ...
    recorder.save(path)
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


class SelectionPredictions:
    """Wraps `trainer.evaluation_loop` to keep each selection evaluation's per-example predictions (float16)."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.specs = trainer.task_specs
        self.steps: dict[str, list[int]] = {}
        self.values: dict[str, list[np.ndarray]] = {}
        self.labels: dict[str, np.ndarray] = {}

    @classmethod
    def attach(cls, trainer: Any) -> SelectionPredictions:
        recorder = cls(trainer)
        loop = trainer.evaluation_loop

        def evaluation_loop(dataloader, description, *args, metric_key_prefix: str = "eval", **kwargs):
            output = loop(dataloader, description, *args, metric_key_prefix=metric_key_prefix, **kwargs)
            recorder.record(metric_key_prefix, output.predictions, output.label_ids)
            return output

        trainer.evaluation_loop = evaluation_loop
        return recorder

    def record(self, metric_key_prefix: str, predictions: Any, label_ids: Any) -> None:
        """Keep the predictions of an evaluation whose key is a task's own (selection) set, during training only."""
        task = metric_key_prefix.split("_", 1)[1] if "_" in metric_key_prefix else None
        if task not in self.specs or not metric_key_prefix.startswith("eval_") or predictions is None:
            return
        spec = self.specs[task]
        if spec.is_mlm:
            return
        logits = np.asarray(predictions, dtype=np.float64)
        labels = np.asarray(label_ids).reshape(-1)
        if spec.is_regression:
            values = logits.reshape(-1)
        else:
            shifted = logits - logits.max(axis=1, keepdims=True)
            probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
            values = probabilities[np.arange(len(labels)), labels.astype(np.int64)]
        if task in self.labels and not np.array_equal(self.labels[task], labels.astype(np.float32)):
            raise ValueError(f"Task {task!r}: the selection split's labels changed between evaluations (order or rows).")
        self.labels[task] = labels.astype(np.float32)
        self.steps.setdefault(task, []).append(int(self.trainer.state.global_step))
        self.values.setdefault(task, []).append(values.astype(np.float16))

    def save(self, path: str) -> None:
        """One compressed `.npz` (written to a temporary name, then renamed)."""
        arrays: dict[str, np.ndarray] = {}
        for task, values in self.values.items():
            arrays[f"{task}/steps"] = np.asarray(self.steps[task], dtype=np.int64)
            arrays[f"{task}/values"] = np.stack(values)
            arrays[f"{task}/labels"] = self.labels[task]
        tmp = f"{path}.tmp.npz"
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
