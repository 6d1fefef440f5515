"""PCGrad (projecting conflicting gradients).

Yu, Kumar, Gupta, Levine, Hausman, Finn, "Gradient Surgery for Multi-Task Learning", NeurIPS 2020. For each task
i, in a random order of the other tasks j: when `g_i . g_j < 0`, project `g_i` onto the normal plane of `g_j`
(`g_i <- g_i - (g_i . g_j / ||g_j||^2) g_j`, using the original `g_j`). The update is the sum of the projected
gradients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .base import GradientWeightingMethod
from .registry import register_weighting


@register_weighting
class PCGrad(GradientWeightingMethod):
    """PCGrad, computed in the span of the task gradients.

    Every projected gradient is a linear combination of the original ones, so the projections are done on the
    coefficients with the Gram matrix; `last_weights` are the resulting coefficients of each task gradient in the sum.

    Options:
        seed: Seed of the generator of the task orders (its state is checkpointed).
    """

    name = "pcgrad"
    option_defaults = {"seed": 0}

    def __init__(self, task_names: Sequence[str], **options: Any) -> None:
        super().__init__(task_names, **options)
        self._register_rng(int(self.options["seed"]))

    def gradient_weights(self, gram: Tensor, losses: Mapping[str, Tensor], step: int) -> Tensor:
        count = self.num_tasks
        coefficients = torch.eye(count, dtype=torch.float64)  # row i: projected g_i in the basis of the g_j
        with self._rng() as generator:
            for i in range(count):
                for j in torch.randperm(count, generator=generator).tolist():
                    if j == i:
                        continue
                    dot = coefficients[i] @ gram[:, j]
                    # dot < 0 implies ||g_j|| > 0, so the division is safe.
                    if dot < 0:
                        coefficients[i, j] -= dot / gram[j, j]
        return coefficients.sum(dim=0)
