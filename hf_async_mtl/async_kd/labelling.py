"""`TeacherLabeller`: runs a converged task's teacher over its training set (the precomputed mode's pass)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..data import MODEL_INPUT_COLUMNS, TASK_IDS_COLUMN, MultiTaskDataset, length_order
from .soft_labels import SoftLabels


class TeacherLabeller:
    """Labels a task's whole training set with its teacher; in multi-process runs the main process labels and the
    others read its file (`output_dir/soft_labels/<task>.safetensors`).

    Args:
        train_dataset: The run's training data (`template_view` gives a task's rows).
        collator: Pads a list of rows into a batch.
        device: Where the teacher runs (the training device).
        batch_size: Rows per labelling batch (batches are length-sorted, so large ones waste little padding).
        output_dir: The run's output directory.
        is_main_process: Whether this process labels (the others wait and read).
        wait_for_everyone: A barrier across processes (a no-op in one process).
        teacher_host: An unsharded copy of the model (on CPU) that the teacher's tensors run in, instead of the
            training model: under FSDP the training model's forward is a collective over every rank and its
            parameters are shards, so one process cannot run a teacher in it. It is moved to `device` while it labels.
    """

    def __init__(
        self,
        train_dataset: MultiTaskDataset,
        collator: Callable[[list], dict],
        device: Any,
        batch_size: int,
        output_dir: str,
        is_main_process: bool = True,
        wait_for_everyone: Callable[[], None] = lambda: None,
        teacher_host: torch.nn.Module | None = None,
    ) -> None:
        self.train_dataset = train_dataset
        self.collator = collator
        self.device = device
        self.batch_size = batch_size
        self.output_dir = output_dir
        self.is_main_process = is_main_process
        self.wait_for_everyone = wait_for_everyone
        self.teacher_host = teacher_host

    def teacher_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module a teacher runs in: `model`, or the teacher host moved to the training device."""
        return model if self.teacher_host is None else self.teacher_host.to(self.device)

    def label(self, soft_labels: SoftLabels, model: torch.nn.Module, average_templates: bool = False) -> SoftLabels:
        """`soft_labels` with every row filled (main process), or read from the main process's file (others).

        `average_templates`: a task with a prompt-template pool is labelled through each template and the rows
        averaged (`TaskSpec.prompt_eval="average"`); otherwise through its first template.
        """
        task = soft_labels.task
        path = os.path.join(self.output_dir, "soft_labels", f"{task}.safetensors")
        if self.is_main_process:
            views = self.train_dataset.num_templates[task] if average_templates else 1
            soft_labels.fill(self.teacher_model(model), *[self.batches(task, template) for template in range(views)])
            if self.teacher_host is not None:
                self.teacher_host.to("cpu")  # a full copy of the model: off the device between passes
            soft_labels.save(path)
        self.wait_for_everyone()
        return soft_labels if self.is_main_process else SoftLabels.load(path, task=task, fingerprint=soft_labels.fingerprint)

    def batches(self, task: str, template: int = 0) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """(example ids, inputs) over the task's training set, longest first (less padding), on the training device."""
        dataset = self.train_dataset.template_view(task, template)
        # MODEL_INPUT_COLUMNS: a bi-encoder pair task's text b (`pair_input_ids`, ...) too.
        columns = [c for c in (*MODEL_INPUT_COLUMNS, TASK_IDS_COLUMN) if c in dataset.column_names]
        order = torch.from_numpy(length_order(dataset))
        # A private generator: iterating a DataLoader draws its base seed from torch's global RNG otherwise,
        # and the pass would shift every dropout mask after it (an async-KD run would then differ from the
        # same run with on-demand labels, or from equal weighting, by randomness as well as by method).
        loader = DataLoader(
            dataset.select(order.tolist()).select_columns(columns),
            batch_size=self.batch_size,
            collate_fn=self.collator,
            generator=torch.Generator(),
        )
        start = 0
        for batch in loader:
            size = int(batch["input_ids"].shape[0])
            yield order[start : start + size], {k: v.to(self.device) for k, v in batch.items()}
            start += size
