"""Uncertainty weighting (UW).

Kendall, Gal, Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry and Semantics",
CVPR 2018. Each task gets a learnable log-variance `s_t = log sigma_t^2`; the combined loss is
`L = sum_t exp(-s_t) L_t + s_t`, the common simplified form of the paper's homoscedastic-uncertainty likelihood
(the `1/2` factors of the regression case are folded into `s_t`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .base import WeightingMethod
from .registry import register_weighting


@register_weighting
class UncertaintyWeighting(WeightingMethod):
    """`L = sum_t exp(-s_t) L_t + s_t` with learnable `s_t` (an `nn.Parameter`, initialised at 0).

    The trainer must add `method.parameters()` to its optimizer. `last_weights` are the precisions `exp(-s_t)`.
    Works with any subset of tasks per call (only the present tasks' terms are summed).

    Options:
        lr: Learning rate of the log-variances (default `None`: the model's). At a fine-tuning rate such as
            1e-4 the `s_t` move by ~0.1 in 1000 steps, so the weights stay near 1 (equal weighting under
            another name); a rate of ~1e-2 lets them reach their optimum `s_t = log L_t` within a run.
    """

    name = "uncertainty"
    option_defaults = {"lr": None}

    def __init__(self, task_names: Sequence[str], **options: Any) -> None:
        super().__init__(task_names, **options)
        lr = self.options["lr"]
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0):
            raise ValueError(f"uncertainty: option lr must be a number > 0 or None, got {lr!r}.")
        self.learning_rate = None if lr is None else float(lr)
        self.log_vars = nn.Parameter(torch.zeros(self.num_tasks))

    def loss_weights(self, losses: Mapping[str, Tensor], step: int) -> Tensor:
        return torch.exp(-self.log_vars)

    def weigh_losses(self, losses: Mapping[str, Tensor], step: int) -> Tensor:
        present = self._check_losses(losses)
        precisions = self.loss_weights(losses, step)
        self._set_last_weights(precisions)
        terms = []
        for task in present:
            i = self._index[task]
            loss = losses[task]
            # The + s_t term stops the trivial solution s_t -> infinity that would switch a task off.
            terms.append(precisions[i].to(loss) * loss + self.log_vars[i].to(loss))
        return sum(terms[1:], terms[0])
