"""A converged task's soft labels: one table, filled all at once or row by row, one file format.

When a task converges, its teacher (the best snapshot, the weight average of its top-k snapshots,
or a prediction ensemble of them: `build_teacher`) gives every training example a row of logits.
`SoftLabels` holds them as one ``[num_examples, num_outputs]`` float32 table in which a NaN row is
not labelled yet:

- ``kd_soft_labels="precompute"`` (the paper): `fill` runs the teacher over the whole training set
  at the moment of convergence;
- ``kd_soft_labels="on_demand"``: `lookup` labels each row the first time a training batch draws it,
  so rows never drawn again cost nothing and every rank of a multi-process run labels its own batches;
- ``kd_soft_labels="online"``: no table at all: `lookup` labels every batch as it is drawn (an online teacher), so
  memory does not grow with the task's size (a streamed task, `hf_async_mtl.streaming`); the file keeps the teacher.

Both give the same numbers (the teacher runs on the same rows in eval mode without gradients) and leave
the training's random numbers alone (the precomputing pass's loader has its own generator). The
teacher reuses the training model's modules through `torch.func.functional_call` with the teacher's
tensors (no second model); its tensors are kept only while some row is missing. `save` writes one
safetensors file (the table, the teacher's tensors while needed, and metadata with a fingerprint of
the training set, so labels are never paired with other data); `load` refuses a file of another task
or of other training data.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

import torch
from safetensors import SafetensorError, safe_open

from .losses import ensemble_teacher_outputs
from .options import ENSEMBLE_TYPES
from .snapshots import ParameterSnapshot, average_snapshots
from .storage import save_safetensors_atomic

SOFT_LABELS_FORMAT = "hf_async_mtl.soft_labels.v2"
_TABLE_KEY = "table"


def build_teacher(snapshots: Sequence[ParameterSnapshot], ensemble: str = "parameters") -> list[dict[str, torch.Tensor]]:
    """The teacher's tensor dict(s) from a task's best snapshots (best first).

    One snapshot: its tensors. Several: their element-wise mean (``"parameters"``, one teacher) or each
    of them (``"predictions"``, a prediction ensemble: soft labels are the mean probability / output).
    """
    if not snapshots:
        raise ValueError("build_teacher needs at least one snapshot.")
    if ensemble not in ENSEMBLE_TYPES:
        raise ValueError(f"ensemble must be one of {ENSEMBLE_TYPES}, got {ensemble!r}.")
    if len(snapshots) == 1:
        return [dict(snapshots[0].tensors())]
    if ensemble == "predictions":
        return [dict(snapshot.tensors()) for snapshot in snapshots]
    return [average_snapshots(snapshots)]


class SoftLabels:
    """Soft labels (teacher logits) of one converged task's training set.

    Args:
        task: The task's name.
        teacher: One tensor dict per teacher (parameter/buffer name → tensor, see `build_teacher`);
            may be empty only when `table` is complete.
        is_regression: Ensemble rule: mean output (regression) or mean probability (classification).
        num_examples: Rows of the task's training set.
        fingerprint: `dataset_fingerprint` of that training set.
        table: Rows labelled so far (NaN = missing), e.g. from a checkpoint.
        metadata: Strings stored with the file (e.g. the teacher's steps).
        online: Keep no table: label every batch as it is drawn (`num_examples` and `fingerprint` are not checked).
    """

    def __init__(
        self,
        task: str,
        teacher: Sequence[Mapping[str, torch.Tensor]],
        *,
        is_regression: bool,
        num_examples: int,
        fingerprint: str,
        table: torch.Tensor | None = None,
        metadata: Mapping[str, str] | None = None,
        online: bool = False,
    ) -> None:
        self.online = online
        if online and (table is not None or not teacher):
            raise ValueError(f"Task {task!r}: online soft labels keep no table and need the teacher's tensors.")
        if num_examples < 1 and not online:
            raise ValueError(f"Task {task!r}: soft labels need at least one training example, got {num_examples}.")
        if table is not None and (table.dim() != 2 or table.shape[0] != num_examples):
            raise ValueError(f"Task {task!r}: soft-label table of shape {tuple(table.shape)} for {num_examples} examples.")
        self.task = task
        self.is_regression = is_regression
        self.num_examples = num_examples
        self.fingerprint = fingerprint
        self.metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
        self.table: torch.Tensor | None = None if table is None else table.float()
        # self.table is set whenever table is.
        self.num_labelled = 0 if table is None else int((~torch.isnan(cast(torch.Tensor, self.table)[:, 0])).sum())
        if not teacher and not self.complete:
            raise ValueError(f"Task {task!r}: soft labels with missing rows need the teacher's tensors.")
        # Once every row is labelled the teacher is not needed any more.
        self._teacher: list[dict[str, torch.Tensor]] | None = None if self.complete else [dict(t) for t in teacher]
        self._device_teacher: list[dict[str, torch.Tensor]] | None = None
        self.seconds = 0.0  # time spent labelling, this process

    @property
    def complete(self) -> bool:
        """Whether every training example has its soft label (the teacher's tensors are then freed); never online."""
        return not self.online and self.num_labelled == self.num_examples

    @property
    def num_teachers(self) -> int:
        """Teachers still held (0 once the table is complete)."""
        return len(self._teacher or [])

    def lookup(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor], example_ids: torch.Tensor) -> torch.Tensor:
        """Soft labels of the batch's rows (`example_ids` index the task's training set), labelling missing rows first.

        `model` is the (unwrapped) training model and `batch` its inputs for these rows.
        """
        ids = example_ids.detach().cpu().long().view(-1)
        if self.online:
            return self._label(model, batch, torch.ones_like(ids, dtype=torch.bool))
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_examples):
            raise IndexError(f"Task {self.task!r}: example id out of range for {self.num_examples} training examples.")
        missing = torch.ones_like(ids, dtype=torch.bool) if self.table is None else torch.isnan(self.table[ids, 0])
        if bool(missing.any()):
            self._store(ids[missing], self._label(model, batch, missing))
        return cast(torch.Tensor, self.table)[ids]  # _store has built the table when a row was missing

    def fill(self, model: torch.nn.Module, *views: Iterable[tuple[torch.Tensor, Mapping[str, torch.Tensor]]]) -> None:
        """Label every row given by `batches` of `(example_ids, model inputs)` (the precomputed mode).

        Several iterables are several views of the same rows (a prompt-template pool): each row's soft
        label is the ensemble of its views' outputs (`ensemble_teacher_outputs`: mean probability, or
        mean prediction). Raises if a row of the training set is still missing afterwards.
        """
        if not views:
            raise ValueError("fill needs the batches of at least one view.")
        if len(views) == 1:
            for ids, batch in views[0]:
                ids = ids.detach().cpu().long().view(-1)
                self._store(ids, self._label(model, batch, torch.ones_like(ids, dtype=torch.bool)))
        else:
            tables: list[torch.Tensor | None] = []
            for batches in views:
                table: torch.Tensor | None = None
                for ids, batch in batches:
                    ids = ids.detach().cpu().long().view(-1)
                    outputs = self._label(model, batch, torch.ones_like(ids, dtype=torch.bool))
                    if table is None:
                        table = torch.full((self.num_examples, outputs.shape[-1]), float("nan"))
                    table[ids] = outputs
                tables.append(table)
            if any(t is None or torch.isnan(t).any() for t in tables):
                raise ValueError(f"Task {self.task!r}: a template view did not cover all {self.num_examples} rows.")
            # No table is None here (checked just above).
            self._store(torch.arange(self.num_examples), ensemble_teacher_outputs(cast(list[torch.Tensor], tables), self.is_regression))
        if not self.complete:
            raise ValueError(f"Task {self.task!r}: the labelling pass covered {self.num_labelled} of {self.num_examples} rows.")

    def _store(self, ids: torch.Tensor, outputs: torch.Tensor) -> None:
        start = time.perf_counter()
        if not torch.isfinite(outputs).all():
            raise ValueError(f"Task {self.task!r}: the teacher gave non-finite outputs; refusing to distill from them.")
        if self.table is None:
            self.table = torch.full((self.num_examples, outputs.shape[-1]), float("nan"))
        # Count only the rows new to the table (a row may appear twice in one batch): no scan of the whole table.
        new_rows = ids[torch.isnan(self.table[ids, 0])]
        self.table[ids] = outputs
        self.num_labelled += int(torch.unique(new_rows).numel())
        if self.complete:
            self._teacher = self._device_teacher = None  # every row is known: the teacher is not needed
        self.seconds += time.perf_counter() - start

    @torch.no_grad()
    def _label(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        if self._teacher is None:
            raise RuntimeError(f"Task {self.task!r}: the teacher's tensors were released.")
        start = time.perf_counter()
        device = next(model.parameters()).device
        if self._device_teacher is None:
            self._device_teacher = [{k: v.to(device) for k, v in state.items()} for state in self._teacher]
        selected = rows.to(device)
        inputs = {k: v.to(device)[selected] for k, v in batch.items() if isinstance(v, torch.Tensor)}
        was_training = model.training
        model.eval()
        try:
            outputs = [
                torch.func.functional_call(model, state, args=(), kwargs=inputs, strict=False).logits.float().cpu()
                for state in self._device_teacher
            ]
        finally:
            model.train(was_training)
        logits = outputs[0] if len(outputs) == 1 else ensemble_teacher_outputs(outputs, self.is_regression)
        self.seconds += time.perf_counter() - start
        return logits.reshape(int(rows.sum()), -1)

    # ---- persistence ----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Atomically write the labelled rows and (while needed) the teacher's tensors to `path`."""
        tensors: dict[str, torch.Tensor] = {}
        if self.table is not None:
            tensors[_TABLE_KEY] = self.table.contiguous()
        for position, state in enumerate(self._teacher or []):
            for name, tensor in state.items():
                tensors[f"teacher{position}/{name}"] = tensor.detach().cpu().contiguous()
        metadata = {
            **self.metadata,
            "format": SOFT_LABELS_FORMAT,
            "task": self.task,
            "fingerprint": self.fingerprint,
            "num_examples": str(self.num_examples),
            "is_regression": json.dumps(self.is_regression),
            "num_teachers": str(self.num_teachers),
            "seconds": repr(self.seconds),
            "online": json.dumps(self.online),
        }
        save_safetensors_atomic(path, tensors, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike, *, task: str, fingerprint: str) -> SoftLabels:
        """Read a file written by `save`, refusing one of another task or of other training data."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Soft-label file {path!r} does not exist.")
        try:
            with safe_open(path, framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
                if metadata.get("format") != SOFT_LABELS_FORMAT:
                    raise ValueError(f"{path}: not a soft-label file (format {metadata.get('format')!r}, expected {SOFT_LABELS_FORMAT!r}).")
                if metadata.get("task") != task:
                    raise ValueError(f"{path}: holds task {metadata.get('task')!r}, expected {task!r}.")
                if metadata.get("fingerprint") != fingerprint:
                    raise ValueError(
                        f"{path}: computed on other training data for task {task!r} (fingerprint mismatch); "
                        "resume with the training set the checkpoint was made with."
                    )
                table = handle.get_tensor(_TABLE_KEY) if _TABLE_KEY in handle.keys() else None
                teacher: list[dict[str, torch.Tensor]] = [{} for _ in range(int(metadata["num_teachers"]))]
                for key in handle.keys():
                    if key.startswith("teacher"):
                        position, name = key[len("teacher") :].split("/", 1)
                        teacher[int(position)][name] = handle.get_tensor(key)
        except SafetensorError as error:
            raise ValueError(f"{path}: not a readable safetensors file: {error}") from error
        own = ("format", "task", "fingerprint", "num_examples", "is_regression", "num_teachers", "seconds", "online")
        try:
            labels = cls(
                task,
                teacher,
                is_regression=json.loads(metadata["is_regression"]),
                num_examples=int(metadata["num_examples"]),
                fingerprint=fingerprint,
                table=table,
                metadata={k: v for k, v in metadata.items() if k not in own},
                online=json.loads(metadata.get("online", "false")),
            )
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
        labels.seconds = float(metadata.get("seconds", 0.0))
        return labels
