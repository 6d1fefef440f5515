"""Impartial MTL, gradient balancing part (IMTL-G).

Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang, "Towards Impartial Multi-task Learning", ICLR 2021. IMTL-G finds the
combination `g = sum_t a_t g_t` with `sum_t a_t = 1` whose projections onto every unit task gradient
`u_t = g_t / ||g_t||` are equal. Closed form, with `D = [g_1 - g_t]` and `U = [u_1 - u_t]` (t = 2..T):
`a_{2:T} = g_1 U^T (D U^T)^-1`, `a_1 = 1 - sum a_{2:T}`. (The loss-scale part, IMTL-L, is not included.)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .base import GradientWeightingMethod
from .registry import register_weighting


@register_weighting
class IMTLG(GradientWeightingMethod):
    """IMTL-G, computed from the Gram matrix. No options, no state.

    If the system is singular (e.g. two identical gradients), the least-squares solution is used.
    """

    name = "imtl_g"

    def gradient_weights(self, gram: Tensor, losses: Mapping[str, Tensor], step: int) -> Tensor:
        count = self.num_tasks
        if count == 1:
            return torch.ones(1, dtype=torch.float64)
        norms = gram.diagonal().clamp_min(0).sqrt().clamp_min(1e-12)
        g_dot_u = gram / norms  # [i, j] = g_i . u_j
        rhs = g_dot_u[0, 0] - g_dot_u[0, 1:]  # g_1 U^T
        # (D U^T)[a, b] = (g_1 - g_a) . (u_1 - u_b)
        system = g_dot_u[0, 0] - g_dot_u[0, 1:][None, :] - g_dot_u[1:, 0][:, None] + g_dot_u[1:, 1:]
        # a M = rhs  <=>  M^T a^T = rhs^T
        rest = torch.linalg.lstsq(system.T, rhs[:, None], driver="gelsd").solution[:, 0]
        return torch.cat([(1 - rest.sum()).reshape(1), rest])
