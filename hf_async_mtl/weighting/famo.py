"""Fast Adaptive Multitask Optimization (FAMO).

Liu, Liu, Jin, Stone, Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023. Task logits `xi` give
`z = softmax(xi)`; the model descends `sum_t c * z_t * log(L_t)` with `c = (sum_t z_t / L_t)^-1` held constant, so
every task's log-loss falls at a balanced rate. After each step, `xi` moves against the tasks whose log-loss
decreased most: its gradient is `J_softmax(xi)^T delta` with `delta_t = log L_t(prev) - log L_t(now)`, plus weight
decay `gamma * xi`, applied with Adam (as in the authors' code).

Losses must be non-negative (the paper's minimum loss is 0). The paper measures the decrease on the same batch
after the update, which costs an extra forward pass; here `delta` compares the losses of consecutive optimizer
steps (different batches), the cheap estimate that needs only `after_optimizer_step`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .base import WeightingMethod
from .registry import register_weighting

_EPS = 1e-8
_BETAS = (0.9, 0.999)


@register_weighting
class FAMO(WeightingMethod):
    """FAMO loss weighting; needs every task's loss in every step.

    The returned loss is FAMO's surrogate `sum_t (z_t / c) log(L_t + eps)`, not a weighted sum of the raw losses.
    `last_weights` are the effective multipliers `z_t / (c L_t)` of each task's loss gradient.

    Options:
        lr: Learning rate of the logits' Adam (paper: 0.025).
        gamma: Weight decay of the logits (default 0.001).
    """

    name = "famo"
    needs_all_tasks = True
    option_defaults = {"lr": 0.025, "gamma": 0.001}

    # Buffers (registered in __init__).
    logits: Tensor
    adam_m: Tensor
    adam_v: Tensor
    adam_steps: Tensor
    prev_log_losses: Tensor
    has_prev: Tensor

    def __init__(self, task_names: Sequence[str], **options: Any) -> None:
        super().__init__(task_names, **options)
        self.lr = float(self.options["lr"])
        self.gamma = float(self.options["gamma"])
        if not self.lr > 0 or not self.gamma >= 0:
            raise ValueError(f"Weighting method 'famo': need lr > 0 and gamma >= 0, got {self.options}.")
        t = self.num_tasks
        # Buffers, not Parameters: the logits follow their own update rule, not the trainer's optimizer.
        self.register_buffer("logits", torch.zeros(t, dtype=torch.float64))
        self.register_buffer("adam_m", torch.zeros(t, dtype=torch.float64))
        self.register_buffer("adam_v", torch.zeros(t, dtype=torch.float64))
        self.register_buffer("adam_steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("prev_log_losses", torch.zeros(t, dtype=torch.float64))
        self.register_buffer("has_prev", torch.zeros((), dtype=torch.bool))

    def weigh_losses(self, losses: Mapping[str, Tensor], step: int) -> Tensor:
        self._check_losses(losses)
        z = torch.softmax(self.logits.detach().double().cpu(), dim=0)
        values = self._loss_values(losses).clamp_min(0) + _EPS
        c = 1.0 / (z / values).sum()
        self._set_last_weights(c * z / values)
        terms = []
        for task in self.task_names:
            loss = losses[task]
            coefficient = (c * z[self._index[task]]).to(loss)
            terms.append(coefficient * torch.log(loss.clamp_min(0) + _EPS))
        return sum(terms[1:], terms[0])

    def after_optimizer_step(self, losses: Mapping[str, float], step: int) -> None:
        log_losses = torch.log(self._loss_values(losses).clamp_min(0) + _EPS).to(self.logits.device)
        if bool(self.has_prev):
            delta = self.prev_log_losses - log_losses
            z = torch.softmax(self.logits, dim=0)
            self._adam_step(z * (delta - (z * delta).sum()))
        self.prev_log_losses.copy_(log_losses)
        self.has_prev.fill_(True)

    def _adam_step(self, grad: Tensor) -> None:
        # Plain Adam with L2 weight decay (torch.optim.Adam semantics), kept in buffers so it is checkpointed.
        beta1, beta2 = _BETAS
        grad = grad + self.gamma * self.logits
        self.adam_steps += 1
        n = int(self.adam_steps)
        self.adam_m.mul_(beta1).add_((1 - beta1) * grad)
        self.adam_v.mul_(beta2).add_((1 - beta2) * grad * grad)
        m_hat = self.adam_m / (1 - beta1**n)
        v_hat = self.adam_v / (1 - beta2**n)
        self.logits.sub_(self.lr * m_hat / (v_hat.sqrt() + _EPS))
