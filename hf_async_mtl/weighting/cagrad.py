"""Conflict-Averse Gradient descent (CAGrad).

Liu, Liu, Jin, Stone, Liu, "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021. Around the
average gradient `g0`, CAGrad picks the direction in the ball `||d - g0|| <= c ||g0||` that maximises the worst
task improvement `min_t g_t . d`. Through the dual, with `g_w = sum_t w_t g_t` and `phi = c^2 ||g0||^2`:

    w* = argmin_{w in simplex}  g_w . g0 + sqrt(phi) ||g_w||,      d = g0 + (sqrt(phi) / ||g_w*||) g_w*.

The dual is solved on the Gram matrix with scipy's SLSQP.

Rescale convention (option `rescale`, as in the authors' released code): 0 returns `d` as in the paper's
Algorithm 1; 1 (the code's default, and ours) returns `d / (1 + c^2)`; 2 returns `d / (1 + c)`.
With `c = 0` the ball is a point and the result is exactly the mean gradient.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from .base import GradientWeightingMethod
from .registry import register_weighting


@register_weighting
class CAGrad(GradientWeightingMethod):
    """CAGrad; `last_weights` are the effective coefficients `(1/T + lambda w*_t) / rescale` of the task gradients.

    Options:
        c: Radius of the conflict-averse ball relative to `||g0||` (paper: 0.5; 0 gives the mean gradient).
        rescale: 0, 1 or 2 (see module docstring; default 1: divide by `1 + c^2`).
    """

    name = "cagrad"
    option_defaults = {"c": 0.5, "rescale": 1}

    def __init__(self, task_names: Sequence[str], **options: Any) -> None:
        super().__init__(task_names, **options)
        self.c = float(self.options["c"])
        self.rescale = self.options["rescale"]
        if not self.c >= 0 or self.rescale not in (0, 1, 2):
            raise ValueError(f"Weighting method 'cagrad': need c >= 0 and rescale in (0, 1, 2), got {self.options}.")

    def gradient_weights(self, gram: Tensor, losses: Mapping[str, Tensor], step: int) -> Tensor:
        count = self.num_tasks
        mean = torch.full((count,), 1.0 / count, dtype=torch.float64)
        divisor = (1.0, 1.0 + self.c**2, 1.0 + self.c)[self.rescale]
        scale = float(gram.abs().max())
        if self.c == 0 or scale == 0:
            return mean / divisor
        # The dual's minimiser is invariant to scaling G, so normalise it: SLSQP's tolerances are absolute.
        a = (gram / scale).numpy()
        radius = self.c * math.sqrt(max(float(a.mean()), 0.0))  # sqrt(phi) = c ||g0||
        b = a.mean(axis=1)  # g_t . g0

        def objective(w: np.ndarray) -> float:
            return float(w @ b + radius * math.sqrt(max(float(w @ a @ w), 0.0) + 1e-12))

        def jacobian(w: np.ndarray) -> np.ndarray:
            return b + radius * (a @ w) / math.sqrt(max(float(w @ a @ w), 0.0) + 1e-12)

        result = minimize(
            objective,
            np.full(count, 1.0 / count),
            jac=jacobian,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * count,
            constraints=({"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)},),
            options={"ftol": 1e-12, "maxiter": 200},
        )
        w = np.clip(result.x, 0.0, None)
        if not np.all(np.isfinite(w)) or w.sum() <= 0:
            return mean / divisor  # solver failure: fall back to plain gradient descent on the mean loss
        w = w / w.sum()
        gw_norm = math.sqrt(max(float(w @ a @ w), 0.0))
        lam = radius / gw_norm if gw_norm > 1e-12 else 0.0
        return (mean + lam * torch.from_numpy(w)) / divisor
