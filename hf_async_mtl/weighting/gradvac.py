"""Gradient Vaccine (GradVac).

Wang, Tsvetkov, Firat, Cao, "Gradient Vaccine: Investigating and Improving Multi-task Optimization in Massively
Multilingual Models", ICLR 2021. Generalises PCGrad: each pair (i, j) has an EMA target cosine similarity
`phi_hat_ij` (init 0, `phi_hat <- (1 - beta) phi_hat + beta phi`); when the current cosine `phi_ij` is below it,
`g_i` gets `g_j` added with the coefficient that raises their cosine exactly to the target:
`||g_i|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2)) / (||g_j|| sqrt(1 - phi_hat^2))`.
The update is the sum of the adjusted gradients.

Granularity: one cosine per task pair over the whole shared-parameter vector (the paper also uses per-layer
targets). The targets are updated on every call, i.e. per micro-batch under gradient accumulation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .base import GradientWeightingMethod
from .registry import register_weighting


@register_weighting
class GradVac(GradientWeightingMethod):
    """GradVac on whole-vector cosines, computed in the span of the task gradients (as PCGrad here).

    Options:
        beta: EMA rate of the target similarities (paper: 0.01).
        seed: Seed of the generator of the task orders (its state is checkpointed).
    """

    name = "gradvac"
    option_defaults = {"beta": 0.01, "seed": 0}

    target_similarity: Tensor  # buffer (registered in __init__)

    def __init__(self, task_names: Sequence[str], **options: Any) -> None:
        super().__init__(task_names, **options)
        self.beta = float(self.options["beta"])
        if not 0 < self.beta <= 1:
            raise ValueError(f"Weighting method 'gradvac': beta must be in (0, 1], got {self.beta}.")
        self._register_rng(int(self.options["seed"]))
        self.register_buffer("target_similarity", torch.zeros(self.num_tasks, self.num_tasks, dtype=torch.float64))

    def gradient_weights(self, gram: Tensor, losses: Mapping[str, Tensor], step: int) -> Tensor:
        count = self.num_tasks
        targets = self.target_similarity.detach().to("cpu", torch.float64).clone()
        coefficients = torch.eye(count, dtype=torch.float64)  # row i: adjusted g_i in the basis of the g_j
        with self._rng() as generator:
            for i in range(count):
                for j in torch.randperm(count, generator=generator).tolist():
                    if j == i:
                        continue
                    norm_i = math.sqrt(max(float(coefficients[i] @ gram @ coefficients[i]), 0.0))
                    norm_j = math.sqrt(max(float(gram[j, j]), 0.0))
                    if norm_i == 0.0 or norm_j == 0.0:
                        continue  # cosine undefined: nothing to vaccinate, no evidence for the EMA
                    phi = min(max(float(coefficients[i] @ gram[:, j]) / (norm_i * norm_j), -1.0), 1.0)
                    target = float(targets[i, j])
                    if phi < target:
                        numerator = target * math.sqrt(1 - phi**2) - phi * math.sqrt(1 - target**2)
                        coefficients[i, j] += norm_i * numerator / (norm_j * math.sqrt(1 - target**2) + 1e-12)
                    targets[i, j] = (1 - self.beta) * target + self.beta * phi
        self.target_similarity.copy_(targets)
        return coefficients.sum(dim=0)
