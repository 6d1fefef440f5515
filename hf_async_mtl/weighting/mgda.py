"""Multiple-Gradient Descent Algorithm (MGDA).

Sener, Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018. The update is the min-norm
point of the convex hull of the task gradients, `min_{a in simplex} ||sum_t a_t g_t||^2`, found with the paper's
Frank-Wolfe solver on the Gram matrix (started from the best pair, whose two-point problem has a closed form).

Normalisation (option `normalization`) rescales each gradient before solving, as in the authors' code: "none";
"l2" (`g_t / ||g_t||`); "loss" (`g_t / L_t`); "loss+" (`g_t / (L_t ||g_t||)`). The update is the min-norm point of
the normalised gradients (the LibMTL convention; the original code instead applied `a` to the raw losses), so
`last_weights` are `a_t / n_t`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .base import GradientWeightingMethod
from .registry import register_weighting

_NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def _two_point(v11: float, v12: float, v22: float) -> tuple[float, float]:
    """`gamma` in [0, 1] minimising `||gamma x + (1 - gamma) y||^2` given `x.x, x.y, y.y`, and that squared norm."""
    denominator = v11 + v22 - 2 * v12  # ||x - y||^2
    gamma = 1.0 if denominator <= 1e-20 else min(max((v22 - v12) / denominator, 0.0), 1.0)
    return gamma, gamma * gamma * v11 + 2 * gamma * (1 - gamma) * v12 + (1 - gamma) ** 2 * v22


def min_norm_weights(gram: Tensor, max_iter: int = 250, tol: float = 1e-6) -> Tensor:
    """Simplex weights of the min-norm point of the convex hull of vectors with Gram matrix `gram` (Frank-Wolfe)."""
    count = gram.shape[0]
    weights = torch.zeros(count, dtype=torch.float64)
    if count == 1:
        return weights + 1.0
    best = None
    for i in range(count):
        for j in range(i + 1, count):
            gamma, cost = _two_point(float(gram[i, i]), float(gram[i, j]), float(gram[j, j]))
            if best is None or cost < best[0]:
                best = (cost, i, j, gamma)
    _, i, j, gamma = best
    weights[i], weights[j] = gamma, 1 - gamma
    for _ in range(max_iter):
        direction = gram @ weights
        t = int(torch.argmin(direction))  # vertex most opposed to the current point
        gamma, _ = _two_point(float(weights @ direction), float(direction[t]), float(gram[t, t]))
        updated = gamma * weights
        updated[t] += 1 - gamma
        change = float((updated - weights).abs().sum())
        weights = updated
        if change < tol:
            break
    return weights


@register_weighting
class MGDA(GradientWeightingMethod):
    """MGDA min-norm combination of (optionally normalised) task gradients.

    Options:
        normalization: "none" (default), "l2", "loss" or "loss+".
        max_iter: Frank-Wolfe iterations at most (default 250).
        tol: Stop when the weights change by less than this in L1 (default 1e-6).
    """

    name = "mgda"
    option_defaults = {"normalization": "none", "max_iter": 250, "tol": 1e-6}

    def __init__(self, task_names: Sequence[str], **options: Any) -> None:
        super().__init__(task_names, **options)
        if self.options["normalization"] not in _NORMALIZATIONS:
            raise ValueError(
                f"Weighting method 'mgda': normalization must be one of {_NORMALIZATIONS}, "
                f"got {self.options['normalization']!r}."
            )

    def gradient_weights(self, gram: Tensor, losses: Mapping[str, Tensor], step: int) -> Tensor:
        kind = self.options["normalization"]
        scales = torch.ones(self.num_tasks, dtype=torch.float64)
        if kind in ("l2", "loss+"):
            scales = scales * gram.diagonal().clamp_min(0).sqrt()
        if kind in ("loss", "loss+"):
            scales = scales * self._loss_values(losses)
        scales = scales.clamp_min(1e-12)  # a zero gradient or loss stays zero instead of becoming NaN
        alpha = min_norm_weights(gram / torch.outer(scales, scales), int(self.options["max_iter"]), self.options["tol"])
        return alpha / scales
