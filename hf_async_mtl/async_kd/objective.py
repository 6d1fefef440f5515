"""`DistillationObjective`: a converged task's objective — its teacher's soft labels instead of its true labels."""

from __future__ import annotations

from typing import Any

import torch

from ..data import EXAMPLE_IDS_COLUMN
from ..objectives import HardLabelObjective, StepContext
from ..tasks import TaskSpec
from .losses import distillation_loss
from .options import AsyncKDOptions
from .soft_labels import SoftLabels


class DistillationObjective(HardLabelObjective):
    """Trains a task against `soft_labels` (KD loss, `AsyncKDOptions.loss` / `temperature` / `alpha`).

    Training batches look their rows up in the soft-label table by example id (labelling missing rows with the
    teacher first, in the on-demand mode). Evaluation batches keep the hard-label loss: the reported evaluation loss
    stays comparable with the other tasks' and with the run before convergence. A training batch without example ids
    is an error (it would otherwise train on hard labels, silently).
    """

    def __init__(
        self, spec: TaskSpec, soft_labels: SoftLabels, options: AsyncKDOptions, teacher_host: torch.nn.Module | None = None
    ) -> None:
        super().__init__(spec)
        self.soft_labels = soft_labels
        self.options = options
        self.teacher_host = teacher_host  # where missing rows are labelled instead of the training model (FSDP)

    def __call__(self, model: torch.nn.Module, batch: dict[str, Any], task: str, context: StepContext) -> tuple[torch.Tensor, Any]:
        example_ids = batch.get(EXAMPLE_IDS_COLUMN)
        if not model.training:
            return super().__call__(model, batch, task, context)
        if example_ids is None:
            raise RuntimeError(
                f"Task {task!r} trains by distillation, but its training batch has no {EXAMPLE_IDS_COLUMN!r} column to look "
                "its soft labels up by: keep the column in the data collator (MultiTaskDataCollator keeps it) and in "
                "the trainer's signature columns (MultiTaskTrainer adds it)."
            )
        labels = batch.pop("labels", None)
        batch.pop(EXAMPLE_IDS_COLUMN)
        targets = self.soft_labels.lookup(self.teacher_host or context.model, batch, example_ids)
        outputs = self.forward(model, batch, task)
        loss = distillation_loss(
            outputs.logits,
            targets.to(outputs.logits.device),
            labels,
            is_regression=self.spec.is_regression,
            loss_type=self.options.loss,
            temperature=self.options.temperature,
            alpha=self.options.alpha,
            label_range=self.spec.loss_label_range,
        )
        return loss, outputs
