"""Multi-task, then per-task fine-tuning: continue each task alone from a multi-task model.

`finetune_each_task` copies the multi-task model once per task and trains the copy on that task only
(its own step budget), evaluating on the task's selection split every `eval_steps`, stopping early after
`patience` evaluations without improvement and keeping the best evaluation's parameters (selected on the
task's `main_metric`, `score` for GLUE tasks; selection split only -- the dev set is reported, never read
for a choice). The learning rate warms up again over `warmup_steps` (default: 10 % of the budget) in the
run's schedule. Each task's model is saved as a multi-task checkpoint with its one task's head and exported
for `AutoModelForSequenceClassification` (`MultiTaskModel.export_task`, by the main process). Returns the
per-task table: dev scores of the multi-task model (before) and of the fine-tuned one (after).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
from transformers import EarlyStoppingCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .config import MultiTaskTrainingArguments
from .tasks import TaskSpec
from .trainer import MultiTaskTrainer

__all__ = ["finetune_each_task"]

FINETUNE_WARMUP = 0.1  # default warm-up of each task's fine-tuning: this share of its step budget (not the multi-task run's)


def finetune_each_task(
    model: Any,
    specs: Sequence[TaskSpec],
    train_sets: Mapping[str, datasets.Dataset],
    selection_sets: Mapping[str, datasets.Dataset],
    dev_sets: Mapping[str, Mapping[str, datasets.Dataset]],
    args: MultiTaskTrainingArguments,
    tokenizer: Any,
    *,
    max_steps: int,
    eval_steps: int,
    patience: int = 3,
    learning_rate: float | None = None,
    warmup_steps: int | None = None,
    output_dir: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Fine-tune a copy of `model` on each task alone; see the module docstring. `args` is the multi-task run's."""
    if max_steps < 1 or eval_steps < 1 or patience < 1:
        raise ValueError(f"finetune: max_steps, eval_steps and patience must be >= 1, got {max_steps}, {eval_steps}, {patience}.")
    root = output_dir or os.path.join(str(args.output_dir), "finetuned")
    tuned = [spec.name for spec in specs if not spec.is_mlm]
    for what, sets, names in (
        ("train_sets", train_sets, tuned),
        ("selection_sets", selection_sets, tuned),
        ("dev_sets", dev_sets, [s.name for s in specs]),
    ):
        missing = [name for name in names if name not in sets]
        if missing:
            raise ValueError(f"finetune: {what} has no set for task(s) {missing}.")
    if learning_rate is not None and (
        isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or not 0 < learning_rate < math.inf
    ):
        raise ValueError(f"finetune: learning_rate must be a finite number > 0, got {learning_rate!r}.")
    before_trainer = MultiTaskTrainer(
        model=model,
        args=_task_args(args, root, "before", max_steps, eval_steps, learning_rate, None),
        task_specs=list(specs),
        eval_dataset={s.name: dev_sets[s.name] for s in specs},
        processing_class=tokenizer,
    )
    before = before_trainer.evaluate(metric_key_prefix="eval")
    table: dict[str, dict[str, Any]] = {}
    for spec in specs:
        if spec.is_mlm:  # an auxiliary objective: nothing to fine-tune or export
            continue
        task_dir = os.path.join(root, spec.name)
        student = copy.deepcopy(model)
        trainer = MultiTaskTrainer(
            model=student,
            args=_task_args(args, task_dir, spec.name, max_steps, eval_steps, learning_rate, spec, warmup_steps),
            task_specs=list(specs),
            train_dataset={spec.name: train_sets[spec.name]},
            eval_dataset={spec.name: selection_sets[spec.name]},
            processing_class=tokenizer,
            callbacks=[EarlyStoppingCallback(early_stopping_patience=patience)],
        )
        trainer.train()
        after = trainer.evaluate(eval_dataset={spec.name: dev_sets[spec.name]}, metric_key_prefix="eval")
        if trainer.is_world_process_zero():  # one writer under several processes
            _replace_export(trainer.accelerator.unwrap_model(trainer.model), spec.name, os.path.join(task_dir, "export"), tokenizer)
            _keep_only_the_export(trainer, task_dir)
        trainer.accelerator.wait_for_everyone()
        key = f"eval_{spec.name}_score"
        table[spec.name] = {
            "before": before.get(key),
            "after": after.get(key),
            "selected_on": f"eval_{spec.name}_{spec.main_metric}",
            "best_selection_step": trainer.state.best_global_step,
            "steps_trained": trainer.state.global_step,
            "export": os.path.join(task_dir, "export"),
        }
        del student, trainer
    return table


def _keep_only_the_export(trainer: MultiTaskTrainer, task_dir: str) -> None:
    """After the export: the task's evaluation history as `trainer_state.json`, and no checkpoint directories (they
    only served the choice of the best step, and each holds the model and its optimizer state)."""
    trainer.state.save_to_json(os.path.join(task_dir, "trainer_state.json"))
    for name in os.listdir(task_dir):
        if name.startswith(f"{PREFIX_CHECKPOINT_DIR}-") and os.path.isdir(os.path.join(task_dir, name)):
            shutil.rmtree(os.path.join(task_dir, name))


def _replace_export(model: Any, task: str, directory: str, tokenizer: Any) -> None:
    """Export `task` to `directory`, replacing this function's own earlier export there (a rerun into the same output
    directory, as the command line allows): the new export is complete before the old one is removed."""
    fresh = directory + ".new"
    if os.path.isdir(fresh):
        shutil.rmtree(fresh)  # left by a run killed between the two steps below
    model.export_task(task, fresh, tokenizer=tokenizer)
    if os.path.isdir(directory):
        shutil.rmtree(directory)
    os.rename(fresh, directory)


def _task_args(
    args: MultiTaskTrainingArguments,
    output_dir: str,
    task: str,
    max_steps: int,
    eval_steps: int,
    learning_rate: float | None,
    spec: TaskSpec | None,
    warmup_steps: int | None = None,
) -> MultiTaskTrainingArguments:
    """The run's arguments for one task's fine-tuning: own budget, warm-up and output, selection on the task's
    `main_metric` (its direction is `greater_is_better`)."""
    changes = dict(
        output_dir=output_dir,
        max_steps=max_steps,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=1,
        logging_steps=eval_steps,
        load_best_model_at_end=spec is not None,
        metric_for_best_model=f"eval_{task}_{spec.main_metric}" if spec else None,
        greater_is_better=spec.greater_is_better if spec else None,
        mtl_method="equal",
        mtl_method_options={},
        async_kd=False,
        step_composition="one_task",
        diagnostics_steps=0,
        push_to_hub=False,
        report_to="none",
        end_task=None,
        early_stopping_patience=0,  # the per-task runs select and stop on their own task (finetune_patience)
        resume_from_checkpoint=None,
        warmup_steps=warmup_steps if warmup_steps is not None else round(FINETUNE_WARMUP * max_steps),
    )
    if learning_rate is not None:
        changes["learning_rate"] = learning_rate
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init}
    # no async-KD here: its options go back to their defaults (they would do nothing)
    values.update(
        {f.name: f.default for f in dataclasses.fields(args) if f.name.startswith("kd_") and f.default is not dataclasses.MISSING}
    )
    values.update(changes)
    return type(args)(**values)
