"""Evaluation of a multi-task run: every task on its own set(s), one merged metrics dict.

`MultiTaskEvaluationMixin` is the evaluation half of `MultiTaskTrainer` (it relies on the trainer's `task_specs`,
`_length_orders`, `_task_name`, `objectives` and `step_context`): per-task metrics and the GLUE score, extra splits per
task (e.g. dev curves beside the selection split) that select nothing, template pools evaluated by their first
view or by averaging, masked-LM auxiliaries by their loss, calibration bins, and test-set predictions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import datasets
import numpy as np
import torch
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import has_length, speed_metrics

from .calibration import GIVEN_SETS, OWN_SETS, ece_from_bins, reliability_bins, write_calibration
from .data import length_order, num_template_views, template_view
from .losses import task_loss
from .metrics import compute_task_metrics, glue_score
from .mlm import IGNORE_INDEX
from .prompting import combine_template_outputs
from .trainer_inputs import check_task_set

if TYPE_CHECKING:
    from transformers import Trainer

    from .config import MultiTaskTrainingArguments
    from .objectives import MaskedLmObjective, StepContext, TaskObjective
    from .tasks import TaskSpec

    # For mypy the mixin is the Trainer it is combined with (`MultiTaskTrainer`); at run time it is a plain class.
    _TrainerBase = Trainer
else:
    _TrainerBase = object


class MultiTaskEvaluationMixin(_TrainerBase):
    """Evaluation methods of `MultiTaskTrainer` (see the module docstring)."""

    # What the mixin reads from `MultiTaskTrainer` (declarations for mypy; the trainer sets and defines them).
    args: MultiTaskTrainingArguments
    task_specs: dict[str, TaskSpec]
    objectives: dict[str, TaskObjective]
    _length_orders: dict[str, np.ndarray]

    if TYPE_CHECKING:

        def _task_name(self, batch: Mapping[str, Any]) -> str: ...

        def step_context(self, model: torch.nn.Module) -> StepContext: ...

    def get_eval_dataloader(self, eval_dataset=None):
        # With dataloader_persistent_workers, transformers keeps ONE loader under "eval" for any dataset object
        # passed in; evaluation passes one dataset per task and split, so each gets its own loader, kept for the
        # trainer's life (a new one per evaluation would start new workers each time, the old ones left running).
        if isinstance(eval_dataset, str) or eval_dataset is None or not self.args.dataloader_persistent_workers:
            return super().get_eval_dataloader(eval_dataset)
        # Keyed by content: a `datasets.Dataset` by its fingerprint (each evaluation makes a new length-sorted view
        # with the same fingerprint), anything else by identity (kept alive beside its loader, so the id stays unique).
        fingerprint = getattr(eval_dataset, "_fingerprint", None) if isinstance(eval_dataset, datasets.Dataset) else None
        key = ("fingerprint", fingerprint) if fingerprint else ("object", id(eval_dataset))
        loaders: dict[tuple[str, Any], tuple[Any, Any]] = self.__dict__.setdefault("_task_eval_loaders", {})
        kept = loaders.get(key)
        if kept is not None and (fingerprint or kept[0] is eval_dataset):
            return kept[1]
        if hasattr(self, "_eval_dataloaders"):
            self._eval_dataloaders.pop("eval", None)
        loader = super().get_eval_dataloader(eval_dataset)
        loaders[key] = (eval_dataset, loader)
        return loader

    def _evaluation_sets(self, eval_dataset: Mapping[str, Any] | None) -> list[tuple[str, str, Any]]:
        # MultiTaskTrainer's eval_dataset is a mapping task name → dataset (its own sets were checked when it was built).
        given = eval_dataset is not None and eval_dataset is not self.eval_dataset
        eval_dataset = eval_dataset if eval_dataset is not None else cast("Mapping[str, Any] | None", self.eval_dataset)
        if not eval_dataset:
            raise ValueError("MultiTaskTrainer: evaluation requires an eval_dataset (task name → dataset).")
        if not isinstance(eval_dataset, Mapping):
            raise TypeError(
                f"eval_dataset must map task names to tokenized datasets ({{'task': dataset}}), got a {type(eval_dataset).__name__}."
            )
        sets = []
        for task, value in eval_dataset.items():
            if task not in self.task_specs:
                raise ValueError(f"eval_dataset has task {task!r} without a TaskSpec; tasks: {list(self.task_specs)}.")
            if isinstance(value, Mapping):
                for position, (split, dataset) in enumerate(value.items()):
                    sets.append((task if position == 0 else f"{task}_{split}", task, dataset))
            else:
                sets.append((task, task, value))
        keys = [key for key, _, _ in sets]
        clash = sorted({key for key in keys if keys.count(key) > 1})
        if clash:
            raise ValueError(
                f"eval_dataset: metric name(s) {clash} would be reported twice (task '<a>' with extra split '<b>' "
                "is reported as '<a>_<b>', like a task of that name): rename the split or the task."
            )
        if given:  # the head each batch goes to is its task id: a set tokenized for another task would be scored by it
            order = list(self.task_specs)
            for key, task, dataset in sets:
                check_task_set(self.task_specs[task], order.index(task), dataset, f"eval_dataset[{key!r}]")
        return sets

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Evaluate every task on its own set; one merged metrics dict, logged once.

        Evaluation leaves torch's global random state as it found it (each evaluation DataLoader draws its base seed
        from it), so evaluating more often or more splits (`--dev_curves`) does not change the training's dropout.
        """
        with torch.random.fork_rng(devices=[]):
            return self._evaluate_tasks(eval_dataset, ignore_keys, metric_key_prefix)

    def _evaluate_tasks(self, eval_dataset, ignore_keys, metric_key_prefix: str) -> dict[str, float]:
        self._memory_tracker.start()
        start_time = time.time()
        metrics: dict[str, float] = {}
        task_scores: dict[str, dict[str, float]] = {}
        reliability: dict[str, list[dict[str, float | None]]] = {}
        losses = []
        loss: float | None
        num_samples = 0
        for key, task, dataset in self._evaluation_sets(eval_dataset):
            if self.task_specs[task].is_mlm:
                loss, samples = self._evaluate_mlm(key, dataset, metric_key_prefix, ignore_keys)
                metrics[f"{metric_key_prefix}_{key}_loss"] = loss
                metrics[f"{metric_key_prefix}_{key}_perplexity"] = float(math.exp(min(loss, 50.0)))
                num_samples += samples
                continue
            dataset, views = self._evaluation_views(task, dataset)
            # Longest first: batches of similar length (metrics do not depend on the order).
            dataset, order = self._length_sorted(dataset)
            loader = self.get_eval_dataloader(dataset)
            self._grow_prediction_bar(loader)
            output = self.evaluation_loop(
                loader,
                description=f"Evaluation ({key})",
                prediction_loss_only=False,
                ignore_keys=ignore_keys,
                metric_key_prefix=f"{metric_key_prefix}_{key}",
            )
            # One logits array (a head has one output), and the labels every evaluation set carries.
            predictions, label_ids = cast(np.ndarray, output.predictions), cast(np.ndarray, output.label_ids)
            loss = self._exact_loss(task, predictions, label_ids)
            if views > 1:  # a template pool evaluated by averaging: back to dataset order, one row per example
                predictions = self._combine_views(task, self._restore_order(predictions, order), views)
                label_ids = np.asarray(self._restore_order(label_ids, order))[: len(predictions)]
            num_samples += cast(int, output.num_samples) // views  # evaluation_loop always counts them
            task_metrics = compute_task_metrics(self.task_specs[task], predictions, label_ids)
            outputs = getattr(self, "selection_outputs", None)
            if outputs is not None and key == task and metric_key_prefix == "eval":  # kd_noise="bootstrap" reads them
                outputs[task] = (predictions, label_ids)
            if self.args.calibration_bins and not self.task_specs[task].is_regression:
                reliability[key] = reliability_bins(predictions, label_ids, self.args.calibration_bins)
                task_metrics["ece"] = ece_from_bins(reliability[key])
            metrics.update({f"{metric_key_prefix}_{key}_{name}": value for name, value in task_metrics.items()})
            metrics[f"{metric_key_prefix}_{key}_loss"] = loss
            if key == task:  # a task's extra splits (e.g. dev curves beside selection) select nothing
                losses.append(loss)
            # The GLUE average is of higher-is-better scores: a task scored only by its evaluate modules whose
            # greater_is_better is False (errors) would raise it by doing worse.
            spec = self.task_specs[task]
            if key == task and (spec.metrics or spec.greater_is_better):
                task_scores[task] = task_metrics
        if task_scores:  # MLM objectives are auxiliary: never part of the score
            metrics[f"{metric_key_prefix}_glue_score"] = glue_score(task_scores)
        if losses:
            metrics[f"{metric_key_prefix}_loss"] = float(np.mean(losses))
        if reliability and self.is_world_process_zero():
            assert self.args.output_dir is not None  # TrainingArguments.__post_init__ defaults it
            data = OWN_SETS if eval_dataset is None else GIVEN_SETS
            write_calibration(self.args.output_dir, self.state.global_step, metric_key_prefix, reliability, data)
            self.calibration_evaluations = getattr(self, "calibration_evaluations", 0) + 1
        total_batch_size = self.args.eval_batch_size * self.args.world_size
        metrics.update(
            speed_metrics(metric_key_prefix, start_time, num_samples=num_samples, num_steps=math.ceil(num_samples / total_batch_size))
        )
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self._memory_tracker.stop_and_update_metrics(metrics)
        return metrics

    def _exact_loss(self, task: str, predictions: np.ndarray, label_ids: np.ndarray) -> float:
        """A task's evaluation loss: its hard-label loss (what its objective computes in evaluation) over every example
        of the set, from the gathered predictions, so several processes report what one does. (transformers' loop
        repeats each batch's mean loss once per row; under several processes the last batch's rows are a rank's mean
        each, that of the rank whose shard repeats examples to fill its batch included.)"""
        spec = self.task_specs[task]
        logits = torch.from_numpy(np.asarray(predictions, dtype=np.float32))
        labels = torch.from_numpy(np.asarray(label_ids))
        return float(task_loss(logits, labels, spec.is_regression, spec.loss_label_range))

    def predict(self, test_dataset: Any, ignore_keys: list[str] | None = None, metric_key_prefix: str = "test") -> Any:
        """transformers' `predict` takes one dataset; a mapping task → dataset is what `predict_tasks` (predictions per
        task) and `evaluate` (metrics per task) take."""
        if isinstance(test_dataset, Mapping):
            raise TypeError(
                "predict takes one dataset; for a mapping task name → dataset use predict_tasks (each task's predictions) "
                "or evaluate (each task's metrics)."
            )
        return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def predict_tasks(self, test_sets: Mapping[str, datasets.Dataset]) -> dict[str, np.ndarray]:
        """Predict every task's (unlabelled) tokenized set, in dataset order: class ids, or scores for regression.

        Labels are dropped first (GLUE test labels are -1), so no loss or metric is computed.
        """
        if not isinstance(test_sets, Mapping):
            raise TypeError(f"test_sets must map task names to tokenized datasets ({{'task': dataset}}), got a {type(test_sets).__name__}.")
        predictions = {}
        for task, dataset in test_sets.items():
            if task not in self.task_specs:
                raise ValueError(f"test_sets has task {task!r} without a TaskSpec; tasks: {list(self.task_specs)}.")
            if self.task_specs[task].is_mlm:
                raise ValueError(f"Task {task!r} is an MLM auxiliary objective: it has no predictions to make.")
            check_task_set(self.task_specs[task], list(self.task_specs).index(task), dataset, f"test_sets[{task!r}]", labels=False)
            unlabelled = dataset.remove_columns([c for c in ("labels", "label") if c in dataset.column_names])
            unlabelled, views = self._evaluation_views(task, unlabelled)
            ordered, order = self._length_sorted(unlabelled)
            logits = self._restore_order(np.asarray(self.predict(ordered, metric_key_prefix=f"test_{task}").predictions), order)
            if views > 1:
                logits = self._combine_views(task, logits, views)
            predictions[task] = logits.reshape(-1) if self.task_specs[task].is_regression else logits.argmax(axis=-1)
        return predictions

    def _evaluate_mlm(self, key: str, dataset: Any, prefix: str, ignore_keys: Any) -> tuple[float, int]:
        """(masked-LM loss, masked tokens) of an MLM task's set: mean cross-entropy per masked token (over ranks too).

        Its masks depend on the seed and each batch's tokens only (`MaskedLmObjective.seed`), so every evaluation masks the
        same tokens and the values are comparable along a run.
        """
        model = self.model
        assert model is not None  # the Trainer has its model once built
        was_training = model.training
        model.eval()
        total = torch.zeros(2, dtype=torch.float64, device=self.args.device)
        try:
            with torch.no_grad():
                for batch in self.get_eval_dataloader(dataset):
                    batch = dict(self._prepare_inputs(batch))
                    task = self._task_name(batch)
                    # An MLM task's objective is a MaskedLmObjective (async-KD never replaces it).
                    labels, outputs = cast("MaskedLmObjective", self.objectives[task]).masked_forward(
                        model, batch, task, self.step_context(model)
                    )
                    masked = labels != IGNORE_INDEX
                    token_loss = torch.nn.functional.cross_entropy(outputs.logits.float(), labels[masked].long(), reduction="none")
                    # Per example (cross-entropy sum, masked tokens): gathering them per example drops the rows that
                    # uneven shards repeat under several processes, as for every other task's metrics.
                    rows = masked.nonzero()[:, 0]
                    per_example = torch.zeros(labels.shape[0], 2, dtype=torch.float64, device=total.device)
                    per_example[:, 0].index_add_(0, rows, token_loss.double())
                    per_example[:, 1].index_add_(0, rows, torch.ones_like(token_loss, dtype=torch.float64))
                    total += self.accelerator.gather_for_metrics(per_example).sum(dim=0)
        finally:
            model.train(was_training)
        return float(total[0] / total[1].clamp(min=1)), int(total[1])

    def _grow_prediction_bar(self, loader: Any) -> None:
        """transformers' progress bar takes its total from the first loader it sees and closes at `on_evaluate`: one
        evaluation runs a loader per task, so each further loader extends the open bar's total by its batches."""
        for callback in self.callback_handler.callbacks:
            bar = getattr(callback, "prediction_bar", None) if isinstance(callback, ProgressCallback) else None
            if bar is not None and has_length(loader):
                bar.total += len(loader)
                bar.refresh()

    def _evaluation_views(self, task: str, dataset: Any) -> tuple[Any, int]:
        """(what to evaluate, its number of template views): a template pool's first view, or all of them
        when the task averages over its pool (`TaskSpec.prompt_eval`)."""
        views = num_template_views(dataset)
        if views > 1 and self.task_specs[task].prompt_eval == "first":
            return template_view(dataset, 0, views), 1
        return dataset, views

    def _combine_views(self, task: str, outputs: np.ndarray, views: int) -> np.ndarray:
        combined = combine_template_outputs(torch.as_tensor(np.asarray(outputs)), views, self.task_specs[task].is_regression)
        return combined.numpy()

    @staticmethod
    def _restore_order(values: Any, order: np.ndarray | None) -> Any:
        """Rows computed on `dataset.select(order)` back in dataset order."""
        if order is None or values is None:
            return values
        values = np.asarray(values)
        restored = np.empty_like(values)
        restored[order] = values
        return restored

    def _length_sorted(self, dataset: Any) -> tuple[Any, np.ndarray | None]:
        """(the dataset longest first, the order) for a tokenized `datasets.Dataset`; (it, None) otherwise."""
        if not isinstance(dataset, datasets.Dataset) or "input_ids" not in dataset.column_names or len(dataset) < 2:
            return dataset, None
        key = dataset._fingerprint
        if key not in self._length_orders:
            self._length_orders[key] = length_order(dataset)
        order = self._length_orders[key]
        if np.all(order[1:] > order[:-1]):  # already sorted
            return dataset, None
        return dataset.select(order), order
