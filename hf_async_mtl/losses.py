"""The hard-label loss of one task (no transformers needed)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .tasks import as_column


def task_loss(logits: torch.Tensor, labels: torch.Tensor, is_regression: bool) -> torch.Tensor:
    """Hard-label loss of one task: mean squared error for regression, cross-entropy otherwise (float32 math)."""
    if is_regression:
        return F.mse_loss(as_column(logits.reshape(logits.shape[0], -1), "regression logits").float(), labels.reshape(-1).float())
    return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), labels.view(-1).long())
