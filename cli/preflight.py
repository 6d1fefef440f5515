"""The command line's preflight: every check that needs no data and no model weights, before any work.

`preflight(model_args, data_args, training_args)` runs them in the order a user would fix them (what to do and
conflicting flags; the tasks: names, duplicates, GLUE files, the custom tasks file with its metric names; the
weighting method's options; the model: path or Hub id, its config, heads of a saved multi-task model, layers,
`max_seq_length` vs its positions; the output directory; the resume checkpoint, through each part's own check:
the model's (`hf_async_mtl.resume`) and async-KD's (`hf_async_mtl.async_kd.checkpoint`)). The first problem is a
one-line `UsageError` (or the library's `InputError`).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from transformers.trainer_utils import get_last_checkpoint

from glue_tasks import GlueTsvSource, get_glue_task
from glue_tasks.formats import GLUE_FORMATS
from glue_tasks.submission import submission_splits
from hf_async_mtl import AsyncKDOptions, MultiTaskTrainingArguments, TaskSpec, build_weighting
from hf_async_mtl.async_kd.checkpoint import check_async_kd_checkpoint
from hf_async_mtl.bi_encoder import COSINE_HEAD
from hf_async_mtl.modeling import read_sentence_transformers_pooling
from hf_async_mtl.resume import check_resume_checkpoint
from hf_async_mtl.sources import DatasetsSource, TaskDataSource
from hf_async_mtl.state import check_run_definition
from hf_async_mtl.streaming import check_streamed_run
from hf_async_mtl.tartan import check_end_tasks, weighting_options
from hf_async_mtl.tasks import head_mismatches
from hf_async_mtl.trainer_inputs import reported_metric_problem

from .arguments import DataArguments, ModelArguments
from .errors import UsageError, key_line, read_json_file
from .model_checks import check_max_seq_length, check_output_dir, read_model_config, resolve_model_source
from .task_options import (
    add_mlm_tasks,
    apply_bi_encoder_tasks,
    apply_prompt_options,
    apply_streaming_tasks,
    as_trained_head,
    parse_streaming_tasks,
)
from .tasks_file import read_custom_tasks

logger = logging.getLogger("run_glue_mtl")


@dataclass
class RunPlan:
    """What the checks found: the tasks (with their data source when custom), the model source and its config."""

    tasks: list[tuple[TaskSpec, TaskDataSource]]
    model_source: str
    model_config: Any


def reads_dev_sets(training_args: MultiTaskTrainingArguments) -> bool:
    """Whether a run reads the dev sets: to evaluate them (`do_eval`), or to train (selection reads them with
    `--selection_split_fraction 0`, and `--finetune_after_mtl_steps` reports them). A predict-only run with
    `--eval_strategy no` does not."""
    return bool(training_args.do_train or training_args.do_eval)


def plan_tasks(
    data_args: DataArguments,
    do_predict: bool = False,
    do_train: bool = True,
    with_dev: bool = True,
    saved_heads: Sequence[Mapping[str, Any]] | None = None,
) -> list[tuple[TaskSpec, TaskDataSource]]:
    """The task specs of `--tasks` and `--custom_tasks_file`, checked without reading any data.

    GLUE names must be known and given once, the TSV files the run reads present under `--glue_dir` (train with
    `do_train`, dev with `with_dev`, test with `do_predict`); the custom tasks
    file is read by `cli.tasks_file.read_custom_tasks` (without `do_train` its tasks need no training file, and take
    labels they do not declare from `saved_heads`, the saved model's heads); then `--mlm_tasks`, the prompt options and `--bi_encoder_tasks`
    apply (`cli.task_options`). Problems are a one-line `UsageError`.
    """
    tasks: list[tuple[TaskSpec, TaskDataSource]] = []
    seen: set[str] = set()
    for name in data_args.task_list:
        try:
            spec = get_glue_task(name)
        except ValueError as error:
            raise UsageError(f"--tasks: {error}", "tasks") from None
        if spec.name in seen:
            raise UsageError(f"--tasks: task {spec.name!r} is given twice; task names must be unique.", "tasks")
        seen.add(spec.name)
        tasks.append((spec, GlueTsvSource(spec.name, data_args.glue_dir)))
    if data_args.glue_dir is not None and data_args.task_list:
        glue_dir = data_args.glue_dir
        if not os.path.isdir(glue_dir):
            raise UsageError(f"--glue_dir {glue_dir}: the directory does not exist.", "glue_dir")
        for spec, _ in tasks:
            fmt = GLUE_FORMATS[spec.name]
            splits = [
                *(["train"] if do_train else ()),
                *(spec.validation_splits if with_dev else ()),
                *(submission_splits(spec.name) if do_predict else ()),
            ]
            for split in splits:
                path = os.path.join(glue_dir, fmt.directory, fmt.files[split].file_name)
                if not os.path.isfile(path):
                    raise UsageError(f"--glue_dir: GLUE file for {spec.name!r} split {split!r} not found: {path}", "glue_dir")
    if data_args.custom_tasks_file:
        tasks.extend(
            (spec, DatasetsSource(spec, source))
            for spec, source in read_custom_tasks(
                data_args.custom_tasks_file, taken_names=seen, need_train=do_train, saved_heads=saved_heads
            )
        )
    tasks = add_mlm_tasks(tasks, [t.strip() for t in (data_args.mlm_tasks or "").split(",") if t.strip()])
    unknown_caps = sorted(set(data_args.per_task_caps) - {spec.name for spec, _ in tasks})
    if unknown_caps:
        raise UsageError(f"--max_train_samples_per_task names tasks not trained: {unknown_caps}.", "max_train_samples_per_task")
    tasks = apply_streaming_tasks(tasks, parse_streaming_tasks(data_args.streaming_tasks), data_args.stream_block_size)
    tasks = apply_prompt_options(tasks, data_args.prompt_templates_file, data_args.prompt_pool_size, data_args.prompt_eval)
    return apply_bi_encoder_tasks(tasks, [t.strip() for t in (data_args.bi_encoder_tasks or "").split(",") if t.strip()])


def _saved_heads(model_args: ModelArguments) -> list[dict[str, Any]] | None:
    """The heads of `--model_name_or_path` when it is a saved multi-task model (else None; a path or config that cannot
    be read is reported by the model checks, after the tasks)."""
    try:
        source = resolve_model_source(model_args.model_name_or_path, model_args.cache_dir)
        config = read_model_config(source, model_args.cache_dir)
    except (UsageError, OSError, ValueError):
        return None
    return list(config.tasks) if config.model_type == "hf_async_mtl" else None


def _declared_pooling(source: str, cache_dir: str | None) -> str | None:
    """The sentence-transformers pooling `source` declares (what `--pooling auto` uses); one that cannot be used is a
    `UsageError` naming `--pooling`."""
    try:
        return read_sentence_transformers_pooling(source, **({"cache_dir": cache_dir} if cache_dir else {}))
    except ValueError as error:
        raise UsageError(f"--pooling auto: {error}", "pooling") from None


def _model_stand_in(model_args: ModelArguments, source: str, config: Any) -> Any:
    """What the model will look like (pooling, encoder shape, adapters), from configs only: for the resume check."""
    shared_lora = model_args.lora_r > 0 and model_args.lora_scope == "shared"
    per_task_lora = model_args.lora_r > 0 and model_args.lora_scope == "per_task"
    if config.model_type == "hf_async_mtl":
        capacity = bool(getattr(config, "task_adapters", None) or getattr(config, "unshared_layers", 0))
        return SimpleNamespace(
            pooling=config.pooling,
            encoder_config=config.encoder_config,
            model_type="hf_async_mtl",
            peft_config=config.peft_config or (shared_lora and not capacity or None),
            task_adapters=getattr(config, "task_adapters", None) or (per_task_lora and not config.peft_config and not capacity or None),
            unshared_layers=getattr(config, "unshared_layers", 0) or (0 if config.peft_config or capacity else model_args.unshared_layers),
        )
    encoder = copy.deepcopy(config)
    if model_args.num_encoder_layers is not None:
        encoder.num_hidden_layers = model_args.num_encoder_layers
    pooling = model_args.pooling if model_args.pooling != "auto" else _declared_pooling(source, model_args.cache_dir)
    return SimpleNamespace(
        pooling=pooling,
        encoder_config=encoder,
        model_type="hf_async_mtl",
        peft_config=shared_lora or None,
        task_adapters=per_task_lora or None,
        unshared_layers=model_args.unshared_layers,
    )


def _saved_capacity(config: Any) -> tuple[str, dict[str, Any]] | None:
    """What a saved multi-task model has beyond one shared encoder: (description, its numbers), or None."""
    if getattr(config, "unshared_layers", 0):
        return "unshared top layers", {"unshared_layers": config.unshared_layers}
    for kind, adapter in (
        ("per-task LoRA adapters", getattr(config, "task_adapters", None)),
        ("a shared LoRA adapter", config.peft_config),
    ):
        if adapter:
            modules = adapter.get("target_modules")
            return kind, {
                "lora_r": adapter.get("r"),
                "lora_alpha": adapter.get("lora_alpha"),
                "lora_target_modules": sorted(modules) if isinstance(modules, list) else modules,
            }
    return None


def _asked_capacity(model_args: ModelArguments) -> tuple[str, dict[str, Any]] | None:
    """What the options ask for, in `_saved_capacity`'s terms (only the numbers the user gave, LoRA's alpha defaulting
    to 2 × rank as `lora_config` does), or None."""
    if model_args.unshared_layers:
        return "unshared top layers", {"unshared_layers": model_args.unshared_layers}
    if model_args.lora_r > 0:
        kind = "per-task LoRA adapters" if model_args.lora_scope == "per_task" else "a shared LoRA adapter"
        numbers: dict[str, Any] = {
            "lora_r": model_args.lora_r,
            "lora_alpha": 2 * model_args.lora_r if model_args.lora_alpha is None else model_args.lora_alpha,
        }
        if model_args.lora_target_modules:
            numbers["lora_target_modules"] = sorted(m.strip() for m in model_args.lora_target_modules.split(",") if m.strip())
        return kind, numbers
    return None


def check_saved_capacity(model_args: ModelArguments, config: Any, source: str) -> None:
    """A saved multi-task model trains on as saved: `--unshared_layers` / `--lora_*` may restate its structure, or add
    one to a model that has none, but not ask for another (which the run would otherwise ignore)."""
    saved, asked = _saved_capacity(config), _asked_capacity(model_args)
    if saved is None or asked is None:
        return
    (saved_kind, saved_numbers), (asked_kind, asked_numbers) = saved, asked
    differ = [k for k, v in asked_numbers.items() if saved_numbers.get(k) != v]  # 16 == 16.0: alpha int or float
    if asked_kind == saved_kind and not differ:
        return
    option = "unshared_layers" if asked_kind == "unshared top layers" else (differ[0] if differ else "lora_r")
    given = ", ".join(f"{k}={v}" for k, v in asked_numbers.items())
    has = ", ".join(f"{k}={v}" for k, v in saved_numbers.items() if v is not None)
    raise UsageError(
        f"--{option}: the options ask for {asked_kind} ({given}), but {source} is a saved multi-task model with "
        f"{saved_kind} ({has}); leave these options out to train it as saved, or start from its base encoder.",
        option,
    )


def _refuse_untrained_heads(specs: list[TaskSpec], source: str, do_predict: bool) -> None:
    """A run that does not train a pretrained encoder scores its tasks with new, random heads (a cosine pair head and
    an MLM head need none): refused for a GLUE submission, warned about for an evaluation (chance level at start)."""
    random = [spec.name for spec in specs if not spec.is_mlm and not (spec.is_bi_encoder and spec.pair_head == COSINE_HEAD)]
    if not random:
        return
    what = f"{source} is a pretrained encoder, not a trained multi-task model: the heads of {random} would be new and random"
    if do_predict:
        raise UsageError(
            f"--do_predict without --do_train: {what}; predict with a trained model (a --do_train run's output_dir) or add --do_train.",
            "do_predict",
        )
    logger.warning("%s (their scores are chance level).", what)


def preflight(model_args: ModelArguments, data_args: DataArguments, training_args: MultiTaskTrainingArguments) -> RunPlan:
    """Every check that needs no data and no model weights, in the order a user would fix them.

    What to do and conflicting flags; the tasks (names, duplicates, GLUE files, the custom tasks file with
    its metric names); the weighting method's options; the model (path or Hub id, its config, heads of a
    saved multi-task model, layers, `max_seq_length` vs its positions); the output directory; the resume
    checkpoint's tasks, heads, labels and files. The first problem is raised as a one-line `UsageError`.
    """
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise UsageError("Nothing to do: pass --do_train, --do_eval and/or --do_predict.")
    if training_args.do_train and training_args.max_steps == 0:
        raise UsageError(
            "--max_steps 0 with --do_train would train nothing: give a positive --max_steps, or -1 to train for --num_train_epochs.",
            "max_steps",
        )
    if training_args.do_train and training_args.max_steps < 0 and training_args.num_train_epochs <= 0:
        raise UsageError(f"--num_train_epochs {training_args.num_train_epochs} with --do_train would train nothing.", "num_train_epochs")
    if training_args.push_to_hub and not training_args.do_train:
        # Trainer.push_to_hub would save the model again, with this run's arguments as its training_args.bin and card.
        raise UsageError(
            "--push_to_hub pushes the model this run trains: add --do_train (to upload a saved model directory as it is, "
            "use `hf upload REPO DIR`; MultiTaskModel.from_pretrained(DIR).push_to_hub(REPO) writes a new card without metrics).",
            "push_to_hub",
        )
    if training_args.resume_from_checkpoint and not training_args.do_train:
        raise UsageError(
            "--resume_from_checkpoint continues training: add --do_train (to only evaluate a saved model, "
            "pass it as --model_name_or_path).",
            "resume_from_checkpoint",
        )
    if model_args.lora_r == 0 and (model_args.lora_alpha is not None or model_args.lora_target_modules):
        raise UsageError("--lora_alpha / --lora_target_modules are set but --lora_r is 0 (LoRA off): give --lora_r N.", "lora_r")
    if model_args.lora_scope == "per_task" and model_args.lora_r == 0:
        raise UsageError("--lora_scope per_task needs the adapters' rank: give --lora_r N.", "lora_scope")
    if model_args.lora_train_base and model_args.lora_scope != "per_task":
        raise UsageError(
            "--lora_train_base trains the base encoder under per-task adapters: add --lora_scope per_task --lora_r N "
            "(without LoRA the whole encoder is trained anyway).",
            "lora_train_base",
        )
    if model_args.unshared_layers and model_args.lora_r:
        raise UsageError(
            "--unshared_layers and --lora_r cannot be combined: give each task its own top layers or LoRA adapters, not both.",
            "unshared_layers",
        )

    finetune_steps = training_args.finetune_after_mtl_steps
    if finetune_steps and not training_args.do_train:
        raise UsageError("--finetune_after_mtl_steps continues a multi-task training: add --do_train.", "finetune_after_mtl_steps")
    default_patience = type(training_args).__dataclass_fields__["finetune_patience"].default
    if not finetune_steps and (training_args.finetune_eval_steps is not None or training_args.finetune_patience != default_patience):
        raise UsageError(
            "--finetune_eval_steps / --finetune_patience only act with --finetune_after_mtl_steps N, which is 0 (off).",
            "finetune_after_mtl_steps",
        )
    if finetune_steps and (training_args.finetune_eval_steps or 0) > finetune_steps:
        raise UsageError(
            f"--finetune_eval_steps {training_args.finetune_eval_steps} exceeds --finetune_after_mtl_steps {finetune_steps}: "
            "the fine-tuning would never be evaluated, selected or stopped early.",
            "finetune_eval_steps",
        )
    if data_args.dev_curves and (data_args.selection_split_fraction <= 0 or not training_args.do_train):
        raise UsageError(
            "--dev_curves evaluates the dev sets beside a selection split during training: it needs --do_train and "
            "--selection_split_fraction > 0 (with 0 the dev sets already are the evaluation split).",
            "dev_curves",
        )

    tasks = plan_tasks(
        data_args,
        do_predict=training_args.do_predict,
        do_train=training_args.do_train,
        with_dev=reads_dev_sets(training_args),
        saved_heads=None if training_args.do_train else _saved_heads(model_args),
    )
    specs = [spec for spec, _ in tasks]
    streamed = {spec.name: getattr(source, "num_rows", None) for spec, source in tasks if source.streaming}
    pairs = [spec.name for spec in specs if spec.is_bi_encoder]
    if pairs and model_args.pooling == "mask":
        raise UsageError(
            f"--pooling mask reads a prompt's mask token, which the bi-encoder tasks {pairs} do not have: "
            "use --pooling auto (the checkpoint's), mean, cls or max.",
            "pooling",
        )
    if data_args.dev_curves:
        names = {spec.name for spec in specs}
        clash = sorted(
            f"{spec.name}_{split}" for spec in specs for split in dev_split_names(spec.validation_splits) if f"{spec.name}_{split}" in names
        )
        if clash:
            raise UsageError(
                f"--dev_curves reports dev splits as <task>_dev...: {clash} would clash with the task(s) of that "
                "name; rename the task(s) or drop --dev_curves.",
                "dev_curves",
            )
    if training_args.metric_for_best_model is not None:
        problem = reported_metric_problem(training_args.metric_for_best_model, specs, calibration=bool(training_args.calibration_bins))
        if problem:
            raise UsageError(f"--metric_for_best_model {training_args.metric_for_best_model!r}: {problem}.", "metric_for_best_model")
    try:
        check_end_tasks(training_args.end_tasks, [s.name for s in specs])
    except ValueError as error:
        raise UsageError(f"--{error}", "end_task") from None
    try:
        weighting = build_weighting(training_args.mtl_method, [s.name for s in specs], **weighting_options(training_args))
    except (TypeError, ValueError) as error:
        raise UsageError(
            f"--mtl_method {training_args.mtl_method} with --mtl_method_options {json.dumps(training_args.mtl_method_options)}: {error}",
            "mtl_method_options",
        ) from None
    if streamed and training_args.do_train:
        all_tasks = training_args.step_composition == "all_tasks" or (
            training_args.step_composition == "auto" and weighting.needs_all_tasks
        )
        try:  # what the trainer and its sampler would refuse, refused before the model and the data are loaded
            check_streamed_run(streamed, training_args, needs_dev_gradient=weighting.needs_dev_gradient, all_tasks=all_tasks)
        except ValueError as error:
            raise UsageError(str(error), "streaming_tasks") from None
    source = resolve_model_source(model_args.model_name_or_path, model_args.cache_dir)
    config = read_model_config(source, model_args.cache_dir)
    config_path = os.path.join(source, "config.json")
    if config.model_type == "hf_async_mtl":
        problems = head_mismatches(config.tasks, specs)
        if problems:
            line = key_line(read_json_file(config_path)[1], "tasks") if os.path.isfile(config_path) else None
            raise UsageError(
                f"{config_path}" + (f", line {line}" if line else "") + ", field 'tasks': the checkpoint's heads do not "
                "match the requested tasks: " + "; ".join(problems) + ".",
                "model_name_or_path",
            )
        if data_args.prompt_eval is None:  # a prompt task is evaluated as it was in training (and as its export is)
            heads = {head["name"]: head for head in config.tasks}
            tasks = [(as_trained_head(spec, heads[spec.name]) if spec.name in heads else spec, data) for spec, data in tasks]
        if model_args.num_encoder_layers is not None:
            raise UsageError(
                f"--num_encoder_layers applies to a pretrained encoder; {source} is a saved multi-task model "
                f"with {config.encoder_config.num_hidden_layers} layers.",
                "num_encoder_layers",
            )
        check_saved_capacity(model_args, config, source)
        if model_args.pooling not in ("auto", config.pooling):
            raise UsageError(
                f"--pooling {model_args.pooling}: {source} is a saved multi-task model whose heads were trained "
                f"on {config.pooling} pooling; drop --pooling (or pass --pooling {config.pooling}).",
                "pooling",
            )
    else:
        if model_args.num_encoder_layers is not None and model_args.num_encoder_layers > getattr(config, "num_hidden_layers", 10**9):
            raise UsageError(
                f"--num_encoder_layers {model_args.num_encoder_layers}: the encoder {source} has only "
                f"{config.num_hidden_layers} layers (extra ones would be random).",
                "num_encoder_layers",
            )
        if not training_args.do_train:
            _refuse_untrained_heads(specs, source, training_args.do_predict)
        if model_args.pooling == "auto":
            _declared_pooling(source, model_args.cache_dir)
    encoder_config = config.encoder_config if config.model_type == "hf_async_mtl" else config
    layers = model_args.num_encoder_layers or getattr(encoder_config, "num_hidden_layers", 10**9)
    if model_args.unshared_layers > layers:
        raise UsageError(f"--unshared_layers {model_args.unshared_layers}: the encoder has only {layers} layers.", "unshared_layers")
    check_max_seq_length(data_args.max_seq_length, config, source)

    check_output_dir(training_args.output_dir)
    if training_args.resume_from_checkpoint:
        check_resume_checkpoint(training_args.resume_from_checkpoint, specs, model_config=_model_stand_in(model_args, source, config))
        check_run_definition(training_args.resume_from_checkpoint, training_args)
        if training_args.async_kd:
            check_async_kd_checkpoint(training_args.resume_from_checkpoint, AsyncKDOptions.from_arguments(training_args))
    elif training_args.do_train and os.path.isdir(training_args.output_dir) and get_last_checkpoint(training_args.output_dir):
        logger.warning(
            "%s holds checkpoints of an earlier run; this run starts from scratch and writes over them "
            "(pass --resume_from_checkpoint to continue it).",
            training_args.output_dir,
        )
    return RunPlan(tasks=tasks, model_source=source, model_config=config)


def dev_split_names(splits) -> list[str]:
    """How `--dev_curves` names a task's dev splits: `dev`, or `dev_<split>` for several (MNLI: `dev_matched`,
    `dev_mismatched`; the split's name without `validation_`, or whole where that would repeat)."""
    splits = list(splits)
    if len(splits) == 1:
        return ["dev"]
    short = [split.removeprefix("validation_") for split in splits]
    return [f"dev_{s}" if short.count(s) == 1 else f"dev_{split}" for s, split in zip(short, splits)]
