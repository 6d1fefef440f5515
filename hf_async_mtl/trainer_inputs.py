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

Only `datasets.Dataset` sets are read here; a streamed task (`StreamedTask`) checks its rows' labels as they are drawn,
and other dataset types are taken as they are.
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
from .resume import encoder_position_limit
from .tasks import TaskSpec

logger = logging.getLogger(__name__)

TOKEN_COLUMNS = ("input_ids", PAIR_IDS_COLUMN)


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


def reported_metric_problem(
    name: str, specs: Iterable[TaskSpec], eval_keys: Mapping[str, Sequence[str]] | None = None, *, calibration: bool = False
) -> str | None:
    """Why `name` (`metric_for_best_model`, with or without `eval_`) names no metric the evaluation reports, or None.

    Reported: `glue_score`, `loss`, and per evaluation set `<key>_<metric>` for its task's built-in metrics, `score`,
    `loss`, and `ece` for a classification task when `calibration` (`calibration_bins` > 0) (`perplexity` for an MLM
    task); a task with `evaluate` modules may report any `<key>_...` key.
    `eval_keys` maps each task to the keys its sets are reported under (default: the task's name).
    """
    bare = name.removeprefix("eval_")
    known = {"glue_score", "loss"}
    for spec in specs:
        for key in eval_keys.get(spec.name, ()) if eval_keys is not None else (spec.name,):
            if spec.is_mlm:
                known |= {f"{key}_loss", f"{key}_perplexity"}
                continue
            ece = ("ece",) if calibration and not spec.is_regression else ()
            known |= {f"{key}_{m}" for m in (*spec.metrics, "score", "loss", *ece)}
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


def _token_problem(tokens: Any, name: str, vocab_size: int | None, positions: int | None) -> str | None:
    """What is wrong with a token-id list column against the encoder (ids beyond its vocabulary, rows longer than its
    positions), or None."""
    if vocab_size is not None:
        largest = pc.max(pc.list_flatten(tokens)).as_py()
        if largest is not None and largest >= vocab_size:
            return (
                f" holds token id {largest} in {name}, but the encoder's vocabulary has {vocab_size} ids: it was tokenized "
                "with another model's tokenizer (use AutoTokenizer.from_pretrained of the same checkpoint)"
            )
    if positions is not None:
        lengths = pc.list_value_length(tokens)
        longest = pc.max(lengths).as_py()
        if longest is not None and longest > positions:
            row = pc.index(lengths, longest).as_py()
            return (
                f", example {row} (0-based) has {longest} tokens in {name}, but the encoder takes at most {positions} positions: "
                f"tokenize with max_seq_length <= {positions}"
            )
    return None


def encoder_limits(model: Any) -> tuple[int | None, int | None]:
    """(vocabulary size, position limit) of a `MultiTaskModel`'s encoder: the input embeddings' rows (right after
    `resize_token_embeddings`, which the config does not follow) and `encoder_position_limit` of its config."""
    vocab_size = None
    embeddings = getattr(getattr(model, "encoder", None), "get_input_embeddings", lambda: None)()
    if embeddings is not None and hasattr(embeddings, "num_embeddings"):
        vocab_size = int(embeddings.num_embeddings)
    else:
        vocab_size = getattr(getattr(model.config, "encoder_config", None), "vocab_size", None)
    return vocab_size, encoder_position_limit(model.config)


def check_task_set(
    spec: TaskSpec, task_id: int, dataset: Any, where: str, limits: tuple[int | None, int | None] = (None, None), *, labels: bool = True
) -> None:
    """Check one tokenized set of a task (a `datasets.Dataset`; anything else passes): rows, model inputs, task id,
    labels (unless `labels=False`: a test set), token ids and row lengths against `limits` (`encoder_limits`)."""
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
    needed = [TASK_IDS_COLUMN, *(("labels",) if labels and not spec.is_mlm else ()), *((PAIR_IDS_COLUMN,) if spec.is_bi_encoder else ())]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ValueError(
            f"{task} has no column {missing} (columns: {columns}): tokenize it with tokenize_task(spec, dataset, tokenizer, {task_id})."
        )
    # Each check reads the whole underlying table first (no gather of the rows a shuffle or select picked: fast on a
    # shuffled 400k-row set); only when that shows a problem are the selected rows read, which may not hold it.
    whole = dataset.data
    if _task_id_problem(whole.column(TASK_IDS_COLUMN), task_id) and (ids := _task_id_problem(_column(dataset, TASK_IDS_COLUMN), task_id)):
        raise ValueError(
            f"{task} holds task id(s) {ids}, but {spec.name!r} is task {task_id} of task_specs (its batches go to the head "
            f"of that id): tokenize it with tokenize_task(spec, dataset, tokenizer, {task_id})."
        )
    if labels and not spec.is_mlm:
        try:
            check_label_values(spec, whole.column("labels"), where, field="labels")
        except ValueError:
            check_label_values(spec, _column(dataset, "labels"), where, field="labels")
    vocab_size, positions = limits
    for name in (c for c in TOKEN_COLUMNS if c in columns):
        if _token_problem(whole.column(name), name, vocab_size, positions) is None:
            continue
        problem = _token_problem(_column(dataset, name), name, vocab_size, positions)
        if problem:
            raise ValueError(f"{task}{problem}.")


def _task_id_problem(column: Any, task_id: int) -> list[int] | None:
    """The task ids of `column` when they are not `[task_id]` alone, else None."""
    ids = sorted(int(i) for i in pc.unique(column).to_pylist() if i is not None)
    return ids if ids != [task_id] else None


def check_trainer_inputs(
    model: Any,
    task_specs: Sequence[TaskSpec],
    train_dataset: Any,
    eval_dataset: Any,
    *,
    async_kd: bool,
    metric_for_best_model: str | None,
    calibration: bool = False,
) -> None:
    """Every check of this module on what `MultiTaskTrainer.__init__` received (see the module's docstring).

    `train_dataset` may be a `MultiTaskDataset` (its `task_datasets` are checked) or a mapping task → dataset;
    `eval_dataset` a mapping task → dataset or → `{split: dataset}`.
    """
    check_model(model)
    model.check_tasks(list(task_specs))  # heads against specs first: a task-id message presumes they match
    limits = encoder_limits(model)
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
                check_task_set(specs[name], position[name], dataset, f"train_dataset[{name!r}]", limits)
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
                check_task_set(specs[name], position[name], dataset, where, limits)
        unevaluated = [name for name in specs if name not in evaluation]
        if unevaluated:  # on purpose where async-KD should watch some tasks only
            never = ", and async-KD never converges them" if async_kd else ""
            logger.warning("eval_dataset has no set for task(s) %s: they are not evaluated, not in glue_score%s.", unevaluated, never)
    if metric_for_best_model:
        problem = reported_metric_problem(metric_for_best_model, task_specs, eval_keys, calibration=calibration)
        if problem:
            raise ValueError(f"metric_for_best_model {metric_for_best_model!r}: {problem}.")
