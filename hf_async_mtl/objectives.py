"""Per-task objectives: what one task-homogeneous batch is trained against.

The trainer holds one `TaskObjective` per task and asks it for the loss of that task's batch; it knows no
objective by name. By default a supervised task trains on its hard labels (`HardLabelObjective`: cross-entropy,
or MSE for regression) and an MLM task on its masked tokens (`MaskedLmObjective`). Other objectives plug in by
replacing a task's entry, e.g. async-KD's `DistillationObjective` (`hf_async_mtl.async_kd.objective`) once the
task has converged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .data import EXAMPLE_IDS_COLUMN, TASK_IDS_COLUMN
from .losses import task_loss
from .mlm import MlmMasker
from .tasks import TaskSpec


@dataclass(frozen=True)
class StepContext:
    """Where a batch comes from: what an objective may need beyond the batch itself.

    Attributes:
        model: The unwrapped model (for objectives that run it themselves, e.g. a teacher sharing its modules).
        step: The optimizer step in progress (`TrainerState.global_step`).
        seed: The run's seed.
        rank: This process's index.
    """

    model: torch.nn.Module
    step: int
    seed: int
    rank: int = 0


class TaskObjective:
    """The loss of one task's batch. Subclasses implement `__call__`."""

    def __call__(self, model: torch.nn.Module, batch: dict[str, Any], task: str, context: StepContext) -> tuple[torch.Tensor, Any]:
        """(loss, model outputs) of `batch` (a dict the objective may consume: labels and example ids are popped)."""
        raise NotImplementedError

    @staticmethod
    def forward(model: torch.nn.Module, batch: Mapping[str, Any], task: str, **extra: Any) -> Any:
        # The model gets the task's name, not its ids: reading a tensor's value inside a compiled forward
        # (`--torch_compile`) would break the graph at every step.
        return model(**{k: v for k, v in batch.items() if k != TASK_IDS_COLUMN}, task_name=task, **extra)


class HardLabelObjective(TaskObjective):
    """The task's own labels: cross-entropy, or MSE for a regression task (on labels rescaled to [0, 1] for a cosine pair
    head, `TaskSpec.loss_label_range`)."""

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec

    def __call__(self, model: torch.nn.Module, batch: dict[str, Any], task: str, context: StepContext) -> tuple[torch.Tensor, Any]:
        labels = batch.pop("labels", None)
        batch.pop(EXAMPLE_IDS_COLUMN, None)
        outputs = self.forward(model, batch, task)
        return task_loss(outputs.logits, labels, self.spec.is_regression, self.spec.loss_label_range), outputs


class MaskedLmObjective(TaskObjective):
    """Masked-token prediction on an MLM task's text, masked here with a seed that is a pure function of the step.

    Training: (seed, step, rank, task, first example) — resumable and distinct per micro-batch; evaluation:
    (seed, the batch's tokens) — the same masks at every evaluation. The outputs hold the logits of the masked
    positions only, in row-major order.
    """

    def __init__(self, masker: MlmMasker) -> None:
        self.masker = masker

    def __call__(self, model: torch.nn.Module, batch: dict[str, Any], task: str, context: StepContext) -> tuple[torch.Tensor, Any]:
        _, outputs = self.masked_forward(model, batch, task, context)
        return outputs.loss, outputs

    def masked_forward(self, model: torch.nn.Module, batch: dict[str, Any], task: str, context: StepContext) -> tuple[torch.Tensor, Any]:
        """(labels: the original ids at the masked positions, -100 elsewhere; outputs) of `batch`, masked in place."""
        batch.pop("labels", None)
        example_ids = batch.pop(EXAMPLE_IDS_COLUMN, None)
        batch["input_ids"], labels = self.masker(batch["input_ids"], self.seed(model.training, batch, example_ids, context))
        return labels, self.forward(model, batch, task, labels=labels)

    @staticmethod
    def seed(training: bool, batch: Mapping[str, Any], example_ids: Any, context: StepContext) -> int:
        """The seed of a batch's masks."""
        task_id = int(batch[TASK_IDS_COLUMN].view(-1)[0])
        if training:
            first = int(example_ids.view(-1)[0]) if example_ids is not None else 0
            key = [context.seed, context.step + 1, context.rank, task_id, first]
        else:
            key = [context.seed, 0, task_id, int(batch["input_ids"].sum()), int(batch["input_ids"].shape[0])]
        return int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0])


def default_objectives(specs: Sequence[TaskSpec], masker: MlmMasker | None = None) -> dict[str, TaskObjective]:
    """Hard labels for every supervised task, masked tokens for every MLM task (which then needs `masker`)."""
    objectives: dict[str, TaskObjective] = {}
    for spec in specs:
        if spec.is_mlm:
            if masker is None:
                raise ValueError(f"Task {spec.name!r} is an MLM task: its objective needs an MlmMasker (a tokenizer with a mask token).")
            objectives[spec.name] = MaskedLmObjective(masker)
        else:
            objectives[spec.name] = HardLabelObjective(spec)
    return objectives
