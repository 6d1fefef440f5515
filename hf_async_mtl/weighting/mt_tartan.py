"""MT-TARTAN: end-task aware training with static weights.

Dery, Michel, Talwalkar, Neubig, "Should We Be Pre-training? An Argument for End-task Aware Training as an
Alternative", ICLR 2022. The end task(s) train together with auxiliary objectives (e.g. MLM over the end
task's own text) instead of after them; MT-TARTAN weighs them statically. Here the end tasks share
`end_share` (default 1/2) of the total weight equally and the auxiliaries share the rest equally, scaled so
that the mean weight is 1 (the step size of equal weighting): with T tasks, E end tasks and A auxiliaries,
w_end = T · end_share / E and w_aux = T · (1 − end_share) / A.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .base import WeightingMethod
from .registry import register_weighting


def split_end_tasks(method: str, task_names: Sequence[str], end_tasks: Any) -> tuple[list[str], list[str]]:
    """(end tasks, auxiliaries) of `task_names`; clear errors for a missing, unknown or all-task end task."""
    if isinstance(end_tasks, str):
        end_tasks = [t.strip() for t in end_tasks.split(",") if t.strip()]
    if not end_tasks:
        raise ValueError(f"Weighting method {method!r} needs the end task(s): set end_task (--end_task) to one of {list(task_names)}.")
    unknown = [t for t in end_tasks if t not in task_names]
    if unknown:
        raise ValueError(f"Weighting method {method!r}: end task(s) {unknown} are not trained; tasks: {list(task_names)}.")
    auxiliaries = [t for t in task_names if t not in end_tasks]
    if not auxiliaries:
        raise ValueError(f"Weighting method {method!r}: every task is an end task; add auxiliary tasks (e.g. an MLM task).")
    return [t for t in task_names if t in end_tasks], auxiliaries


@register_weighting
class MTTartan(WeightingMethod):
    """Static end-task / auxiliary weights (see the module docstring).

    Options:
        end_tasks: The end task names (the trainer fills them from `end_task`).
        end_share: Share of the total weight that goes to the end tasks, in (0, 1).
    """

    name = "mt_tartan"
    uses_end_tasks = True
    option_defaults = {"end_tasks": None, "end_share": 0.5}

    weights: Tensor  # buffer (registered in __init__)

    def __init__(self, task_names: Sequence[str], **options: Any) -> None:
        super().__init__(task_names, **options)
        self.end_tasks, self.auxiliaries = split_end_tasks(self.name, self.task_names, self.options["end_tasks"])
        share = float(self.options["end_share"])
        if not 0.0 < share < 1.0:
            raise ValueError(f"Weighting method 'mt_tartan': end_share must be in (0, 1), got {share}.")
        count = self.num_tasks
        values = [
            count * share / len(self.end_tasks) if t in self.end_tasks else count * (1 - share) / len(self.auxiliaries)
            for t in self.task_names
        ]
        self.register_buffer("weights", torch.tensor(values, dtype=torch.float32))
        self.last_weights = dict(zip(self.task_names, values))

    def loss_weights(self, losses: Mapping[str, Tensor], step: int) -> Tensor:
        return self.weights
