"""Per-task data: loading user files, validating labels, tokenizing, the multi-task dataset and collator."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from .bi_encoder import PAIR_INPUT_COLUMNS, PAIR_PREFIX
from .encoding import (  # noqa: F401  (re-exported: the encoding of a task's rows lives in .encoding)
    EXAMPLE_IDS_COLUMN,
    MODEL_INPUT_COLUMNS,
    PAIR_IDS_COLUMN,
    TASK_IDS_COLUMN,
    TEMPLATE_IDS_COLUMN,
    batch_encoder,
    encoding_fingerprint,
    length_order,
    num_template_views,
    template_view,
    token_lengths,
    token_rows,
    tokenize_task,
)
from .errors import did_you_mean
from .sampling import STREAM_SPAN
from .sources import TaskDataSource, TaskSource, load_task
from .tasks import TaskSpec

logger = logging.getLogger(__name__)

# ---- user-defined tasks from files ------------------------------------------------------------


def load_task_file(spec: TaskSpec, path: str | os.PathLike) -> datasets.Dataset:
    """Load one split of a user-defined task from one file (csv, tsv, json, jsonl, parquet, arrow) or a
    `Dataset.save_to_disk` directory: `load_task(spec, TaskSource(data_files={"train": path}))`.

    See `hf_async_mtl.sources` for the formats, label parsing and error messages. Returns a dataset with
    the text columns, `label` and `idx` (row number from 0).
    """
    return load_task(spec, TaskSource(data_files={"train": os.fspath(path)}), "train")


# ---- validation -------------------------------------------------------------------------------


def validate_task_dataset(spec: TaskSpec, dataset: datasets.Dataset, source: str, *, labelled: bool = True) -> None:
    """Check that `dataset` fits `spec`: text columns present, labels inside the label set or range.

    `source` names the data (a file or split) in error messages, which cite the 0-based example index
    (file loaders — `load_task_file`, the GLUE TSV reader — check labels earlier, citing the file's line).
    Unlabelled splits (GLUE test sets, label -1) pass with `labelled=False`.
    """
    if len(dataset) == 0:
        raise ValueError(f"Task {spec.name!r}: {source} is empty.")
    missing = [c for c in (*spec.text_fields, *(() if spec.is_mlm else ("label",))) if c not in dataset.column_names]
    if missing:
        raise ValueError(f"Task {spec.name!r}: {source} has no column {missing}; columns: {dataset.column_names}.")
    if not labelled or spec.is_mlm:
        return
    check_label_values(spec, dataset.with_format("arrow")["label"], source)  # the rows dataset selects, as arrow


def check_label_values(spec: TaskSpec, column: Any, source: str, field: str = "label") -> None:
    """Raise a `ValueError` naming `source` and the first bad example (0-based) unless every value of `column`
    (an arrow array or a sequence) is a label of `spec`: a class id in `[0, num_labels)`, or a finite regression
    target inside `regression_range`. Text labels are refused with what the task needs instead."""
    kind = getattr(column, "type", None)
    if kind is not None and (pa.types.is_string(kind) or pa.types.is_large_string(kind)) and len(column):
        need = "a float target" if spec.is_regression else f"a class id 0..{spec.num_labels - 1} of {list(spec.label_names or ())}"
        raise ValueError(
            f"Task {spec.name!r}: {source}, example 0 (0-based): {field} is text ({column[0].as_py()!r}); the task needs {need}."
        )
    values = column.to_numpy(zero_copy_only=False) if hasattr(column, "to_numpy") else np.asarray(column, dtype=object)
    try:
        labels = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        row = next(i for i, value in enumerate(values) if not isinstance(value, (int, float, np.number)) or isinstance(value, bool))
        need = "a float target" if spec.is_regression else f"a class id 0..{spec.num_labels - 1} of {list(spec.label_names or ())}"
        raise ValueError(
            f"Task {spec.name!r}: {source}, example {row} (0-based): {field} is {values[row]!r}; the task needs {need}."
        ) from None
    if spec.is_regression:
        bad = np.flatnonzero(~np.isfinite(labels))
        if bad.size:
            raise ValueError(f"Task {spec.name!r}: {source}, example {bad[0]} (0-based): regression target is {labels[bad[0]]}.")
        if spec.regression_range is not None:
            low, high = spec.regression_range
            if kind is not None and pa.types.is_float32(kind):  # tokenize_task stores float32: its bounds at that precision
                labels, low, high = labels.astype(np.float32), np.float32(low), np.float32(high)
            bad = np.flatnonzero((labels < low) | (labels > high))
            if bad.size:
                raise ValueError(
                    f"Task {spec.name!r}: {source}, example {bad[0]} (0-based): target {labels[bad[0]]} is outside [{low}, {high}]."
                )
        return
    bad = np.flatnonzero(~np.isfinite(labels) | (labels < 0) | (labels >= spec.num_labels) | (labels != np.round(labels)))
    if bad.size:
        raise ValueError(
            f"Task {spec.name!r}: {source}, example {bad[0]} (0-based): label {labels[bad[0]]:g} is outside the label set "
            f"{list(spec.label_names or ())} (ids 0..{spec.num_labels - 1})."
        )


# ---- splits and tokenization ------------------------------------------------------------------


def carve_validation_split(
    dataset: datasets.Dataset, fraction: float = 0.1, max_examples: int | None = 500, seed: int = 42
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split `dataset` into (train, held-out validation) with a seeded shuffle.

    The held-out part has `fraction` of the examples, capped at `max_examples` and at least one;
    it is what selection (convergence monitoring, early stopping, best checkpoints) should read,
    so that the reported dev set is never used to choose anything.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be a number in (0, 1), got {fraction!r}.")
    _check_count("max_examples", max_examples)
    size = max(1, int(math.floor(len(dataset) * fraction)))
    if max_examples is not None:
        size = min(size, max_examples)
    if size >= len(dataset):
        raise ValueError(f"Cannot hold out {size} of {len(dataset)} examples: nothing would be left to train on.")
    order = np.random.default_rng(seed).permutation(len(dataset))
    return dataset.select(np.sort(order[size:])), dataset.select(np.sort(order[:size]))


def _check_count(name: str, value: Any) -> None:
    """A `ValueError` unless `value` is None or an int >= 1 (a cap, a maximum size)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        raise ValueError(f"{name} must be None or an int >= 1, got {value!r}.")


def _check_build_options(tasks: Sequence[Any], max_seq_length: Any, caps: Mapping[str, Any], default_cap: Any, **counts: Any) -> None:
    """`build_task_datasets`' arguments, before any data is read: (spec, source) pairs with distinct names, sizes that
    are ints >= 1 (caps naming no task here are warned about)."""
    for position, pair in enumerate(tasks):
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], TaskSpec)):
            raise TypeError(f"build_task_datasets: tasks[{position}] must be a (TaskSpec, source) pair, got {type(pair).__name__}.")
        if not isinstance(pair[1], TaskDataSource):
            hint = ": wrap it, DatasetsSource(spec, source)" if isinstance(pair[1], TaskSource) else ""
            raise TypeError(
                f"build_task_datasets: task {pair[0].name!r}'s source is a {type(pair[1]).__name__}, not a TaskDataSource{hint}."
            )
    names = [spec.name for spec, _ in tasks]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"build_task_datasets: task(s) {twice} are given twice.")
    if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, (int, np.integer)) or max_seq_length < 1:
        raise ValueError(f"build_task_datasets: max_seq_length must be an int >= 1, got {max_seq_length!r}.")
    groups = {source.cap_group or spec.name for spec, source in tasks}
    for name, cap in caps.items():
        if name not in groups:  # a cap table shared by several builds (one task's run of a five-task table) is fine
            logger.warning("build_task_datasets: caps names %r, which is no task here%s: ignored.", name, did_you_mean(str(name), groups))
        _check_count(f"caps[{name!r}]", cap)
    for name, value in {"default_cap": default_cap, **counts}.items():
        _check_count(name, value)


def cap_dataset(dataset: datasets.Dataset, limit: int | None, seed: int) -> datasets.Dataset:
    """A seeded random subset of `limit` examples, in shuffled order (all of them, in order, when `limit` is None or
    not smaller): the command line's `--max_train_samples` / `--max_eval_samples`."""
    if limit is None or limit >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(limit))


def subset_in_order(dataset: datasets.Dataset, limit: int | None, seed: int) -> datasets.Dataset:
    """A seeded random subset of `limit` examples kept in the dataset's order (all of them when `limit` is None or not
    smaller): `--cap_subset in_order`, what the #42 regime benchmarks cap with."""
    if limit is None or limit >= len(dataset):
        return dataset
    return dataset.select(np.sort(np.random.default_rng(seed).permutation(len(dataset))[:limit]))


# `--cap_subset` choice -> the function that caps a training set (the name a selection record keeps is the function's)
CAP_SUBSETS: dict[str, Callable[[datasets.Dataset, int | None, int], datasets.Dataset]] = {
    "shuffled": cap_dataset,
    "in_order": subset_in_order,
}


@dataclass
class TaskDatasets:
    """The tokenised data of a run, task by task (in the order the tasks were given).

    Attributes:
        train: Task → training set (a `hf_async_mtl.streaming.StreamedTask` for a streamed task).
        selection: Task → selection split carved from its training data (empty without one).
        dev: Task → {split: dev set} (the task's `validation_splits`).
        train_sizes: Task → training examples after capping and carving (a streamed task: its declared size, or None).
        selection_records: Task → how its selection split was made (`selection_record`): what a later step
            (merging single-task models, `hf_async_mtl.merging`) needs to carve the same split again and check it.
    """

    train: dict[str, Any]
    selection: dict[str, datasets.Dataset]
    dev: dict[str, dict[str, datasets.Dataset]]
    train_sizes: dict[str, int | None]
    selection_records: dict[str, dict[str, Any]] = field(default_factory=dict)


def rows_fingerprint(dataset: datasets.Dataset, columns: Sequence[str]) -> str:
    """SHA-256 hex digest of the values of `columns` in every row of `dataset`, in order (as JSON).

    Two splits with the same digest hold the same examples (texts, labels, row ids) in the same order.
    """
    digest = hashlib.sha256(b"hf_async_mtl.rows_fingerprint.v1")
    values = dataset.select_columns(list(columns)).to_dict()
    digest.update(json.dumps([values[name] for name in columns], ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def selection_record(
    spec: TaskSpec,
    held_out: datasets.Dataset | None,
    *,
    seed: int,
    selection_fraction: float,
    selection_max: int | None,
    cap: int | None,
    carve_before_cap: bool,
    max_seq_length: int,
    subsample: Callable[..., Any] = cap_dataset,
) -> dict[str, Any]:
    """How `build_task_datasets` made a task's selection split: its options, size and the rows' fingerprint.

    `run_glue_mtl.py` saves one per task in the model's `config.selection_splits`; `selection_rows_sha256` is the
    `rows_fingerprint` of the held-out rows (text fields, label, `idx`), so a rebuilt split can be checked.
    """
    columns = [c for c in (*spec.text_fields, "label", "idx") if held_out is not None and c in held_out.column_names]
    return {
        "seed": seed,
        "selection_fraction": selection_fraction,
        "selection_max": selection_max,
        "cap": cap,
        "carve_before_cap": carve_before_cap,
        "subsample": getattr(subsample, "__name__", repr(subsample)),
        "max_seq_length": max_seq_length,
        "selection_size": 0 if held_out is None else len(held_out),
        "selection_rows_sha256": None if held_out is None else rows_fingerprint(held_out, columns),
    }


def build_task_datasets(
    tasks: Sequence[tuple[TaskSpec, TaskDataSource]],
    tokenizer: PreTrainedTokenizerBase,
    max_seq_length: int = 128,
    *,
    caps: Mapping[str, int | None] | None = None,
    default_cap: int | None = None,
    seed: int = 42,
    selection_fraction: float = 0.1,
    selection_max: int | None = 500,
    carve_before_cap: bool = False,
    eval_cap: int | None = None,
    with_train: bool = True,
    with_dev: bool = True,
    subsample: Callable[[datasets.Dataset, int | None, int], datasets.Dataset] = cap_dataset,
    num_proc: int | None = None,
    main_process_first: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> TaskDatasets:
    """The one path from task sources to tokenised train / selection / dev sets, for the command line, the
    benchmarks and Python users alike.

    First every task's splits are loaded and checked against its spec (`validate_task_dataset`), so bad data is
    reported before any tokenisation. Then, per task: the training set is capped (`caps[task]`, else
    `default_cap`; a derived source uses its `cap_group`'s cap and seed, so it reads the same rows) and a selection
    split of `selection_fraction` (at most `selection_max`) is carved from it — from the full training set before
    capping with `carve_before_cap` (a larger split at no cost to a capped pool) — all seeded with `seed`; dev
    splits are capped at `eval_cap`. Task ids are the tasks' positions. `selection_fraction=0` carves nothing
    (selection then has to read other data: the caller decides). `with_train=False` (a run that only evaluates or
    predicts) neither reads nor tokenises training sets, so it has no train or selection sets; `with_dev=False` skips
    the dev sets. Tokenisation runs under `main_process_first` (e.g. `TrainingArguments.main_process_first`), so
    several processes map once.
    """
    caps = dict(caps or {})
    _check_build_options(tasks, max_seq_length, caps, default_cap, selection_max=selection_max, eval_cap=eval_cap)
    if isinstance(selection_fraction, bool) or not isinstance(selection_fraction, (int, float)) or not 0.0 <= selection_fraction < 1.0:
        raise ValueError(f"build_task_datasets: selection_fraction must be a number in [0, 1), got {selection_fraction!r}.")
    raw_train, raw_dev = {}, {}
    for spec, source in tasks:
        if with_train and not source.streaming:  # a streamed task's rows are checked as they are read (its first block: below)
            raw_train[spec.name] = source.load("train")
            validate_task_dataset(spec, raw_train[spec.name], f"{spec.name} train split")
        if with_dev:
            raw_dev[spec.name] = {split: source.load(split) for split in spec.validation_splits}
            for split, dataset in raw_dev[spec.name].items():
                validate_task_dataset(spec, dataset, f"{spec.name} {split} split")
    result = TaskDatasets(train={}, selection={}, dev={}, train_sizes={})
    with main_process_first():
        for task_id, (spec, source) in enumerate(tasks):
            group = source.cap_group or spec.name
            limit = caps.get(group, default_cap)
            if with_train and source.streaming:
                _add_streamed_task(result, spec, source, tokenizer, task_id, max_seq_length, limit, seed, selection_fraction, selection_max)
            elif with_train:
                pool, held_out = raw_train[spec.name], None
                if carve_before_cap and selection_fraction > 0:
                    pool, held_out = _carve_selection(spec.name, pool, selection_fraction, selection_max, seed, None)
                pool = subsample(pool, limit, seed)
                if not carve_before_cap and selection_fraction > 0:
                    pool, held_out = _carve_selection(spec.name, pool, selection_fraction, selection_max, seed, limit)
                if held_out is not None:
                    result.selection[spec.name] = tokenize_task(spec, held_out, tokenizer, task_id, max_seq_length)
                result.selection_records[spec.name] = selection_record(
                    spec,
                    held_out,
                    seed=seed,
                    selection_fraction=selection_fraction,
                    selection_max=selection_max,
                    cap=limit,
                    carve_before_cap=carve_before_cap,
                    max_seq_length=max_seq_length,
                    subsample=subsample,
                )
                result.train[spec.name] = tokenize_task(spec, pool, tokenizer, task_id, max_seq_length, num_proc=num_proc)
                result.train_sizes[spec.name] = len(pool)
            if with_dev:
                result.dev[spec.name] = {
                    split: tokenize_task(spec, cap_dataset(dataset, eval_cap, seed), tokenizer, task_id, max_seq_length)
                    for split, dataset in raw_dev[spec.name].items()
                }
    return result


def _carve_selection(
    task: str, pool: datasets.Dataset, fraction: float, max_examples: int | None, seed: int, cap: int | None
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """`carve_validation_split` of one task's training pool; a pool too small to split is an error naming the task."""
    try:
        return carve_validation_split(pool, fraction, max_examples, seed)
    except ValueError as error:
        capped = f" (capped at {cap})" if cap is not None and cap <= len(pool) else ""
        raise ValueError(
            f"task {task!r}: its training set{capped} has {len(pool)} example(s), too few to carve a selection split "
            f"from ({str(error).rstrip('.')}); give it more examples{' (raise the cap)' if capped else ''}, or carve none "
            "(selection_fraction=0, on the command line --selection_split_fraction 0)."
        ) from None


def _add_streamed_task(
    result: TaskDatasets,
    spec: TaskSpec,
    source: Any,
    tokenizer: PreTrainedTokenizerBase,
    task_id: int,
    max_seq_length: int,
    limit: int | None,
    seed: int,
    selection_fraction: float,
    selection_max: int | None,
) -> None:
    """A streamed task (`hf_async_mtl.streaming.StreamingSource`): its first rows held out as the selection split, the
    rows after them (at most `limit` per pass) a `StreamedTask` that training reads as it draws them."""
    count = source.selection_count(selection_fraction, selection_max) if selection_fraction > 0 else 0
    held_out = source.held_out(count) if count else None
    if held_out is not None:
        result.selection[spec.name] = tokenize_task(spec, held_out, tokenizer, task_id, max_seq_length)
    record = selection_record(
        spec,
        held_out,
        seed=seed,
        selection_fraction=selection_fraction,
        selection_max=selection_max,
        cap=limit,
        carve_before_cap=False,
        max_seq_length=max_seq_length,
    )
    result.selection_records[spec.name] = {**record, "streamed": "the first rows of the training split"}
    stream = source.training_stream(spec, tokenizer, task_id, max_seq_length, first_row=count, limit=limit, seed=seed)
    result.train[spec.name] = stream
    result.train_sizes[spec.name] = stream.declared_size


# ---- multi-task dataset and collator ----------------------------------------------------------


class MultiTaskDataset(torch.utils.data.Dataset):
    """The tasks' datasets side by side; global index = task offset + index inside the task.

    Every item carries `example_ids` (its index inside its task), so the trainer can look up the
    soft labels of a distilled task when it computes the loss. Looking them up at loss time rather
    than collation time keeps prefetched batches and worker processes correct right after a task
    switches to distillation.

    A task tokenized with a prompt-template pool holds `k` views of its `n` examples (see
    `tokenize_task`); it counts as `n` examples, and an index `(global index, template)` — what
    `MultiTaskBatchSampler` yields when given `num_templates` — reads that template's view.
    """

    def __init__(self, task_datasets: Mapping[str, Any]) -> None:
        if not task_datasets:
            raise ValueError("MultiTaskDataset needs at least one task.")
        self.task_datasets = dict(task_datasets)
        self.task_names = list(self.task_datasets)
        self.streamed = frozenset(name for name, d in self.task_datasets.items() if is_streamed(d))
        self.num_templates = {name: 1 if name in self.streamed else num_template_views(d) for name, d in self.task_datasets.items()}
        spans = [STREAM_SPAN if name in self.streamed else len(d) // self.num_templates[name] for name, d in self.task_datasets.items()]
        self.offsets = np.concatenate([[0], np.cumsum(spans)]).astype(np.int64)

    @property
    def task_sizes(self) -> dict[str, int | None]:
        """Number of examples of each task, in task order (a template pool's views count once; a streamed task: its
        declared size, or None)."""
        return {
            name: d.declared_size if name in self.streamed else len(d) // self.num_templates[name] for name, d in self.task_datasets.items()
        }

    def template_view(self, task: str, template: int = 0) -> datasets.Dataset:
        """Task `task`'s examples under one template (the whole task when it has no templates)."""
        if task in self.streamed:
            raise ValueError(f"Task {task!r} is streamed: its rows are read as training draws them, not held as a data set.")
        return template_view(self.task_datasets[task], template, self.num_templates[task])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[str, int]:
        """(task name, local index) of global index `index`."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} examples.")
        task_position = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.task_names[task_position], index - int(self.offsets[task_position])

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        template = 0
        if isinstance(index, (tuple, list)):
            index, template = index
        task, local = self.locate(int(index))
        if task in self.streamed:
            if template:
                raise IndexError(f"template {template} out of range for streamed task {task!r}.")
            return self.task_datasets[task].features([local])[0]
        count = self.num_templates[task]
        if not 0 <= template < count:
            raise IndexError(f"template {template} out of range for task {task!r} with {count} template view(s).")
        row = self.task_datasets[task][int(template) * (len(self.task_datasets[task]) // count) + local]
        item = {k: row[k] for k in (*MODEL_INPUT_COLUMNS, "labels", TASK_IDS_COLUMN) if k in row}
        item[EXAMPLE_IDS_COLUMN] = local
        return item

    def __getitems__(self, indices: Sequence[Any]) -> list[dict[str, Any]]:
        """The items of one batch (what `DataLoader` fetches): a streamed task's rows are read and tokenised together."""
        if not self.streamed:
            return [self[index] for index in indices]
        located = [self.locate(int(index)) if not isinstance(index, (tuple, list)) else None for index in indices]
        items: list[dict[str, Any] | None] = [None] * len(indices)
        for task in self.streamed:
            positions = [i for i, where in enumerate(located) if where is not None and where[0] == task]
            if positions:
                rows = self.task_datasets[task].features([located[i][1] for i in positions])  # type: ignore[index]
                for i, row in zip(positions, rows):
                    items[i] = row
        return [self[index] if item is None else item for index, item in zip(indices, items)]

    def lengths(self) -> dict[str, list[int]]:
        """Token lengths per task (for length-aware batching; a bi-encoder pair counts its two texts' tokens); streamed
        tasks have none (they are read as drawn, and grouped inside each block: `StreamedTask.group_by_length`)."""
        return {name: token_lengths(self.template_view(name)).tolist() for name in self.task_names if name not in self.streamed}


def is_streamed(task_data: Any) -> bool:
    """Whether a task's training data is a stream (`hf_async_mtl.streaming.StreamedTask`), not a `datasets.Dataset`."""
    return not isinstance(task_data, datasets.Dataset) and hasattr(task_data, "declared_size") and hasattr(task_data, "features")


_COLLATED_COLUMNS = frozenset((*MODEL_INPUT_COLUMNS, "labels", TASK_IDS_COLUMN, EXAMPLE_IDS_COLUMN))


@dataclass
class MultiTaskDataCollator:
    """Pads task-homogeneous batches (dynamic padding) and keeps `task_ids` and `example_ids`.

    A batch that mixes tasks (the "all tasks per step" composition) is returned as
    `{"task_batches": {task_id: padded batch, ...}}` in task-id order.

    Batches of MLM tasks (no labels) are padded like the others; the trainer masks them at loss time
    (`hf_async_mtl.mlm.MlmMasker`), with draws seeded by the step, so a resumed run masks identically.

    A bi-encoder pair task's text b (`pair_input_ids`, ...) is padded on its own, to the longest text b of the batch.
    """

    tokenizer: PreTrainedTokenizerBase
    pad_to_multiple_of: int | None = None

    def __post_init__(self) -> None:
        _check_count("pad_to_multiple_of", self.pad_to_multiple_of)
        self._pad = DataCollatorWithPadding(self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of)

    def _collate_one(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        # Only what the model or the loss reads: raw text, `idx` and other columns are dropped.
        kept = [{k: v for k, v in f.items() if k in _COLLATED_COLUMNS} for f in features]
        if not kept or PAIR_IDS_COLUMN not in kept[0]:
            return self._pad(kept)
        first = self._pad([{k: v for k, v in f.items() if k not in PAIR_INPUT_COLUMNS} for f in kept])
        second = self._pad([{k[len(PAIR_PREFIX) :]: v for k, v in f.items() if k in PAIR_INPUT_COLUMNS} for f in kept])
        return {**first, **{PAIR_PREFIX + key: value for key, value in second.items()}}

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        task_ids = [int(f[TASK_IDS_COLUMN]) for f in features]
        if len(set(task_ids)) == 1:
            return self._collate_one(features)
        grouped: dict[int, list[Mapping[str, Any]]] = {}
        for feature, task_id in zip(features, task_ids):
            grouped.setdefault(task_id, []).append(feature)
        return {"task_batches": {task_id: self._collate_one(grouped[task_id]) for task_id in sorted(grouped)}}
