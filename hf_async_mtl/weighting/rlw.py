"""Random Loss Weighting (RLW).

Lin, Ye, Zhang, Tsang, "Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task Learning",
TMLR 2022. Each optimizer step draws `w = T * softmax(eps)`, `eps ~ N(0, I)` (the paper's normal-distribution
variant), and trains on `sum_t w_t L_t`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .base import WeightingMethod
from .registry import register_weighting


@register_weighting
class RandomLossWeighting(WeightingMethod):
    """Random weights, drawn once per optimizer step from a seeded generator whose state is checkpointed.

    The draw is keyed by the `step` argument, so the micro-batches of one accumulated step share their weights.

    Options:
        seed: Seed of the weight generator (default 0).
    """

    name = "rlw"
    option_defaults = {"seed": 0}

    # Buffers (registered in __init__).
    weights: Tensor
    weights_step: Tensor

    def __init__(self, task_names: Sequence[str], **options: Any) -> None:
        super().__init__(task_names, **options)
        self._register_rng(int(self.options["seed"]))
        self.register_buffer("weights", torch.ones(self.num_tasks, dtype=torch.float64))
        self.register_buffer("weights_step", torch.full((), -1, dtype=torch.int64))

    def loss_weights(self, losses: Mapping[str, Tensor], step: int) -> Tensor:
        if int(self.weights_step) != int(step):
            with self._rng() as generator:
                noise = torch.randn(self.num_tasks, generator=generator, dtype=torch.float64)
            self.weights.copy_(self.num_tasks * torch.softmax(noise, dim=0))
            self.weights_step.fill_(int(step))
        return self.weights
