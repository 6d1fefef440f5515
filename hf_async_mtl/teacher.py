"""A converged task's teacher that labels training examples the first time they are drawn.

The paper's recipe (and `kd_soft_labels="precompute"`, the default) runs the best parameters over
the task's whole training set at the moment it converges. `kd_soft_labels="on_demand"` gives the
same soft labels, but computes each example's row the first time a training batch draws it after
the switch: a task that converges late sees only part of its training set again, so part of the
labelling pass is never needed, and in multi-process training every rank labels its own batches
instead of one rank labelling everything while the others wait. The price: the teacher's
parameters stay in memory (on the training device) until every row is labelled or training ends.

The teacher reuses the training model's modules through `torch.func.functional_call` with the
snapshot's tensors (no second model), in eval mode and without gradients; the rows computed so far
live in a ``[num_examples, num_outputs]`` table (NaN = not labelled yet), saved in checkpoints with
the teacher's tensors so a resumed run continues with the same labels.
"""

from __future__ import annotations

import json
import os
import time
from typing import Mapping, Sequence

import torch
from safetensors import safe_open

from .distill import ensemble_teacher_outputs, save_safetensors_atomic

TEACHER_FORMAT = "hf_async_mtl.on_demand_teacher.v1"
_TABLE_KEY = "table"


class OnDemandTeacher:
    """Soft labels of one converged task, computed lazily from its teacher parameters.

    Args:
        task: The task's name.
        states: One tensor dict per teacher (parameter/buffer name → tensor, as captured by a
            `ParameterSnapshot`); several teachers form a prediction ensemble.
        is_regression: Ensemble rule: mean output (regression) or mean probability (classification).
        num_examples: Rows of the task's training set.
        fingerprint: `dataset_fingerprint` of that training set (checked when loading a checkpoint).
    """

    def __init__(self, task: str, states: Sequence[Mapping[str, torch.Tensor]], *, is_regression: bool,
                 num_examples: int, fingerprint: str, table: torch.Tensor | None = None) -> None:
        if table is not None and (table.dim() != 2 or table.shape[0] != num_examples):
            raise ValueError(f"Task {task!r}: soft-label table of shape {tuple(table.shape)} for {num_examples} examples.")
        self.task = task
        self.is_regression = is_regression
        self.num_examples = num_examples
        self.fingerprint = fingerprint
        self.table = table
        self.num_labelled = 0 if table is None else int((~torch.isnan(table[:, 0])).sum())
        if not states and not self.complete:
            raise ValueError(f"Task {task!r}: an on-demand teacher needs at least one parameter state.")
        # Once every row is labelled the parameters are not needed any more.
        self._states: list[dict[str, torch.Tensor]] | None = None if self.complete else [dict(s) for s in states]
        self._device_states: list[dict[str, torch.Tensor]] | None = None
        self.seconds = 0.0  # time spent labelling, this process

    @property
    def complete(self) -> bool:
        """Whether every training example has its soft label (the teacher's tensors are then freed)."""
        return self.num_labelled == self.num_examples

    def soft_labels(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor], example_ids: torch.Tensor) -> torch.Tensor:
        """Soft labels of the batch's rows (`example_ids` index the task's training set), labelling new rows first.

        `model` is the (unwrapped) training model; `batch` its inputs for these rows.
        """
        ids = example_ids.detach().cpu().long().view(-1)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_examples):
            raise IndexError(f"Task {self.task!r}: example id out of range for {self.num_examples} training examples.")
        missing = torch.ones_like(ids, dtype=torch.bool) if self.table is None else torch.isnan(self.table[ids, 0])
        if bool(missing.any()):
            start = time.perf_counter()
            outputs = self._label(model, batch, missing)
            if self.table is None:
                self.table = torch.full((self.num_examples, outputs.shape[-1]), float("nan"))
            new_ids = ids[missing]
            self.table[new_ids] = outputs
            self.num_labelled += int(torch.unique(new_ids).numel())  # a row may appear twice in one batch
            if self.complete:
                self._states = self._device_states = None  # every row is known: the parameters are not needed
            self.seconds += time.perf_counter() - start
        return self.table[ids]

    @torch.no_grad()
    def _label(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        if self._states is None:
            raise RuntimeError(f"Task {self.task!r}: the teacher's parameters were released.")
        device = next(model.parameters()).device
        if self._device_states is None:
            self._device_states = [{k: v.to(device) for k, v in state.items()} for state in self._states]
        selected = rows.to(device)
        inputs = {k: v[selected] for k, v in batch.items() if isinstance(v, torch.Tensor)}
        was_training = model.training
        model.eval()
        try:
            outputs = [
                torch.func.functional_call(model, state, args=(), kwargs=inputs, strict=False).logits.float().cpu()
                for state in self._device_states
            ]
        finally:
            model.train(was_training)
        logits = outputs[0] if len(outputs) == 1 else ensemble_teacher_outputs(outputs, self.is_regression)
        return logits.reshape(int(rows.sum()), -1)

    # ---- persistence ----------------------------------------------------------------------------

    def save(self, path: str) -> None:
        """Atomically write the labelled rows and (while needed) the teacher's tensors to `path`."""
        tensors: dict[str, torch.Tensor] = {}
        if self.table is not None:
            tensors[_TABLE_KEY] = self.table.contiguous()
        for position, state in enumerate(self._states or []):
            for name, tensor in state.items():
                tensors[f"teacher{position}/{name}"] = tensor.detach().cpu().contiguous()
        metadata = {
            "format": TEACHER_FORMAT, "task": self.task, "fingerprint": self.fingerprint,
            "num_examples": str(self.num_examples), "is_regression": json.dumps(self.is_regression),
            "num_teachers": str(len(self._states or [])), "seconds": repr(self.seconds),
        }
        save_safetensors_atomic(path, tensors, metadata)

    @classmethod
    def load(cls, path: str, *, task: str, fingerprint: str) -> "OnDemandTeacher":
        """Rebuild a teacher saved by `save`, refusing a file of another task or other training data."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"On-demand teacher file {path!r} does not exist.")
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != TEACHER_FORMAT:
                raise ValueError(f"{path}: not an on-demand teacher file (format {metadata.get('format')!r}).")
            if metadata.get("task") != task:
                raise ValueError(f"{path}: holds task {metadata.get('task')!r}, expected {task!r}.")
            if metadata.get("fingerprint") != fingerprint:
                raise ValueError(
                    f"{path}: computed on other training data for task {task!r} (fingerprint mismatch); "
                    "resume with the training set the checkpoint was made with."
                )
            table = handle.get_tensor(_TABLE_KEY) if _TABLE_KEY in handle.keys() else None
            states: list[dict[str, torch.Tensor]] = [{} for _ in range(int(metadata["num_teachers"]))]
            for key in handle.keys():
                if key.startswith("teacher"):
                    position, name = key[len("teacher"):].split("/", 1)
                    states[int(position)][name] = handle.get_tensor(key)
        try:
            teacher = cls(task, states, is_regression=json.loads(metadata["is_regression"]),
                          num_examples=int(metadata["num_examples"]), fingerprint=fingerprint, table=table)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
        teacher.seconds = float(metadata.get("seconds", 0.0))
        return teacher
