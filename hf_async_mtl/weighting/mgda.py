"""Multiple-Gradient Descent Algorithm (MGDA).

Sener, Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018. The update is the min-norm
point of the convex hull of the task gradients, `min_{a in simplex} ||sum_t a_t g_t||^2`, found with Frank-Wolfe on
the Gram matrix, made fully corrective (Wolfe's minimum-norm-point algorithm) so that it terminates exactly.

Normalisation (option `normalization`) rescales each gradient before solving, as in the authors' code: "none";
"l2" (`g_t / ||g_t||`); "loss" (`g_t / L_t`); "loss+" (`g_t / (L_t ||g_t||)`). The update is the min-norm point of
the normalised gradients (the LibMTL convention; the original code instead applied `a` to the raw losses), so
`last_weights` are `a_t / n_t`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import GradientWeightingMethod
from .registry import register_weighting

_NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def _affine_min_norm(gram: np.ndarray, support: list[int]) -> np.ndarray:
    """Weights (summing to 1, any sign) of the min-norm point of the affine hull of the `support` vectors."""
    size = len(support)
    kkt = np.ones((size + 1, size + 1))
    kkt[:size, :size] = gram[np.ix_(support, support)]
    kkt[size, size] = 0.0
    rhs = np.zeros(size + 1)
    rhs[size] = 1.0
    # Least squares: a nearly affinely dependent support (e.g. more tasks than dimensions) must not blow up.
    return np.linalg.lstsq(kkt, rhs, rcond=None)[0][:size]


def min_norm_weights(gram: Tensor, max_iter: int = 1000, tol: float = 1e-10) -> Tensor:
    """Simplex weights of the min-norm point of the convex hull of vectors with Gram matrix `gram`.

    Frank-Wolfe on the Gram matrix: each major step adds the vertex most opposed to the current point `x = Ga`.
    Plain Frank-Wolfe (the paper's solver) converges sublinearly and stalls far from the optimum when gradient
    scales differ a lot, so each step is made fully corrective as in Wolfe's minimum-norm-point algorithm (1976):
    re-solve for the min-norm point of the affine hull of the active vertices, stepping back to the simplex and
    dropping vertices when it leaves it. This terminates exactly; for two tasks it is the closed form
    `gamma = clip(((g2 - g1) . g2) / ||g1 - g2||^2, 0, 1)`. Stops at a duality gap `a.Ga - min_t (Ga)_t` below
    `tol * max_t ||g_t||^2`.
    """
    g = gram.detach().to("cpu", torch.float64).numpy()
    count = g.shape[0]
    scale = float(np.max(np.diag(g)))
    weights = np.zeros(count)
    start = int(np.argmin(np.diag(g)))
    weights[start] = 1.0
    if count == 1 or scale <= 0:
        return torch.from_numpy(weights)
    g = g / scale  # the solution is scale-invariant; this makes the tolerances relative
    support = [start]
    for _ in range(max_iter):
        direction = g @ weights
        vertex = int(np.argmin(direction))
        if float(weights @ direction) - float(direction[vertex]) <= tol or vertex in support:
            break
        support.append(vertex)
        while True:  # minor cycle: move to the affine min-norm point, or as far towards it as the simplex allows
            affine = _affine_min_norm(g, support)
            current = weights[support]
            if np.all(affine > 0):
                weights[support] = affine
                break
            blocked = np.flatnonzero(affine <= 0)
            ratios = current[blocked] / (current[blocked] - affine[blocked])
            leaving = int(blocked[np.argmin(ratios)])
            moved = current + float(np.min(ratios)) * (affine - current)
            moved[leaving] = 0.0
            moved = np.clip(moved, 0.0, None)
            weights[support] = moved
            support = [s for s, w in zip(support, moved) if w > 0]
    weights = np.clip(weights, 0.0, None)
    return torch.from_numpy(weights / weights.sum())


@register_weighting
class MGDA(GradientWeightingMethod):
    """MGDA min-norm combination of (optionally normalised) task gradients.

    Options:
        normalization: "none" (default), "l2", "loss" or "loss+".
        max_iter: Frank-Wolfe (major) iterations at most (default 1000).
        tol: Stop at a duality gap below `tol * max_t ||g_t||^2` (default 1e-10).
    """

    name = "mgda"
    option_defaults = {"normalization": "none", "max_iter": 1000, "tol": 1e-10}

    def __init__(self, task_names: Sequence[str], **options: Any) -> None:
        super().__init__(task_names, **options)
        if self.options["normalization"] not in _NORMALIZATIONS:
            raise ValueError(
                f"Weighting method 'mgda': normalization must be one of {_NORMALIZATIONS}, got {self.options['normalization']!r}."
            )

    def gradient_weights(self, gram: Tensor, losses: Mapping[str, Tensor], step: int) -> Tensor:
        kind = self.options["normalization"]
        scales = torch.ones(self.num_tasks, dtype=torch.float64)
        if kind in ("l2", "loss+"):
            scales = scales * gram.diagonal().clamp_min(0).sqrt()
        if kind in ("loss", "loss+"):
            scales = scales * self._loss_values(losses)
        scales = scales.clamp_min(1e-12)  # a zero gradient or loss stays zero instead of becoming NaN
        normalized = gram / torch.outer(scales, scales)
        alpha = min_norm_weights(normalized, int(self.options["max_iter"]), float(self.options["tol"]))
        return alpha / scales
