"""The `--custom_tasks_file` reader: a JSON list of task objects → `(TaskSpec, TaskSource)`, each problem (unknown
field, metric name, missing data file, duplicate name, ...) one line at its line and field."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hf_async_mtl.metrics import _is_local_path  # _is_local_path: the rule compute_task_metrics applies
from hf_async_mtl.sources import DATA_SUFFIXES, TaskSource, has_glob
from hf_async_mtl.spec_inference import infer_task_spec
from hf_async_mtl.tasks import TaskSpec, head_label_names

from .errors import UsageError, did_you_mean, key_line, line_of, read_json_file

DATA_FILE_KEYS = ("train_file", "validation_file")
# A task's data: files (DATA_FILE_KEYS) or a data set (`dataset` + options); `columns` maps fields for both.
DATASET_KEYS = ("dataset", "config", "splits", "revision")
SOURCE_KEYS = (*DATA_FILE_KEYS, *DATASET_KEYS, "columns")
_SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(TaskSpec))
_FIELD_TYPES = {
    "name": "a string",
    "label_field": "a string",
    "main_metric": "a string",
    "prompt_eval": "a string",
    "pair_encoding": "a string",
    "pair_head": "a string",
    "greater_is_better": "true or false",
    "extra": "an object",
}


def _array_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of each element of the top-level JSON array in `text` (already known to parse)."""
    decoder = json.JSONDecoder()
    spans = []
    position = text.index("[") + 1
    whitespace = re.compile(r"[\s,]*")
    while True:
        position = whitespace.match(text, position).end()
        if position >= len(text) or text[position] == "]":
            return spans
        _, end = decoder.raw_decode(text, position)
        spans.append((position, end))
        position = end


def task_metric_problem(spec: TaskSpec) -> tuple[str, str] | None:
    """`(field, problem)` when an `evaluate_metrics` script of `spec` does not exist; else None. (The built-in
    metrics are checked by `TaskSpec` itself: `hf_async_mtl.tasks.metrics_problem`.)"""
    for metric_id in spec.evaluate_metrics:
        if _is_local_path(metric_id) and not os.path.exists(os.path.expanduser(metric_id)):
            return "evaluate_metrics", f"no metric script at {os.path.abspath(os.path.expanduser(metric_id))}"
    return None


def _entry_problem(entry: Mapping[str, Any], base: str, need_train: bool = True) -> tuple[str, str] | None:
    """`(field, problem)` of the first thing wrong with one task object (before `TaskSpec` sees it); with
    `need_train=False` (a run that does not train) a task read from files needs only its `validation_file`."""
    known = (*_SPEC_FIELDS, *SOURCE_KEYS)
    for key in entry:
        if key not in known:
            return key, f"unknown field{did_you_mean(key, known)}; fields: {list(known)}"
    if entry.get("objective", "supervised") != "supervised":
        return "objective", (
            "MLM auxiliary tasks read the text of a trained task: use --mlm_tasks TASK, not the custom tasks file"
            if entry.get("objective") == "mlm"
            else f'must be "supervised" here, got {json.dumps(entry.get("objective"))}'
        )
    for key in ("name", "text_fields"):
        if key not in entry:
            return key, "missing (every task needs name, text_fields, and train_file + validation_file or dataset)"
    has_files = any(key in entry for key in DATA_FILE_KEYS)
    if has_files and "dataset" in entry:
        return "dataset", "give either dataset or train_file / validation_file, not both"
    if not has_files and "dataset" not in entry:
        return "name", "no data: give train_file and validation_file (files), or dataset (a Hub id or a directory)"
    if has_files:
        for key in DATA_FILE_KEYS if need_train else ("validation_file",):
            if key not in entry:
                return key, (
                    "missing (a task read from files needs train_file and validation_file)"
                    if need_train
                    else "missing (a run that evaluates reads each task's validation_file)"
                )
        for key in ("config", "splits", "revision"):
            if key in entry:
                return key, "applies to dataset, not to train_file / validation_file"
    for key, kind in _FIELD_TYPES.items():
        value = entry.get(key)
        if key in entry and not (
            (kind == "a string" and isinstance(value, str))
            or (kind == "true or false" and isinstance(value, bool))
            or (kind == "an object" and isinstance(value, dict))
        ):
            return key, f"must be {kind}, got {json.dumps(value)}"
    fields = entry["text_fields"]
    if not isinstance(fields, list) or not 1 <= len(fields) <= 2 or not all(isinstance(f, str) and f for f in fields):
        return (
            "text_fields",
            f'must be a list of one or two column names, e.g. ["text"] or ["premise", "hypothesis"]; got {json.dumps(fields)}',
        )
    labels = entry.get("label_names")
    if labels is not None and (not isinstance(labels, list) or not all(isinstance(n, str) for n in labels)):
        return (
            "label_names",
            f"must be a list of label names (strings), null for a regression task, or left out to take them from the data; got {json.dumps(labels)}",
        )
    if isinstance(entry.get("prompt_templates"), str):
        entry = {**entry, "prompt_templates": [entry["prompt_templates"]]}
    for key in ("metrics", "evaluate_metrics", "validation_splits", "prompt_templates"):
        value = entry.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return key, f"must be a list of strings, got {json.dumps(value)}"
    bounds = entry.get("regression_range")
    if bounds is not None and (
        not isinstance(bounds, list) or len(bounds) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
    ):
        return "regression_range", f"must be [low, high] (two numbers), got {json.dumps(bounds)}"
    for key in ("splits", "columns"):
        value = entry.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
            return key, f'must be an object of names, e.g. {{"validation": "dev"}}; got {json.dumps(value)}'
    for key in ("dataset", "config", "revision"):
        if key in entry and (not isinstance(entry[key], str) or not entry[key]):
            return key, f"must be a non-empty string, got {json.dumps(entry[key])}"
    for key in (DATA_FILE_KEYS if need_train else ("validation_file",)) if has_files else ():
        value = entry[key]
        if not isinstance(value, str) or not value:
            return key, f"must be a file path (relative to this file), got {json.dumps(value)}"
        path = os.path.join(base, value)
        if has_glob(value) and not os.path.exists(path):
            if not glob.glob(path):
                return key, f"no data file matches {path}"
        elif not os.path.exists(path):
            return key, f"data file {path} does not exist"
        if not os.path.isdir(path) and os.path.splitext(value)[1].lower() not in DATA_SUFFIXES:
            return key, f"{value}: unsupported file type; use {', '.join(DATA_SUFFIXES)} or a save_to_disk directory"
    return None


def _entry_source(entry: Mapping[str, Any], base: str, need_train: bool = True) -> TaskSource:
    """The `TaskSource` of a checked task object; local paths are relative to the tasks file (the training file
    only where the run trains)."""
    columns = dict(entry.get("columns", {}))
    if "dataset" not in entry:
        keys = {"train": "train_file", "validation": "validation_file"} if need_train else {"validation": "validation_file"}
        return TaskSource(data_files={split: os.path.join(base, entry[key]) for split, key in keys.items()}, columns=columns)
    dataset = entry["dataset"]
    local = os.path.join(base, os.path.expanduser(dataset))
    if dataset.startswith((".", "/", "~")) or os.path.isdir(local):
        dataset = local
    return TaskSource(
        dataset=dataset, config=entry.get("config"), splits=dict(entry.get("splits", {})), columns=columns, revision=entry.get("revision")
    )


def read_custom_tasks(
    path: str,
    taken_names: Iterable[str] = (),
    *,
    cache_dir: str | None = None,
    need_train: bool = True,
    saved_heads: Sequence[Mapping[str, Any]] | None = None,
) -> list[tuple[TaskSpec, TaskSource]]:
    """The tasks of a `--custom_tasks_file`: `[(spec, source), ...]`.

    Each task object holds `TaskSpec` fields and its data: `train_file` + `validation_file` (any format
    `hf_async_mtl.sources` reads; paths relative to the JSON file), or `dataset` (a Hub id or a directory)
    with optional `config`, `splits` and `revision`; `columns` maps task fields to other column names. A task
    without `label_names` takes its label set from its training data (`infer_task_spec`: that reads the
    training split's label column); `"label_names": null` declares a regression task. A run that does not train
    (`need_train=False`) needs only `validation_file`, and a task without `label_names` takes its labels from the
    saved model's head of that name (`saved_heads`: `MultiTaskConfig.tasks`), so its training set is never read
    (without such a head, from the training split where the entry has one). Every problem is a
    `UsageError` naming the file, the 1-based line of the field and the field: JSON syntax, unknown or
    missing fields, wrong types, metric names, names used twice (or by `taken_names`, e.g. the GLUE tasks
    of `--tasks`), data files that do not exist, data whose labels cannot be inferred.
    """
    entries, text = read_json_file(path, "custom tasks file")
    if not isinstance(entries, list):
        raise UsageError(f"{path}, line 1: expected a JSON list of task objects, got a {type(entries).__name__}.")
    if not entries:
        raise UsageError(f"{path}, line 1: the list of tasks is empty.")
    base = os.path.dirname(os.path.abspath(path))
    heads = {head["name"]: head for head in saved_heads or ()}
    taken = set(taken_names)
    tasks = []
    for number, (entry, (start, end)) in enumerate(zip(entries, _array_spans(text)), start=1):

        def fail(field: str | None, problem: str, entry=entry, number=number, start=start, end=end) -> UsageError:
            line = (key_line(text, field, start, end) if field else None) or line_of(text, start)
            where = f"{path}, line {line}" + (f", field {field!r}" if field else "")
            name = entry.get("name") if isinstance(entry, dict) else None
            task = f" (task {name!r})" if isinstance(name, str) else f" (task {number})"
            return UsageError(f"{where}{task}: {problem}.")

        if not isinstance(entry, dict):
            raise fail(None, f"expected a task object, got a {type(entry).__name__}")
        problem = _entry_problem(entry, base, need_train)
        if problem is not None:
            raise fail(*problem)
        if entry["name"] in taken:
            raise fail("name", f"task {entry['name']!r} is given twice (in --tasks or earlier in this file); task names must be unique")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items() if k not in SOURCE_KEYS}
        try:
            source = _entry_source(entry, base, need_train)
        except ValueError as error:
            raise fail("dataset" if "dataset" in entry else "train_file", str(error).rstrip(".")) from None
        head = heads.get(entry["name"])
        if "label_names" not in entry and not need_train and head is None and "dataset" not in entry and "train_file" not in entry:
            raise fail(
                "label_names",
                "missing, and this run reads no training set to take the labels from: give label_names "
                "(null for a regression task), or evaluate a saved model that has a head for this task",
            )
        try:
            if "label_names" in entry:
                spec = TaskSpec(**values)
            elif not need_train and head is not None:  # the saved head's labels: the classes the model predicts
                labels = tuple(head_label_names(head)) if head.get("problem_type") != "regression" else None
                spec = TaskSpec(**values, label_names=labels)
            else:  # labels from the training split (which a run that does not train reads only for this)
                labels_from = source if need_train or "dataset" in entry else _entry_source(entry, base, need_train=True)
                spec = infer_task_spec(values.pop("name"), labels_from, values.pop("text_fields"), cache_dir=cache_dir, **values)
        except (TypeError, ValueError, FileNotFoundError) as error:
            message = str(error).removeprefix(f"Task {entry['name']!r}: ")
            # The field the message names as a word ("names" of a label set is no `name` field).
            field = getattr(error, "option", None) or next(
                (f for f in sorted(_SPEC_FIELDS, key=len, reverse=True) if re.search(rf"\b{re.escape(f)}\b", message)), None
            )
            if "label_names" not in entry and field is None:
                field = "dataset" if "dataset" in entry else "train_file"
            raise fail(field, message.rstrip(".")) from None
        problem = task_metric_problem(spec)
        if problem is not None:
            raise fail(*problem)
        taken.add(spec.name)
        tasks.append((spec, source))
    return tasks
