"""Dynamic Weight Average (DWA).

Liu, Johns, Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019. The weight of task t follows the
rate at which its loss falls: `w_t = T * softmax_t(r_t / temperature)` with `r_t = L_t(k-1) / L_t(k-2)`.

The paper averages losses per epoch. Here an "epoch" is a window of `window` optimizer steps: the losses that
`after_optimizer_step` receives are averaged per task over each window, and the two latest complete windows give
`r_t`. Weights are 1 until two windows exist, and change once per window (as they change once per epoch in the
paper). A task absent from a whole window (possible under the "one_task" composition) keeps its previous average.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .base import WeightingMethod, _as_float
from .registry import register_weighting


@register_weighting
class DynamicWeightAverage(WeightingMethod):
    """DWA over windows of optimizer steps.

    Options:
        temperature: Softmax temperature (paper: 2.0); larger means weights closer to 1.
        window: Number of optimizer steps averaged into one "epoch" loss (default 100).
    """

    name = "dwa"
    option_defaults = {"temperature": 2.0, "window": 100}

    # Buffers (registered in __init__).
    window_sum: Tensor
    window_count: Tensor
    steps_in_window: Tensor
    avg_last: Tensor
    avg_before: Tensor
    windows_seen: Tensor

    def __init__(self, task_names: Sequence[str], **options: Any) -> None:
        super().__init__(task_names, **options)
        self.temperature = float(self.options["temperature"])
        self.window = int(self.options["window"])
        if not self.temperature > 0 or self.window < 1 or self.window != self.options["window"]:
            raise ValueError(f"Weighting method 'dwa': temperature must be > 0 and window a positive integer, got {self.options}.")
        t = self.num_tasks
        self.register_buffer("window_sum", torch.zeros(t, dtype=torch.float64))
        self.register_buffer("window_count", torch.zeros(t, dtype=torch.int64))
        self.register_buffer("steps_in_window", torch.zeros((), dtype=torch.int64))
        self.register_buffer("avg_last", torch.ones(t, dtype=torch.float64))  # L_t(k-1)
        self.register_buffer("avg_before", torch.ones(t, dtype=torch.float64))  # L_t(k-2)
        self.register_buffer("windows_seen", torch.zeros(t, dtype=torch.int64))  # complete windows with data

    def schedule_warning(self, max_steps: int) -> str | None:
        if max_steps > 0 and 2 * self.window >= max_steps:
            return (
                f"Weighting method 'dwa': window={self.window} steps needs two complete windows before weights move, "
                f"so in {max_steps} steps every weight stays 1 (equal weighting). Pass a smaller window, e.g. "
                f'mtl_method_options={{"window": {max(1, max_steps // 10)}}}.'
            )
        return None

    def loss_weights(self, losses: Mapping[str, Tensor], step: int) -> Tensor:
        ready = self.windows_seen >= 2
        # A ratio of 1 for tasks without two windows yet: with no task ready, all weights are exactly 1.
        ratio = torch.where(ready, self.avg_last / self.avg_before.clamp_min(1e-12), torch.ones_like(self.avg_last))
        return self.num_tasks * torch.softmax(ratio / self.temperature, dim=0)

    def after_optimizer_step(self, losses: Mapping[str, float], step: int) -> None:
        present = self._check_losses(losses)
        for task in present:
            i = self._index[task]
            self.window_sum[i] += _as_float(losses[task])
            self.window_count[i] += 1
        self.steps_in_window += 1
        if int(self.steps_in_window) < self.window:
            return
        seen = self.window_count > 0
        average = self.window_sum / self.window_count.clamp_min(1)
        self.avg_before.copy_(torch.where(seen, self.avg_last, self.avg_before))
        self.avg_last.copy_(torch.where(seen, average, self.avg_last))
        self.windows_seen += seen.long()
        self.window_sum.zero_()
        self.window_count.zero_()
        self.steps_in_window.zero_()
