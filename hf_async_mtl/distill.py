"""Knowledge-distillation losses and on-disk soft labels for converged tasks.

After a task converges, its best parameters predict over the task's training set once; those
predictions (teacher *logits*, pre-softmax, so any temperature or an MSE-on-logits loss can be
applied later) are stored as soft labels and the task is trained from then on against them.

Soft-label files are safetensors files holding one float32 tensor ``soft_labels`` of shape
``[N, C]`` (``[N, 1]`` for regression) plus string metadata. The metadata carries a fingerprint of
the tokenised training set, so labels are never paired with a different dataset or ordering.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from datetime import datetime, timezone
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

SOFT_LABELS_KEY = "soft_labels"
SOFT_LABELS_FORMAT = "hf_async_mtl.soft_labels.v1"
_RESERVED_METADATA = ("format", "task", "num_examples", "fingerprint")
LOSS_TYPES = ("kl", "mse")


# ---------------------------------------------------------------------------- losses
def _check_temperature(temperature: float) -> None:
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")


def _check_same_shape(student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.shape != teacher.shape:
        raise ValueError(f"student shape {tuple(student.shape)} != teacher shape {tuple(teacher.shape)}.")


def kl_distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``T² · KL(softmax(teacher/T) ‖ softmax(student/T))``, averaged over the batch.

    The T² factor (Hinton et al., 2015) keeps gradient magnitudes comparable across temperatures.
    The teacher is detached: stored soft labels are targets, never trained.
    """
    _check_temperature(temperature)
    _check_same_shape(student_logits, teacher_logits)
    if student_logits.dim() != 2:
        raise ValueError(f"KL distillation expects [batch, classes] logits, got shape {tuple(student_logits.shape)}.")
    # Float32 math: half-precision log-softmax differences underflow for confident teachers.
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    # log_target=True avoids log(0) = -inf for teacher probabilities that underflow to zero.
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * (temperature**2)


def mse_logits_distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared error between student and (detached) teacher logits."""
    _check_same_shape(student_logits, teacher_logits)
    return F.mse_loss(student_logits.float(), teacher_logits.detach().float())


def _as_column(pred: torch.Tensor, what: str) -> torch.Tensor:
    if pred.dim() == 1:
        return pred
    if pred.dim() == 2 and pred.shape[1] == 1:
        return pred[:, 0]
    raise ValueError(f"{what} must have shape [N] or [N, 1] for regression, got {tuple(pred.shape)}.")


def regression_distillation_loss(student_pred: torch.Tensor, teacher_pred: torch.Tensor) -> torch.Tensor:
    """MSE between student and (detached) teacher regression outputs; ``[N]`` or ``[N, 1]`` each."""
    student = _as_column(student_pred, "student_pred")
    teacher = _as_column(teacher_pred, "teacher_pred")
    _check_same_shape(student, teacher)
    return F.mse_loss(student.float(), teacher.detach().float())


def distillation_loss(
    student_logits: torch.Tensor,
    soft_targets: torch.Tensor,
    hard_labels: torch.Tensor | None = None,
    *,
    is_regression: bool,
    loss_type: str = "kl",
    temperature: float = 1.0,
    alpha: float = 1.0,
) -> torch.Tensor:
    """``alpha · KD + (1 - alpha) · hard-label loss`` for a converged task.

    Args:
        student_logits: ``[N, C]`` logits (``[N]``/``[N, 1]`` predictions for regression).
        soft_targets: Stored teacher logits for the same examples.
        hard_labels: Gold labels; needed only when ``alpha < 1``.
        is_regression: Regression tasks always distil with MSE (``loss_type``/``temperature`` unused)
            and use MSE as hard-label loss; classification uses cross-entropy.
        loss_type: ``"kl"`` (temperature-scaled KL) or ``"mse"`` (MSE between logits).
        temperature: Softmax temperature for ``"kl"``.
        alpha: Weight of the KD term in ``[0, 1]``; ``1`` (pure KD) is the paper's setting.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}.")
    _check_temperature(temperature)
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}.")
    if alpha < 1.0 and hard_labels is None:
        raise ValueError(f"hard_labels are required when alpha < 1 (alpha={alpha}).")

    loss = student_logits.new_zeros((), dtype=torch.float32)
    if alpha > 0.0:
        if is_regression:
            kd = regression_distillation_loss(student_logits, soft_targets)
        elif loss_type == "kl":
            kd = kl_distillation_loss(student_logits, soft_targets, temperature)
        else:
            kd = mse_logits_distillation_loss(student_logits, soft_targets)
        loss = loss + alpha * kd
    if alpha < 1.0:
        assert hard_labels is not None
        if is_regression:
            hard = F.mse_loss(_as_column(student_logits, "student_logits").float(), hard_labels.reshape(-1).float())
        else:
            hard = F.cross_entropy(student_logits.float(), hard_labels.long())
        loss = loss + (1.0 - alpha) * hard
    return loss


def ensemble_teacher_outputs(outputs: Sequence[torch.Tensor], is_regression: bool) -> torch.Tensor:
    """Combine several teachers' outputs over the same rows into one set of soft labels.

    Classification: ``log(mean_k softmax(logits_k))``, logits whose softmax is the ensemble's mean
    probability (the usual prediction ensemble). Regression: the mean prediction.
    """
    if not outputs:
        raise ValueError("ensemble_teacher_outputs needs at least one teacher's outputs.")
    shapes = {tuple(o.shape) for o in outputs}
    if len(shapes) != 1:
        raise ValueError(f"Teacher outputs differ in shape: {sorted(shapes)}.")
    stacked = torch.stack([o.float() for o in outputs])
    if is_regression:
        return stacked.mean(dim=0)
    # logsumexp of log-probabilities minus log k: stable for confident teachers.
    return torch.logsumexp(F.log_softmax(stacked, dim=-1), dim=0) - math.log(len(outputs))


# ---------------------------------------------------------------------------- fingerprint
def dataset_fingerprint(input_ids: Sequence[Sequence[int]]) -> str:
    """SHA-256 hex digest of every example's token ids, in order.

    Each example is length-prefixed, so ``[[1, 2], [3]]`` and ``[[1], [2, 3]]`` differ; ids are
    hashed as little-endian int64 so lists, numpy arrays and CPU tensors give the same digest.
    """
    digest = hashlib.sha256(b"hf_async_mtl.dataset_fingerprint.v1")
    for index, example in enumerate(input_ids):
        ids = np.asarray(example)
        if ids.ndim != 1:
            raise ValueError(f"Example {index}: token ids must be one-dimensional, got shape {ids.shape}.")
        if ids.size and ids.dtype.kind not in "iu":
            raise ValueError(f"Example {index}: token ids must be integers, got dtype {ids.dtype}.")
        digest.update(np.int64(ids.size).astype("<i8").tobytes())
        digest.update(ids.astype("<i8", copy=False).tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------- atomic safetensors I/O
def save_safetensors_atomic(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Write a safetensors file so that `path` either holds the complete file or is untouched.

    The data goes to a temporary file in the same directory (same filesystem, so ``os.replace`` is
    atomic), which is fsynced and then renamed over `path`; on any error the temporary is removed.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp_path, metadata=dict(metadata or {}))
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


# ---------------------------------------------------------------------------- soft labels
def save_soft_labels(
    path: str | os.PathLike,
    soft_labels: torch.Tensor,
    *,
    task: str,
    fingerprint: str,
    metadata: Mapping[str, str | int | float] | None = None,
) -> None:
    """Atomically store a task's teacher logits with metadata identifying task and dataset.

    Args:
        path: Target ``.safetensors`` file.
        soft_labels: ``[N, C]`` teacher logits (``[N]`` or ``[N, 1]`` for regression).
        task: Task name; loading checks it.
        fingerprint: `dataset_fingerprint` of the training set the rows belong to.
        metadata: Extra entries (e.g. ``best_step``, ``best_metric``); stored as strings.
            ``created_at`` (UTC, ISO 8601) is added unless given.
    """
    if soft_labels.dim() == 1:
        soft_labels = soft_labels[:, None]
    if soft_labels.dim() != 2 or soft_labels.shape[0] == 0:
        raise ValueError(
            f"soft_labels for task {task!r} must be a non-empty [N, C] tensor, got {tuple(soft_labels.shape)}."
        )
    labels = soft_labels.detach().to(device="cpu", dtype=torch.float32).contiguous()
    if not torch.isfinite(labels).all():
        raise ValueError(
            f"soft_labels for task {task!r} contain non-finite values; refusing to store a broken teacher."
        )
    entries: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if key in _RESERVED_METADATA:
            raise ValueError(f"metadata key {key!r} is reserved (set by save_soft_labels itself).")
        if not isinstance(value, (str, int, float)):
            raise ValueError(f"metadata {key!r} must be a str, int or float, got {type(value).__name__}.")
        entries[str(key)] = str(value)
    entries.setdefault("created_at", datetime.now(timezone.utc).isoformat())
    entries.update(format=SOFT_LABELS_FORMAT, task=task, num_examples=str(labels.shape[0]), fingerprint=fingerprint)
    save_safetensors_atomic(path, {SOFT_LABELS_KEY: labels}, entries)


def load_soft_labels(path: str | os.PathLike, *, task: str, fingerprint: str) -> tuple[torch.Tensor, dict[str, str]]:
    """Load soft labels stored by `save_soft_labels`, checking they belong to `task` and the dataset.

    Returns:
        The float32 ``[N, C]`` tensor and the metadata dict (all values strings).

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: unreadable file, or task / fingerprint / number of rows not matching.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Soft-label file {path!r} does not exist.")
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            if SOFT_LABELS_KEY not in handle.keys():
                raise ValueError(f"Soft-label file {path!r} holds no {SOFT_LABELS_KEY!r} tensor.")
            labels = handle.get_tensor(SOFT_LABELS_KEY)
    except SafetensorError as error:
        raise ValueError(f"Soft-label file {path!r} is not a readable safetensors file: {error}") from error
    if metadata.get("format") != SOFT_LABELS_FORMAT:
        raise ValueError(
            f"Soft-label file {path!r} has format {metadata.get('format')!r}, expected {SOFT_LABELS_FORMAT!r}."
        )
    if metadata.get("task") != task:
        raise ValueError(f"Soft-label file {path!r} was written for task {metadata.get('task')!r}, not {task!r}.")
    if metadata.get("fingerprint") != fingerprint:
        raise ValueError(
            f"Soft-label file {path!r} was computed on a different training set (fingerprint "
            f"{metadata.get('fingerprint')!r} != {fingerprint!r}); recompute the soft labels."
        )
    if labels.dim() != 2 or metadata.get("num_examples") != str(labels.shape[0]):
        raise ValueError(
            f"Soft-label file {path!r} is inconsistent: tensor shape {tuple(labels.shape)} vs "
            f"num_examples={metadata.get('num_examples')!r}."
        )
    return labels, metadata


class SoftLabelStore:
    """Soft-label files of several tasks in one directory: ``<directory>/<task>.soft_labels.safetensors``."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = os.fspath(directory)

    def path(self, task: str) -> str:
        """File holding `task`'s soft labels."""
        if not task or os.sep in task or (os.altsep and os.altsep in task):
            raise ValueError(f"Task name {task!r} cannot be used as a file name.")
        return os.path.join(self.directory, f"{task}.soft_labels.safetensors")

    def exists(self, task: str) -> bool:
        """Whether soft labels have been stored for `task`."""
        return os.path.isfile(self.path(task))

    def save(self, task: str, soft_labels: torch.Tensor, *, fingerprint: str,
             metadata: Mapping[str, str | int | float] | None = None) -> str:
        """Store `task`'s soft labels (see `save_soft_labels`); returns the file path."""
        path = self.path(task)
        save_soft_labels(path, soft_labels, task=task, fingerprint=fingerprint, metadata=metadata)
        return path

    def load(self, task: str, *, fingerprint: str) -> tuple[torch.Tensor, dict[str, str]]:
        """Load `task`'s soft labels (see `load_soft_labels`)."""
        return load_soft_labels(self.path(task), task=task, fingerprint=fingerprint)
