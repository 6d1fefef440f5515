"""What a Python caller hands `MultiTaskTrainer`, checked before any work.

Each problem is one error naming the task, the dataset and, where it applies, the row, raised when the trainer is
built, instead of an index error deep inside a training step, a crash at the first evaluation or a run that trains
the wrong head. The command line checks its own input earlier (`cli/preflight.py`). These checks cover what reaches
the trainer from Python:

- the containers: a `MultiTaskModel`, a sequence of `TaskSpec`, datasets given as task name → dataset;
- which tasks have data: a task without training or evaluation data is a warning, not an error (per-task
  fine-tuning trains one task of a multi-task model at a time; async-KD may watch some tasks only);
- what `tokenize_task` made of each `datasets.Dataset`: rows present, model inputs present, the task id that
  routes its batches to the task's head, labels the task can score, token ids inside the encoder's vocabulary and
  rows no longer than its position embeddings;
- `metric_for_best_model` against the keys the evaluation will report.

Streamed tasks (`datasets.IterableDataset`, `StreamedTask`) and other dataset types are checked as they are drawn.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from .data import check_label_values
from .encoding import PAIR_IDS_COLUMN, TASK_IDS_COLUMN
from .errors import did_you_mean
from .modeling import MultiTaskModel
from .tasks import TaskSpec

logger = logging.getLogger(__name__)

TOKEN_COLUMNS = ("input_ids", PAIR_IDS_COLUMN)


def check_task_specs(task_specs: Any) -> list[TaskSpec]:
    """`task_specs` as a list, or a `TypeError` unless it is a sequence of `TaskSpec`."""
    if isinstance(task_specs, (str, bytes, Mapping)) or not isinstance(task_specs, Sequence):
        hint = " (e.g. list(specs.values()))" if isinstance(task_specs, Mapping) else ""
        raise TypeError(f"task_specs must be a list of TaskSpec{hint}, got a {type(task_specs).__name__}.")
    for position, spec in enumerate(task_specs):
        if not isinstance(spec, TaskSpec):
            raise TypeError(f"task_specs[{position}] is a {type(spec).__name__}, not a TaskSpec.")
    return list(task_specs)


def check_model(model: Any) -> None:
    """A `TypeError` unless `model` is a `MultiTaskModel`."""
    if not isinstance(model, MultiTaskModel):
        raise TypeError(
            f"MultiTaskTrainer trains a MultiTaskModel (MultiTaskModel.from_encoder(checkpoint, task_specs)), got a {type(model).__name__}."
        )


def evaluation_keys(task: str, value: Any) -> list[str]:
    """The names a task's evaluation set(s) are reported under: the task's name for its first (or only) set, then
    `<task>_<split>` for each further split of a `{split: dataset}` mapping (as `MultiTaskTrainer.evaluate` does)."""
    if isinstance(value, Mapping):
        return [task if position == 0 else f"{task}_{split}" for position, split in enumerate(value)]
    return [task]


def reported_metric_problem(name: str, specs: Iterable[TaskSpec], eval_keys: Mapping[str, Sequence[str]] | None = None) -> str | None:
    """Why `name` (`metric_for_best_model`, with or without `eval_`) names no metric the evaluation reports, or None.

    Reported: `glue_score`, `loss`, and per evaluation set `<key>_<metric>` for its task's built-in metrics, `score`,
    `loss` and `ece` (`perplexity` for an MLM task); a task with `evaluate` modules may report any `<key>_...` key.
    `eval_keys` maps each task to the keys its sets are reported under (default: the task's name).
    """
    bare = name.removeprefix("eval_")
    known = {"glue_score", "loss"}
    for spec in specs:
        for key in eval_keys.get(spec.name, ()) if eval_keys is not None else (spec.name,):
            if spec.is_mlm:
                known |= {f"{key}_loss", f"{key}_perplexity"}
                continue
            known |= {f"{key}_{m}" for m in (*spec.metrics, "score", "loss", "ece")}
            if spec.evaluate_metrics and bare.startswith(f"{key}_"):
                return None
    if bare in known:
        return None
    return f"the evaluation reports no such metric{did_you_mean(bare, known)}; e.g. 'glue_score', 'loss' or '<task>_score'"


def _task_mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        hint = " (build_task_datasets' result: pass its .train and .selection)" if hasattr(value, "selection") else ""
        raise TypeError(f"{what} must map task names to tokenized datasets ({{'task': dataset, ...}}), got a {type(value).__name__}{hint}.")
    wrong = [key for key in value if not isinstance(key, str)]
    if wrong:
        raise TypeError(f"{what} must be keyed by task names (strings), got the key {wrong[0]!r}.")
    return value


def _column(dataset: datasets.Dataset, name: str) -> pa.ChunkedArray:
    """One column of the rows `dataset` selects, as arrow (no Python objects)."""
    return dataset.with_format("arrow")[name]


def check_task_set(spec: TaskSpec, task_id: int, dataset: Any, where: str, encoder_config: Any = None) -> None:
    """Check one tokenized set of a task (a `datasets.Dataset`; anything else passes): rows, model inputs, task id,
    labels, token ids against `encoder_config.vocab_size` and row lengths against its `max_position_embeddings`."""
    if not isinstance(dataset, datasets.Dataset):
        return
    task = f"Task {spec.name!r}: {where}"
    if len(dataset) == 0:
        raise ValueError(f"{task} is empty.")
    columns = dataset.column_names
    if "input_ids" not in columns:
        raise ValueError(
            f"{task} has no input_ids (columns: {columns}): pass tokenized data, "
            f"tokenize_task(spec, dataset, tokenizer, task_id={task_id})."
        )
    needed = [TASK_IDS_COLUMN, *(() if spec.is_mlm else ("labels",)), *((PAIR_IDS_COLUMN,) if spec.is_bi_encoder else ())]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ValueError(
            f"{task} has no column {missing} (columns: {columns}): tokenize it with tokenize_task(spec, dataset, tokenizer, {task_id})."
        )
    ids = sorted(int(i) for i in pc.unique(_column(dataset, TASK_IDS_COLUMN)).to_pylist() if i is not None)
    if ids != [task_id]:
        raise ValueError(
            f"{task} holds task id(s) {ids}, but {spec.name!r} is task {task_id} of task_specs (its batches go to the head "
            f"of that id): tokenize it with tokenize_task(spec, dataset, tokenizer, {task_id})."
        )
    if not spec.is_mlm:
        check_label_values(spec, _column(dataset, "labels"), where, field="labels")
    if encoder_config is None:
        return
    vocab_size = getattr(encoder_config, "vocab_size", None)
    positions = getattr(encoder_config, "max_position_embeddings", None)
    for name in (c for c in TOKEN_COLUMNS if c in columns):
        tokens = _column(dataset, name)
        if vocab_size is not None:
            largest = pc.max(pc.list_flatten(tokens)).as_py()
            if largest is not None and largest >= vocab_size:
                raise ValueError(
                    f"{task} holds token id {largest} in {name}, but the encoder's vocabulary has {vocab_size} ids: it was "
                    "tokenized with another model's tokenizer (use AutoTokenizer.from_pretrained of the same checkpoint)."
                )
        if positions is not None:
            lengths = pc.list_value_length(tokens)
            longest = pc.max(lengths).as_py()
            if longest is not None and longest > positions:
                row = pc.index(lengths, longest).as_py()
                raise ValueError(
                    f"{task}, example {row} (0-based) has {longest} tokens in {name}, but the encoder takes at most {positions} "
                    f"positions (max_position_embeddings): tokenize with max_seq_length ≤ {positions}."
                )


def check_trainer_inputs(
    model: Any, task_specs: Sequence[TaskSpec], train_dataset: Any, eval_dataset: Any, *, async_kd: bool, metric_for_best_model: str | None
) -> None:
    """Every check of this module on what `MultiTaskTrainer.__init__` received (see the module's docstring).

    `train_dataset` may be a `MultiTaskDataset` (its `task_datasets` are checked) or a mapping task → dataset;
    `eval_dataset` a mapping task → dataset or → `{split: dataset}`.
    """
    check_model(model)
    encoder_config = getattr(model.config, "encoder_config", None)
    position = {spec.name: index for index, spec in enumerate(task_specs)}
    specs = {spec.name: spec for spec in task_specs}
    if train_dataset is not None:
        train = _task_mapping(getattr(train_dataset, "task_datasets", train_dataset), "train_dataset")
        if not train:
            raise ValueError(f"train_dataset is empty: pass task name → tokenized training set for the tasks {list(specs)}.")
        untrained = [name for name in specs if name not in train]
        if untrained:  # on purpose in per-task fine-tuning (finetune.py): one task of the model at a time
            logger.warning("train_dataset has no data for task(s) %s: they are not trained in this run.", untrained)
        for name, dataset in train.items():
            if name in specs:
                check_task_set(specs[name], position[name], dataset, f"train_dataset[{name!r}]", encoder_config)
    eval_keys = None
    if eval_dataset is not None:
        evaluation = _task_mapping(eval_dataset, "eval_dataset")
        eval_keys = {name: evaluation_keys(name, value) for name, value in evaluation.items()}
        for name, value in evaluation.items():
            if name not in specs:
                continue
            sets = value.items() if isinstance(value, Mapping) else [(None, value)]
            for split, dataset in sets:
                where = f"eval_dataset[{name!r}]" + (f"[{split!r}]" if split is not None else "")
                check_task_set(specs[name], position[name], dataset, where, encoder_config)
        unevaluated = [name for name in specs if name not in evaluation]
        if unevaluated:  # on purpose where async-KD should watch some tasks only
            never = ", and async-KD never converges them" if async_kd else ""
            logger.warning("eval_dataset has no set for task(s) %s: they are not evaluated, not in glue_score%s.", unevaluated, never)
    if metric_for_best_model:
        problem = reported_metric_problem(metric_for_best_model, task_specs, eval_keys)
        if problem:
            raise ValueError(f"metric_for_best_model {metric_for_best_model!r}: {problem}.")
