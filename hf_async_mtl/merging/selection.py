"""How a merge chooses its scale (and density): a declared grid, each task's own selection split, one rule.

The grid is every (density, scale) pair of the declared values (`MergeGrid`; scale only for task arithmetic). Each
point is scored on every task's selection split — the examples its single-task run held out, carved again from the
recorded options and checked against the recorded fingerprint (`rebuild_task_data`) — by the task's own selection
metric (`TaskSpec.main_metric`, as the trainer's evaluation computes it). The criterion is the mean over tasks of
those scores (negated for a metric where lower is better), and the chosen point is the first one in grid order with
the highest criterion (`choose_point`). The dev sets are never read for a choice; they are evaluated only after it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import datasets

from ..data import CAP_SUBSETS, TASK_IDS_COLUMN, build_task_datasets, cap_dataset
from ..errors import InputError
from ..sources import TaskDataSource
from ..tasks import TaskSpec
from .checkpoints import SELECTION_FIELD, SingleTaskCheckpoint
from .methods import get_merge_method

__all__ = [
    "DEFAULT_DENSITIES",
    "DEFAULT_SCALES",
    "default_scales",
    "MergeGrid",
    "choose_point",
    "rebuild_task_data",
    "selection_criterion",
]

DEFAULT_SCALES = (0.3, 0.5, 0.7, 1.0)  # task arithmetic and DARE; TIES and DARE-TIES: `default_scales(method)`
DEFAULT_DENSITIES = (0.2, 0.5, 0.8)


def default_scales(method: str) -> tuple[float, ...]:
    """The λ grid `method` tries when none is given (`MergeMethod.default_scales`)."""
    return get_merge_method(method).default_scales


SELECTION_RULE = (
    "mean over tasks of each task's selection-split score (its main_metric, negated when lower is better); "
    "the first grid point (densities outer, scales inner, in the declared order) with the highest mean"
)


@dataclass(frozen=True)
class MergeGrid:
    """The declared values a merge tries: scales λ and, for TIES and DARE, densities (`None` takes the method's defaults:
    `default_scales(method)`, `DEFAULT_DENSITIES`)."""

    method: str
    scales: tuple[float, ...] | None = None
    densities: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        method = get_merge_method(self.method)
        object.__setattr__(self, "scales", tuple(float(s) for s in (method.default_scales if self.scales is None else self.scales)))
        if not self.scales:
            raise ValueError("The grid needs at least one scale.")
        bad = [s for s in self.scales if not (math.isfinite(s) and s > 0)]
        if bad:
            raise ValueError(f"scales must be numbers > 0, got {bad[0]}.")
        if len(set(self.scales)) != len(self.scales):
            raise ValueError(f"scales are given twice: {list(self.scales)}.")
        if not method.uses_density:
            if self.densities is not None:
                raise ValueError(f"{self.method} takes no density; drop the densities.")
            return
        densities = tuple(float(d) for d in (DEFAULT_DENSITIES if self.densities is None else self.densities))
        if not densities:
            raise ValueError("The grid needs at least one density.")
        bad = [d for d in densities if not 0.0 < d <= 1.0]
        if bad:
            raise ValueError(f"densities must be in (0, 1], got {bad[0]}.")
        if len(set(densities)) != len(densities):
            raise ValueError(f"densities are given twice: {list(densities)}.")
        object.__setattr__(self, "densities", densities)

    @property
    def _scales(self) -> tuple[float, ...]:
        return cast(tuple[float, ...], self.scales)  # never None after __post_init__

    def at_edge(self, scale: float) -> str | None:
        """ "largest" / "smallest" when `scale` is the grid's largest / smallest of several scales, else None: a choice at
        the edge says a grid that goes further might score higher."""
        scales = self._scales
        if len(scales) < 2:
            return None
        return "largest" if scale == max(scales) else "smallest" if scale == min(scales) else None

    def points(self) -> list[tuple[float, float | None]]:
        """Every (scale, density) pair, densities outer and scales inner, in the declared order."""
        densities: Sequence[float | None] = self.densities if self.densities is not None else (None,)
        return [(scale, density) for density in densities for scale in self._scales]

    def to_dict(self) -> dict[str, Any]:
        return {"scales": list(self._scales), "densities": None if self.densities is None else list(self.densities)}


def selection_criterion(scores: Mapping[str, float], specs: Mapping[str, TaskSpec]) -> float:
    """The mean over tasks of each task's selection score, negated for a task whose main metric is lower-better."""
    signed = [score if specs[task].greater_is_better else -score for task, score in scores.items()]
    return float(sum(signed) / len(signed))


def choose_point(criteria: Sequence[float]) -> int:
    """The index of the first highest criterion (NaN never wins)."""
    best = None
    for index, value in enumerate(criteria):
        if not math.isnan(value) and (best is None or value > criteria[best]):
            best = index
    if best is None:
        raise ValueError("No grid point has a selection score.")
    return best


_RECORD_KEYS = ("seed", "selection_fraction", "selection_max", "cap", "carve_before_cap", "max_seq_length", "selection_rows_sha256")


def rebuild_task_data(
    checkpoint: SingleTaskCheckpoint,
    spec: TaskSpec,
    source: TaskDataSource,
    tokenizer: Any,
    task_id: int,
    *,
    with_dev: bool = False,
    eval_cap: int | None = None,
) -> tuple[datasets.Dataset, dict[str, datasets.Dataset]]:
    """(selection split, dev splits) of a checkpoint's task, tokenised with task id `task_id`.

    The selection split is carved again by `build_task_datasets` from the options the single-task run recorded in its
    config (`selection_splits`: seed, fraction, bound, cap, sequence length) and must have the recorded rows'
    fingerprint; otherwise the merge is refused (other data, or a run that kept no record or no selection split).
    """
    record = checkpoint.selection
    if record is None:
        raise InputError(
            f"{checkpoint.where(SELECTION_FIELD)}: no record of the selection split of task {checkpoint.task!r} (a run saved "
            "before run_glue_mtl.py recorded it, or not by it), so the merge cannot choose on the examples that run held "
            "out; retrain the task with the current run_glue_mtl.py.",
            "checkpoints",
        )
    missing = [key for key in _RECORD_KEYS if key not in record]
    if missing:
        raise InputError(f"{checkpoint.where(SELECTION_FIELD)}: the record of {checkpoint.task!r} lacks {missing}.", "checkpoints")
    if not record["selection_fraction"] or not record.get("selection_size"):
        raise InputError(
            f"{checkpoint.where(SELECTION_FIELD)}: the run of {checkpoint.task!r} held out no selection split "
            "(selection_split_fraction 0: it selected on the dev set), so there is nothing to choose a merge on "
            "without reading dev.",
            "checkpoints",
        )
    known = {function.__name__ for function in CAP_SUBSETS.values()}
    if record.get("subsample", cap_dataset.__name__) not in known:
        raise InputError(
            f"{checkpoint.where(SELECTION_FIELD)}: the run capped its data with {record['subsample']!r}, not one of the "
            f"command line's ({', '.join(sorted(known))}); rebuild its selection split in Python and merge with your own evaluation.",
            "checkpoints",
        )
    try:
        data = _build(spec, source, tokenizer, record, with_dev, eval_cap)
    except InputError:
        raise
    except (ValueError, OSError) as error:  # the loaders' one-line errors (file, line, column) about the data
        raise InputError(f"task {checkpoint.task!r} of {checkpoint.path}: {error}", "checkpoints") from None
    rebuilt = data.selection_records[spec.name]
    if rebuilt["selection_rows_sha256"] != record["selection_rows_sha256"]:
        raise InputError(
            f"{checkpoint.where(SELECTION_FIELD)}: the selection split of {checkpoint.task!r} carved again from the data "
            f"given now ({rebuilt['selection_size']} rows) is not the one its run held out ({record.get('selection_size')} "
            "rows, another fingerprint): pass the training data that run read (--glue_dir / the custom tasks file).",
            "checkpoints",
        )
    selection = _with_task_id(data.selection[spec.name], task_id)
    dev = {split: _with_task_id(dataset, task_id) for split, dataset in data.dev.get(spec.name, {}).items()}
    return selection, dev


def _with_task_id(dataset: datasets.Dataset, task_id: int) -> datasets.Dataset:
    """The dataset with every row's task id set to `task_id` (its head's position in the merged model)."""
    return dataset.remove_columns(TASK_IDS_COLUMN).add_column(TASK_IDS_COLUMN, [task_id] * len(dataset))


def _build(
    spec: TaskSpec,
    source: TaskDataSource,
    tokenizer: Any,
    record: Mapping[str, Any],
    with_dev: bool,
    eval_cap: int | None,
) -> Any:
    """`build_task_datasets` of one task with the options its single-task run recorded."""
    return build_task_datasets(
        [(spec, source)],
        tokenizer,
        int(record["max_seq_length"]),
        caps={spec.name: record["cap"]},
        seed=int(record["seed"]),
        selection_fraction=float(record["selection_fraction"]),
        selection_max=record["selection_max"],
        carve_before_cap=bool(record["carve_before_cap"]),
        subsample=next(f for f in CAP_SUBSETS.values() if f.__name__ == record.get("subsample", cap_dataset.__name__)),
        eval_cap=eval_cap,
        with_dev=with_dev,
    )
