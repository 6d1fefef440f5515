"""End-task aware training (TARTAN) in the trainer: end-task options, the held-out dev slice and the dev loss.

The weighting methods themselves are `weighting/mt_tartan.py` and `weighting/meta_tartan.py`; this module is
what the trainer needs around them:

- `weighting_options`: the method's options with `end_tasks` filled from `args.end_task`;
- `end_task_selection`: the end task's selection score as `metric_for_best_model` (best checkpoints, early
  stopping) when the user named none;
- `carve_dev_slices`: META-TARTAN's dev-head data, held out of each end task's *training* set (seeded);
- `DevObjective`: each step's dev-head loss on a batch of that slice — a pure function of the step, so a
  resumed run draws the same batches.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
import numpy as np
import torch

from .data import carve_validation_split, num_template_views
from .losses import task_loss
from .tasks import TaskSpec
from .weighting import get_weighting

logger = logging.getLogger(__name__)

_DEV_SALT = 0xDE7


def weighting_options(args: Any) -> dict[str, Any]:
    """`args.mtl_method_options`, plus `end_tasks` from `args.end_task` for methods that use end tasks."""
    options = dict(args.mtl_method_options)
    if get_weighting(args.mtl_method).uses_end_tasks and "end_tasks" not in options:
        options["end_tasks"] = list(args.end_tasks)
    return options


def check_end_tasks(end_tasks: Sequence[str], task_names: Sequence[str]) -> None:
    """Every end task is one of the trained tasks."""
    unknown = [t for t in end_tasks if t not in task_names]
    if unknown:
        raise ValueError(f"end_task: task(s) {unknown} are not trained; tasks: {list(task_names)}.")


def end_task_selection(args: Any, specs: Mapping[str, TaskSpec]) -> None:
    """With one end task and no `metric_for_best_model`, select (best checkpoint, early stopping) on its score."""
    check_end_tasks(args.end_tasks, list(specs))
    if len(args.end_tasks) != 1 or getattr(args, "metric_for_best_model_given", args.metric_for_best_model is not None):
        return
    spec = specs[args.end_tasks[0]]
    args.metric_for_best_model = f"{spec.name}_{spec.main_metric}"
    args.greater_is_better = spec.greater_is_better
    logger.info("end_task %s: best checkpoints and early stopping select on eval_%s", spec.name, args.metric_for_best_model)


def carve_dev_slices(
    train: Mapping[str, datasets.Dataset],
    end_tasks: Sequence[str],
    fraction: float,
    max_examples: int,
    seed: int,
) -> tuple[dict[str, datasets.Dataset], dict[str, datasets.Dataset]]:
    """(training sets without the dev slices, the dev slices): `fraction` of each end task's training set (at most
    `max_examples`), drawn with `seed`. The slices are never trained on by the task heads."""
    train, dev = dict(train), {}
    for task in end_tasks:
        if task not in train:
            raise ValueError(f"meta_tartan: end task {task!r} has no training set.")
        if "labels" not in train[task].column_names:
            raise ValueError(
                f"meta_tartan: end task {task!r} has no labels (an MLM task?); its dev head needs a supervised "
                "end task. Use mt_tartan for an MLM end task."
            )
        if num_template_views(train[task]) > 1:
            raise ValueError(
                f"meta_tartan: end task {task!r} has a prompt-template pool, whose views cannot be split "
                "into a dev slice: use meta_tartan without prompt templates on the end task, or mt_tartan."
            )
        train[task], dev[task] = carve_validation_split(train[task], fraction, max_examples, seed)
        logger.info("meta_tartan: %d of task %s's training examples train its dev head (held out of training)", len(dev[task]), task)
    return train, dev


class DevObjective:
    """META-TARTAN's dev-head loss: each end task's dev head on a batch of its held-out slice, summed.

    The batch of micro-batch `m` of step `s` on rank `r` is `batch_size` rows (without replacement) drawn by a
    generator seeded with `(seed, s, m, r)`: identical after a resume (a checkpoint falls between steps), and
    different on each rank, so averaging the dev gradient across ranks averages over more held-out data.
    """

    def __init__(
        self,
        slices: Mapping[str, datasets.Dataset],
        specs: Mapping[str, TaskSpec],
        collator: Any,
        batch_size: int,
        seed: int,
        rank: int = 0,
    ) -> None:
        pairs = sorted(task for task in slices if specs[task].is_bi_encoder)
        if pairs:
            raise ValueError(
                f"META-TARTAN's dev heads read one pooled sequence per example; the bi-encoder end task(s) {pairs} "
                "encode two: use them as cross-encoders, or another method."
            )
        self.slices, self.specs, self.collator = dict(slices), specs, collator
        self.batch_size, self.seed, self.rank = batch_size, seed, rank
        self._step, self._micro = -1, 0

    def batch(self, task: str, step: int, micro: int = 0) -> dict[str, torch.Tensor]:
        data = self.slices[task]
        rng = np.random.default_rng([_DEV_SALT, self.seed, step, micro, self.rank, list(self.slices).index(task)])
        rows = np.sort(rng.choice(len(data), size=min(self.batch_size, len(data)), replace=False))
        columns = [c for c in ("input_ids", "attention_mask", "token_type_ids", "labels", "task_ids") if c in data.column_names]
        features = data.select(rows).select_columns(columns)
        return self.collator([features[i] for i in range(len(features))])

    def loss(self, model: Any, dev_heads: torch.nn.ModuleDict, step: int, device: torch.device) -> torch.Tensor:
        """Sum over end tasks of the dev head's loss on the batch of this micro-batch of step `step` (through the
        shared encoder); successive calls within one step are successive micro-batches."""
        self._micro = self._micro + 1 if step == self._step else 0
        self._step = step
        total = None
        for task in self.slices:
            batch = {k: v.to(device) for k, v in self.batch(task, step, self._micro).items()}
            labels = batch.pop("labels")
            batch.pop("task_ids", None)
            batch.pop("example_ids", None)
            with model._task_route(task):  # the end task's own adapter / unshared layers, as its training forward
                outputs = model.encoder(**batch, return_dict=True)
            pooled = model.dropout(model.pool(outputs, batch.get("attention_mask"), batch.get("input_ids"), task))
            loss = task_loss(dev_heads[task](pooled), labels, self.specs[task].is_regression)
            total = loss if total is None else total + loss
        assert total is not None, "DevObjective needs at least one end task's slice"
        return total
