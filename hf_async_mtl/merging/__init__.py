"""Merging single-task fine-tunes of one base encoder into one multi-task model (task arithmetic, TIES, DARE).

- `methods`: the merging methods on task vectors (pure tensor functions and their registry, `MERGE_METHODS`);
- `checkpoints`: reading and checking the single-task checkpoints, finding their base encoder, task vectors;
- `selection`: the declared grid of scales and densities, the selection splits carved again, the choice rule;
- `merge`: `merge_single_task_models`, the entry point (the command line is `merge_models.py`).

See docs/merging.md.
"""

from .checkpoints import SingleTaskCheckpoint, read_checkpoint
from .merge import MERGING_FILE, MergeResult, merge_single_task_models, save_merged_model
from .methods import MERGE_METHODS, MergeMethod, get_merge_method, merge_direction, merged_parameters
from .selection import DEFAULT_DENSITIES, DEFAULT_SCALES, MergeGrid, choose_point, default_scales, selection_criterion

__all__ = [
    "DEFAULT_DENSITIES",
    "DEFAULT_SCALES",
    "default_scales",
    "MERGE_METHODS",
    "MERGING_FILE",
    "MergeGrid",
    "MergeMethod",
    "MergeResult",
    "SingleTaskCheckpoint",
    "choose_point",
    "get_merge_method",
    "merge_direction",
    "merge_single_task_models",
    "merged_parameters",
    "read_checkpoint",
    "save_merged_model",
    "selection_criterion",
]
