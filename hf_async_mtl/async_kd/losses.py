"""Knowledge-distillation losses of converged tasks (pure functions, tested without a Trainer).

A converged task's teacher gives *logits* (pre-softmax, so any temperature or an MSE-on-logits loss
can be applied), and the task trains against them: `distillation_loss`. Several teachers combine
into one set of soft labels with `ensemble_teacher_outputs`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..bi_encoder import rescale_to_unit
from ..losses import task_loss
from ..tasks import as_column
from .options import LOSS_TYPES


# ---------------------------------------------------------------------------- losses
def _check_temperature(temperature: float) -> None:
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")


def _check_same_shape(student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.shape != teacher.shape:
        raise ValueError(f"student shape {tuple(student.shape)} != teacher shape {tuple(teacher.shape)}.")


def kl_distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
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


def regression_distillation_loss(student_pred: torch.Tensor, teacher_pred: torch.Tensor) -> torch.Tensor:
    """MSE between student and (detached) teacher regression outputs; ``[N]`` or ``[N, 1]`` each."""
    student = as_column(student_pred, "student_pred")
    teacher = as_column(teacher_pred, "teacher_pred")
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
    label_range: Sequence[float] | None = None,
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
        label_range: A cosine pair head's label range (`TaskSpec.loss_label_range`): both regression terms are
            taken on outputs and targets rescaled to [0, 1] by it, as the task's hard-label loss is, so the task's
            loss keeps its scale when it switches to distillation.
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
        if is_regression and label_range is not None:
            kd = regression_distillation_loss(rescale_to_unit(student_logits, label_range), rescale_to_unit(soft_targets, label_range))
        elif is_regression:
            kd = regression_distillation_loss(student_logits, soft_targets)
        elif loss_type == "kl":
            kd = kl_distillation_loss(student_logits, soft_targets, temperature)
        else:
            kd = mse_logits_distillation_loss(student_logits, soft_targets)
        loss = loss + alpha * kd
    if alpha < 1.0:
        assert hard_labels is not None
        loss = loss + (1.0 - alpha) * task_loss(student_logits, hard_labels, is_regression, label_range)
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
