"""Equal weighting (EW): the plain sum of the task losses.

The standard multi-task baseline, hard parameter sharing trained on the summed losses (Caruana, "Multitask
Learning", Machine Learning 1997); the reference point of e.g. Lin et al. (TMLR 2022) and LibMTL.
"""

from __future__ import annotations

from .base import WeightingMethod
from .registry import register_weighting


@register_weighting
class EqualWeighting(WeightingMethod):
    """`L = sum_t L_t`: every task weight is 1. No options, no state.

    Under the "one_task" composition (one task per optimizer step) this is plain round-robin or sampled training
    of each task's loss; the balance between tasks then comes from the task sampler alone.
    """

    name = "equal"
