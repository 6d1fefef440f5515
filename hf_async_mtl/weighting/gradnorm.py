"""GradNorm.

Chen, Badrinarayanan, Lee, Rabinovich, "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep
Multitask Networks", ICML 2018. Task weights `w_t` are tuned so that the weighted gradient norms
`G_t = ||w_t g_t||` approach `mean(G) * r_t^alpha`, where `r_t = (L_t / L_t(0)) / mean_k(L_k / L_k(0))` is the
relative inverse training rate: tasks that train slower get larger gradients.

The paper uses the gradients of the last shared layer; here `g_t` is the gradient of the whole shared encoder (what
the trainer provides). As in the paper's algorithm, the combined gradient uses the current weights, and then the
weights take one gradient step on `sum_t |G_t - target_t| / mean_t ||g_t||` (target held constant; the division makes
the step free of the gradients' scale, as the Adam step of common implementations is) and are renormalised to sum to T.
This happens on every call, so with gradient accumulation the weights move once per micro-batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .base import GradientWeightingMethod
from .registry import register_weighting

_MIN_WEIGHT = 1e-4  # keeps weights positive when a large lr would push one below zero


@register_weighting
class GradNorm(GradientWeightingMethod):
    """GradNorm on per-task gradients of the shared parameters.

    `L_t(0)` is the loss each task had at the first call. The heads receive their own (unweighted) task gradients
    from the trainer.

    Options:
        alpha: Strength of the restoring force towards balanced training rates (paper: 1.5).
        lr: Step size of the weight update (default 0.025).
    """

    name = "gradnorm"
    option_defaults = {"alpha": 1.5, "lr": 0.025}

    # Buffers (registered in __init__).
    weights: Tensor
    initial_losses: Tensor
    has_initial: Tensor

    def __init__(self, task_names: Sequence[str], **options: Any) -> None:
        super().__init__(task_names, **options)
        self.alpha = float(self.options["alpha"])
        self.lr = float(self.options["lr"])
        if not self.lr > 0 or not self.alpha >= 0:
            raise ValueError(f"Weighting method 'gradnorm': need lr > 0 and alpha >= 0, got {self.options}.")
        t = self.num_tasks
        self.register_buffer("weights", torch.ones(t, dtype=torch.float64))
        self.register_buffer("initial_losses", torch.ones(t, dtype=torch.float64))
        self.register_buffer("has_initial", torch.zeros((), dtype=torch.bool))

    def gradient_weights(self, gram: Tensor, losses: Mapping[str, Tensor], step: int) -> Tensor:
        values = self._loss_values(losses)
        if not bool(self.has_initial):
            self.initial_losses.copy_(values)
            self.has_initial.fill_(True)
        weights = self.weights.detach().to("cpu", torch.float64).clone()
        grad_norms = gram.diagonal().clamp_min(0).sqrt()
        weighted_norms = weights * grad_norms
        loss_ratio = values / self.initial_losses.cpu().clamp_min(1e-12)
        inverse_rate = loss_ratio / loss_ratio.mean().clamp_min(1e-12)
        target = weighted_norms.mean() * inverse_rate.pow(self.alpha)
        # d/dw_t sum_k |w_k ||g_k|| - target_k| = sign(G_t - target_t) * ||g_t||, divided by the mean norm: the step is
        # free of the gradients' scale (an encoder's norms of 5-50 made lr 0.025 steps of 0.1-1: weights oscillated).
        step_grad = torch.sign(weighted_norms - target) * grad_norms / grad_norms.mean().clamp_min(1e-12)
        updated = (weights - self.lr * step_grad).clamp_min(_MIN_WEIGHT)
        self.weights.copy_(updated * self.num_tasks / updated.sum())
        return weights
