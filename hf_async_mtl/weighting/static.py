"""Static weighting: fixed, hand-chosen task weights `L = sum_t w_t L_t`.

The usual tuned-weights baseline of the multi-task literature (e.g. the grid-searched weights that Kendall et al.,
CVPR 2018, compare against).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .base import WeightingMethod
from .registry import register_weighting


@register_weighting
class StaticWeighting(WeightingMethod):
    """Fixed weights.

    Options:
        weights: Mapping task name → non-negative finite weight; required, with exactly one entry per task.
    """

    name = "static"
    option_defaults = {"weights": None}

    weights: Tensor  # buffer (registered in __init__)

    def __init__(self, task_names: Sequence[str], **options: Any) -> None:
        super().__init__(task_names, **options)
        given = self.options["weights"]
        if not isinstance(given, Mapping):
            raise ValueError(
                f"Weighting method 'static' needs option weights={{task: weight}} for tasks {list(self.task_names)}, got {given!r}."
            )
        missing = [t for t in self.task_names if t not in given]
        extra = sorted(set(given) - set(self.task_names))
        if missing or extra:
            raise ValueError(f"Weighting method 'static': weights miss task(s) {missing} and/or name unknown task(s) {extra}.")
        values = [float(given[t]) for t in self.task_names]
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"Weighting method 'static': weights must be finite and non-negative, got {dict(given)}.")
        # A buffer, so a checkpoint records the weights it was trained with.
        self.register_buffer("weights", torch.tensor(values, dtype=torch.float32))
        self.last_weights = dict(zip(self.task_names, values))

    def loss_weights(self, losses: Mapping[str, Tensor], step: int) -> Tensor:
        return self.weights
