"""The hard-label loss of one task (no transformers needed)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from .bi_encoder import cosine_similarity_loss
from .tasks import as_column


def task_loss(logits: torch.Tensor, labels: torch.Tensor, is_regression: bool, label_range: Sequence[float] | None = None) -> torch.Tensor:
    """Hard-label loss of one task: mean squared error for regression, cross-entropy otherwise (float32 math).

    `label_range` (`TaskSpec.loss_label_range`: a cosine pair head's): the regression MSE is taken on outputs and
    labels rescaled to [0, 1] by it, sentence-transformers' CosineSimilarityLoss convention (`bi_encoder`).
    """
    if is_regression:
        scores = as_column(logits.reshape(logits.shape[0], -1), "regression logits")
        if label_range is not None:
            return cosine_similarity_loss(scores, labels, label_range)
        return F.mse_loss(scores.float(), labels.reshape(-1).float())
    return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), labels.view(-1).long())
