"""Nash-MTL (multi-task learning as a bargaining game).

Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya, "Multi-Task Learning as a Bargaining Game",
ICML 2022. The Nash bargaining update `sum_t a_t g_t` has weights solving `G a = 1 / a` (element-wise), `a > 0`,
with `G` the Gram matrix of the task gradients.

Solver: `G a = 1 / a` is exactly the stationarity condition of the strictly convex, self-concordant function
`f(a) = 1/2 a^T G a - sum_t log a_t`, so instead of the paper's sequence of convex (cvxpy) approximations we run
damped Newton with backtracking on `f`, which converges globally. The solution is equivariant to per-task scaling
(`g_t -> s g_t` gives `a_t -> a_t / s`), so we solve on the cosine matrix `C = D G D`, `D = diag(1 / ||g_t||)`,
and map back with `a = D b`: gradient-norm ratios of many orders of magnitude then cost no accuracy. A tiny ridge
on `C` keeps `f` bounded below when the gradients are linearly dependent (for exactly opposite gradients no Nash
point exists; the ridge then yields large weights whose combination stays bounded: `a^T G a <= T`). A task with a
zero gradient cannot satisfy its equation and gets weight 0. As in the authors' code, the weights are those of `G`
divided by its Frobenius norm, and they weigh the raw gradients. Gradient-norm clipping (their `max_norm`) is left
to the trainer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from .base import GradientWeightingMethod
from .registry import register_weighting

_RIDGE = 1e-8


def nash_weights(gram: np.ndarray, max_iter: int = 200, tol: float = 1e-14) -> np.ndarray:
    """Positive `a` with `(gram + ridge I) a = 1 / a`, by damped Newton on `1/2 a^T G a - sum log a`."""
    count = gram.shape[0]
    matrix = gram + _RIDGE * np.eye(count)
    ones = np.ones(count)
    # Start at the best multiple of the all-ones vector: minimises f along that ray.
    alpha = ones * np.sqrt(count / max(float(ones @ matrix @ ones), 1e-12))

    def f(a: np.ndarray) -> float:
        return float(0.5 * a @ matrix @ a - np.log(a).sum())

    for _ in range(max_iter):
        grad = matrix @ alpha - 1.0 / alpha
        hessian = matrix + np.diag(1.0 / alpha**2)
        step = -np.linalg.solve(hessian, grad)
        decrement = float(-grad @ step)  # squared Newton decrement
        if decrement / 2 <= tol:
            break
        t = 1.0
        while np.any(alpha + t * step <= 0):
            t *= 0.5  # stay in the domain a > 0
        current = f(alpha)
        while f(alpha + t * step) > current - 0.25 * t * decrement and t > 1e-12:
            t *= 0.5  # Armijo backtracking
        alpha = alpha + t * step
    return alpha


@register_weighting
class NashMTL(GradientWeightingMethod):
    """Nash-MTL weights of the task gradients. No options, no state (the solution is unique, no warm start)."""

    name = "nash_mtl"

    def gradient_weights(self, gram: Tensor, losses: Mapping[str, Tensor], step: int) -> Tensor:
        scale = float(torch.linalg.matrix_norm(gram))
        norms = gram.diagonal().clamp_min(0).sqrt()
        active = norms > 1e-150 * max(float(norms.max()), 1e-300)
        weights = torch.zeros(self.num_tasks, dtype=torch.float64)
        if scale == 0.0 or not bool(active.any()):
            return weights + 1.0  # all gradients are zero: any weights give the same (zero) update
        inverse = 1.0 / norms[active]
        cosines = gram[active][:, active] * torch.outer(inverse, inverse)
        # a solves (G / scale) a = 1 / a  <=>  a = sqrt(scale) * D b with C b = 1 / b.
        weights[active] = math.sqrt(scale) * inverse * torch.from_numpy(nash_weights(cosines.numpy()))
        return weights
