"""The bounds of every numeric and choice option, checked on the values as given, before any dataclass runs.

One table, `BOUNDS`, keyed by option name: the command line's own options, the multi-task and async-KD options and
the `TrainingArguments` options a run relies on. It is checked on the raw values (`check_bounds`), before
`TrainingArguments.__post_init__` could silently replace one (`--eval_steps 0` would become the logging
interval), so every problem is one line naming the option. `tests/test_cli_bounds.py` fails when a numeric or
choice field of the argument dataclasses has no entry here (or in `UNBOUNDED`, with the reason).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hf_async_mtl.async_kd.options import ENSEMBLE_TYPES, LOSS_TYPES, NOISE_MODES, SOFT_LABEL_MODES
from hf_async_mtl.async_kd.signals import SIGNALS
from hf_async_mtl.config import ASYNC_KD_ALIAS
from hf_async_mtl.merging.methods import MERGE_METHODS
from hf_async_mtl.pooling import POOLING_MODES
from hf_async_mtl.prompting import PROMPT_EVAL_MODES
from hf_async_mtl.sampling import COMPOSITIONS, SAMPLING_STRATEGIES
from hf_async_mtl.weighting import available_weightings


@dataclass(frozen=True)
class Bound:
    """What values an option takes: a number in [low, high] (ends open or closed), or one of `choices` (a callable
    when the choices are known only at run time, e.g. registered weighting methods). None (unset) is always allowed
    for an option whose default is None."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None

    def describe(self) -> str:
        if self.choices is not None:
            return f"one of {', '.join(self._choices())}"
        kind = "an integer" if self.integer else "a number"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return f"{kind} {' and '.join(parts)}" if parts else kind

    def _choices(self) -> tuple[str, ...]:
        return tuple(self.choices()) if callable(self.choices) else tuple(self.choices or ())

    def accepts(self, value: Any) -> bool:
        if self.choices is not None:
            return isinstance(value, str) and value in self._choices()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.integer and not float(value).is_integer():
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))


def _int(low: float | None = None, **kwargs: Any) -> Bound:
    return Bound(low=low, integer=True, **kwargs)


def _choice(*values: str) -> Bound:
    return Bound(choices=tuple(values))


PROBABILITY = Bound(0.0, 1.0, high_open=True)
OPEN_FRACTION = Bound(0.0, 1.0, low_open=True, high_open=True)
POSITIVE = Bound(0.0, low_open=True)

BOUNDS: dict[str, Bound] = {
    # the model
    "pooling": _choice("auto", *POOLING_MODES),
    "classifier_dropout": PROBABILITY,
    "num_encoder_layers": _int(1),
    "lora_r": _int(0),
    "lora_scope": _choice("shared", "per_task"),
    "task_streams": _choice("by_position", "by_name"),
    "unshared_layers": _int(0),
    "lora_alpha": POSITIVE,
    "lora_dropout": PROBABILITY,
    # the data
    "max_seq_length": _int(1),
    "stream_block_size": _int(1),
    "max_train_samples": _int(1),
    "max_eval_samples": _int(1),
    "selection_split_fraction": PROBABILITY,
    "selection_split_max": _int(1),
    "split_seed": _int(0),
    "cap_subset": _choice("shuffled", "in_order"),
    "prompt_pool_size": _int(1),
    "prompt_eval": _choice(*PROMPT_EVAL_MODES),
    "preprocessing_num_workers": _int(1),
    # task mixing and balancing
    "sampling_strategy": _choice(*SAMPLING_STRATEGIES),
    "sampling_temperature": POSITIVE,
    "step_composition": _choice("auto", *COMPOSITIONS),
    "mtl_method": Bound(choices=lambda: (*available_weightings(), ASYNC_KD_ALIAS)),
    # async-KD (AsyncKDOptions checks them again, with the same bounds)
    "kd_patience": _int(1),
    "kd_min_delta": Bound(0.0),
    "kd_min_steps": _int(0),
    "kd_smoothing": _int(1),
    "kd_margin_z": Bound(0.0),
    "kd_temperature": POSITIVE,
    "kd_loss": _choice(*LOSS_TYPES),
    "kd_alpha": Bound(0.0, 1.0),
    "kd_top_k": _int(1),
    "kd_ensemble": _choice(*ENSEMBLE_TYPES),
    "kd_noise": _choice(*NOISE_MODES),
    "kd_signal": _choice(*SIGNALS),
    "kd_soft_labels": _choice(*SOFT_LABEL_MODES),
    "kd_label_batch_size": _int(1),
    # diagnostics, fine-tuning, TARTAN, MLM
    "diagnostics_steps": _int(0),
    "calibration_bins": _int(0),
    "finetune_after_mtl_steps": _int(0),
    "finetune_eval_steps": _int(1),
    "finetune_patience": _int(1),
    "tartan_dev_fraction": OPEN_FRACTION,
    "tartan_dev_max": _int(1),
    "early_stopping_patience": _int(0),
    "mlm_probability": OPEN_FRACTION,
    # TrainingArguments' options a run relies on
    "per_device_train_batch_size": _int(1),
    "per_device_eval_batch_size": _int(1),
    "gradient_accumulation_steps": _int(1),
    "eval_accumulation_steps": _int(1),
    "eval_steps": POSITIVE,  # below 1: a fraction of the run (transformers); 0 would silently become logging_steps
    "save_steps": POSITIVE,  # 0 would silently save nothing during training
    "logging_steps": POSITIVE,
    "max_steps": _int(-1),  # -1: train for num_train_epochs; 0 with --do_train is refused by the preflight
    "num_train_epochs": POSITIVE,
    "learning_rate": Bound(0.0),
    "weight_decay": Bound(0.0),
    "max_grad_norm": Bound(0.0),
    "warmup_steps": Bound(0.0),  # transformers: a number of steps, or below 1 a fraction of them
    "seed": _int(0),
    "data_seed": _int(0),
    "save_total_limit": _int(1),
    "dataloader_num_workers": _int(0),
}

# Fields of the argument dataclasses that take free text, a path, a flag or JSON: no bound, for the reason given.
UNBOUNDED: dict[str, str] = {
    "model_name_or_path": "a path or Hub id (checked by model_checks.resolve_model_source)",
    "cache_dir": "a path",
    "lora_target_modules": "module names of the encoder (checked by peft)",
    "lora_train_base": "a flag (with --lora_scope per_task; checked by preflight)",
    "tasks": "task names (checked by preflight.plan_tasks)",
    "glue_dir": "a path (checked by preflight.plan_tasks)",
    "custom_tasks_file": "a path (read by tasks_file.read_custom_tasks)",
    "max_train_samples_per_task": "a JSON object of caps (checked by DataArguments)",
    "dev_curves": "a flag",
    "carve_before_cap": "a flag",
    "mlm_tasks": "task names (checked by task_options.add_mlm_tasks)",
    "prompt_templates_file": "a path (read by task_options.apply_prompt_options)",
    "length_aware_batching": "a flag",
    "mtl_method_options": "a JSON object (checked by the weighting method's constructor)",
    "async_kd": "a flag",
    "kd_require_improvement": "a flag",
    "kd_full_window": "a flag",
    "kd_trivial_gate": "a flag",
    "kd_decline_trigger": "a flag",
    "kd_require_decline": "a flag",
    "kd_refresh": "a flag",
    "kd_snapshot_dir": "a path",
    "kd_stop_when_all_converged": "a flag",
    "end_task": "task names (checked by tartan.check_end_tasks)",
    "bi_encoder_tasks": "task names (checked by task_options.apply_bi_encoder_tasks)",
    "streaming_tasks": "task names with row counts (checked by task_options.parse_streaming_tasks / apply_streaming_tasks)",
}


# The options of merge_models.py (cli/merge_arguments.py), in the same way; a list option's bound holds for each value.
MERGE_BOUNDS: dict[str, Bound] = {
    "method": Bound(choices=lambda: tuple(MERGE_METHODS)),
    "scales": POSITIVE,
    "densities": Bound(0.0, 1.0, low_open=True),
    "merge_seed": _int(0),
    "max_eval_samples": _int(1),
    "per_device_eval_batch_size": _int(1),
}
MERGE_UNBOUNDED: dict[str, str] = {
    "checkpoints": "paths (checked by hf_async_mtl.merging.checkpoints.read_checkpoint)",
    "output_dir": "a path (checked by model_checks.check_output_dir)",
    "base_model": "a path or Hub id (checked by hf_async_mtl.merging.checkpoints.resolve_base)",
    "glue_dir": "a path (checked by preflight.plan_tasks)",
    "custom_tasks_file": "a path (read by tasks_file.read_custom_tasks)",
    "do_eval": "a flag",
    "use_cpu": "a flag",
    "bf16": "a flag",
}


def bound_problem(name: str, value: Any, table: Mapping[str, Bound] = BOUNDS) -> str | None:
    """The one-line problem of option `name` set to `value` (None when it is within its bound, unset or unbounded);
    for a list, of its first value outside the bound."""
    bound = table.get(name)
    if bound is None or value is None:
        return None
    for item in value if isinstance(value, list) else [value]:
        if not bound.accepts(item):
            return f"{'values must each' if isinstance(value, list) else 'must'} be {bound.describe()}, got {item!r}"
    return None


def check_bounds(values: Mapping[str, Any], fail: Callable[[str, str], Exception], table: Mapping[str, Bound] = BOUNDS) -> None:
    """Raise `fail(option, problem)` for the first option of `values` outside its bound in `table`."""
    for name, value in values.items():
        problem = bound_problem(name, value, table)
        if problem is not None:
            raise fail(name, problem)
