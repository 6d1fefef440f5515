"""`merge_single_task_models`: single-task checkpoints of one base encoder → one multi-task model.

The steps, every input check before any weight is read: read and check the checkpoints' configs; find the base
encoder; carve each task's selection split again (and check it is the one its run held out); load the base and
the checkpoints, and take each task vector; build the merged model (the merged encoder and each checkpoint's head,
copied unchanged); score every point of the grid on the selection splits and keep the best (`selection.py`); only
then, with `do_eval`, evaluate the dev sets; save through a temporary directory renamed at the end.

What was done is recorded in the model's `config.merging` (and `merging.json` beside it): the method and its
definition, the checkpoints (path, task, kind, task-vector norms, selection-split record), the grid, every grid
point's selection scores, the chosen scale and density, and the single-task models' own selection scores.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import MultiTaskTrainingArguments
from ..errors import InputError
from ..files import directory_atomic, write_json_atomic
from ..model_card import build_model_card
from ..modeling import MultiTaskConfig, MultiTaskModel
from ..sources import TaskDataSource
from ..tasks import TaskSpec, head_mismatches
from ..trainer import MultiTaskTrainer
from .checkpoints import (
    SingleTaskCheckpoint,
    check_checkpoint_set,
    encoder_entries,
    load_base_encoder,
    read_checkpoint,
    resolve_base,
    task_vector,
)
from .methods import get_merge_method, merge_direction, merged_parameters
from .selection import SELECTION_RULE, MergeGrid, choose_point, rebuild_task_data, selection_criterion

__all__ = ["MERGING_FILE", "MergeResult", "merge_single_task_models", "save_merged_model"]

logger = logging.getLogger(__name__)

MERGING_FILE = "merging.json"
RECORD_VERSION = 1


@dataclass
class MergeResult:
    """What a merge made: the model (its `config.merging` is `record`), the record, and the dev metrics of the chosen
    merge and of each single-task model (with `do_eval`; chosen before they were computed)."""

    model: MultiTaskModel
    record: dict[str, Any]
    dev_metrics: dict[str, float] | None = None
    single_task_dev_metrics: dict[str, float] | None = None


def _check_call(checkpoints: Any, tasks: Any, output_dir: str | None, eval_cap: Any, eval_batch_size: Any) -> None:
    """The arguments' kinds and the output directory's place, before any checkpoint is read."""
    if isinstance(checkpoints, (str, os.PathLike)) or not isinstance(checkpoints, Sequence):
        raise InputError(f"checkpoints must be a list of checkpoint directories, got {checkpoints!r}.", "checkpoints")
    if not isinstance(tasks, Mapping) or not all(
        isinstance(v, (tuple, list)) and len(v) == 2 and isinstance(v[0], TaskSpec) for v in tasks.values()
    ):
        raise InputError("tasks must map each task's name to its (TaskSpec, TaskDataSource) pair.", "tasks")
    for name, value, low in (("eval_cap", eval_cap, 1), ("eval_batch_size", eval_batch_size, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low):
            raise InputError(f"{name} must be an int >= {low}, got {value!r}.", name)
    if output_dir is not None:
        path = os.path.abspath(output_dir)
        while not os.path.exists(path) and os.path.dirname(path) != path:
            path = os.path.dirname(path)
        if os.path.exists(path) and not os.path.isdir(path):
            raise InputError(f"output_dir {os.path.abspath(output_dir)}: {path} is a file; give a directory path.", "output_dir")


def merge_single_task_models(
    checkpoints: Sequence[str],
    tasks: Mapping[str, tuple[TaskSpec, TaskDataSource]],
    *,
    method: str = "ties",
    scales: Sequence[float] | None = None,
    densities: Sequence[float] | None = None,
    base_model: str | None = None,
    seed: int = 0,
    output_dir: str | None = None,
    do_eval: bool = False,
    eval_cap: int | None = None,
    eval_batch_size: int = 64,
    use_cpu: bool = False,
    bf16: bool = False,
) -> MergeResult:
    """Merge single-task checkpoints of one base encoder into one `MultiTaskModel`, choosing λ (and density) on the
    tasks' selection splits.

    Args:
        checkpoints: Directories of `MultiTaskModel`s with one head each (`run_glue_mtl.py --tasks X`), full or LoRA
            fine-tunes; the merged model's heads are in this order.
        tasks: Task name → (spec, data source) for every checkpoint's task: the selection split is carved from the
            source's training data as the single-task run did.
        method: `task_arithmetic`, `ties`, `ties_global`, `dare` or `dare_ties` (`hf_async_mtl.merging.methods`).
        scales, densities: The grid (defaults: the method's `default_scales`, and `DEFAULT_DENSITIES` for TIES / DARE).
        base_model: Where the base encoder is, when not where the checkpoints' config says.
        seed: Seed of DARE's masks.
        output_dir: Where to save the merged model (absent or empty; written whole or not at all), or None.
        do_eval: Evaluate the dev sets of the chosen merge (and of each single-task model) after choosing.
        eval_cap: Cap on the dev examples of each task (quick checks).
        eval_batch_size, use_cpu: Evaluation batch size and device.
        bf16: Evaluate (selection and dev) under bf16 autocast, as a run trained with `bf16=True` evaluates; the
            merge arithmetic itself stays in float32.

    Raises:
        InputError: on any refused input, before any weight is read (see `checkpoints.py`, `selection.py`).
    """
    _check_call(checkpoints, tasks, output_dir, eval_cap, eval_batch_size)
    grid = _grid(method, scales, densities)
    read = [read_checkpoint(path) for path in checkpoints]
    check_checkpoint_set(read, base_model)
    specs = _task_specs(read, tasks)
    base_source = resolve_base(read, base_model)
    if output_dir is not None and os.path.isdir(output_dir) and os.listdir(output_dir):
        raise InputError(f"output_dir {os.path.abspath(output_dir)}: exists and is not empty; give a new directory.", "output_dir")
    tokenizer = _tokenizer(read, base_source)
    selection_sets, dev_sets = {}, {}
    for task_id, checkpoint in enumerate(read):
        spec, source = specs[checkpoint.task], tasks[checkpoint.task][1]
        selection_sets[spec.name], dev_sets[spec.name] = rebuild_task_data(
            checkpoint, spec, source, tokenizer, task_id, with_dev=do_eval, eval_cap=eval_cap
        )

    base = load_base_encoder(base_source, read[0])
    merged = MultiTaskModel(_merged_config(read, base_model or read[0].base))
    with tempfile.TemporaryDirectory(prefix="hf_async_mtl-merge-") as evaluation_dir:  # the evaluator's output_dir
        trainer = _evaluator(merged, list(specs.values()), tokenizer, evaluation_dir, eval_batch_size, use_cpu, bf16)
        loaded = _load_checkpoints(read, base, merged, lambda sets: _scores(trainer, sets, specs), selection_sets, keep_encoders=do_eval)
        del base
        rows: list[dict[str, Any]] = []
        direction: tuple[float | None, dict[str, torch.Tensor]] | None = None
        for scale, density in grid.points():  # densities outer: each direction is computed once
            if direction is None or direction[0] != density:
                direction = (density, merge_direction(method, loaded.task_vectors, density, seed))
            _set_encoder(merged, merged_parameters(loaded.base_state, direction[1], scale))
            scores = _scores(trainer, selection_sets, specs)
            rows.append({"scale": scale, "density": density, "selection": scores, "criterion": selection_criterion(scores, specs)})
            logger.info("merge %s, scale %s, density %s: selection %s, mean %.4f", method, scale, density, scores, rows[-1]["criterion"])
        chosen = rows[choose_point([row["criterion"] for row in rows])]
        edge = grid.at_edge(chosen["scale"])
        if edge is not None:
            logger.warning(
                "merge %s chose λ = %s, the %s of the grid %s: a grid that goes further may score higher (--scales).",
                method,
                chosen["scale"],
                edge,
                list(grid.to_dict()["scales"]),
            )
        chosen_direction = merge_direction(method, loaded.task_vectors, chosen["density"], seed)
        _set_encoder(merged, merged_parameters(loaded.base_state, chosen_direction, chosen["scale"]))
        merged.config.merging = {
            "version": RECORD_VERSION,
            "method": method,
            "definition": get_merge_method(method).definition,
            "scale": chosen["scale"],
            "density": chosen["density"],
            "seed": seed if get_merge_method(method).uses_draws else None,
            "base_encoder": base_model or read[0].base,
            "checkpoints": loaded.provenance,
            "grid": grid.to_dict(),
            "selection_rule": SELECTION_RULE,
            "grid_scores": rows,
            "scale_at_grid_edge": edge,
            "chosen_selection": chosen["selection"],
            "single_task_selection": loaded.single_task_selection,
        }
        dev_metrics = single_dev = None
        if do_eval:  # after the choice: dev is reported, never read for one
            dev_metrics, single_dev = _evaluate_dev(trainer, merged, dev_sets, loaded.encoders)
    merged.eval()
    if output_dir is not None:
        save_merged_model(merged, output_dir, tokenizer, specs, dev_metrics, single_dev)
    return MergeResult(model=merged, record=merged.config.merging, dev_metrics=dev_metrics, single_task_dev_metrics=single_dev)


def save_merged_model(
    model: MultiTaskModel,
    output_dir: str,
    tokenizer: Any,
    specs: Mapping[str, TaskSpec],
    dev_metrics: Mapping[str, float] | None = None,
    single_task_dev_metrics: Mapping[str, float] | None = None,
) -> None:
    """Save the merged model, its tokenizer, `merging.json` (the record, and the dev metrics when evaluated) and a model
    card, all at once: into a temporary directory renamed to `output_dir` when complete."""
    record = dict(model.config.merging)
    if dev_metrics is not None:
        record["dev_after_choice"] = {"merged": dict(dev_metrics), "single_task": dict(single_task_dev_metrics or {})}
    with directory_atomic(output_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_json_atomic(os.path.join(staging, MERGING_FILE), record, indent=2)
        card = build_model_card(
            model.config,
            task_specs=specs,
            log_history=[dict(dev_metrics)] if dev_metrics is not None else None,
            evaluation_source="the merged model on each task's evaluation set, after the choice on the selection splits",
        )
        card.save(os.path.join(staging, "README.md"))


# ---- parts -----------------------------------------------------------------------------------------------------------


def _grid(method: str, scales: Sequence[float] | None, densities: Sequence[float] | None) -> MergeGrid:
    try:
        if scales is None:
            return MergeGrid(method, densities=None if densities is None else tuple(densities))
        return MergeGrid(method, tuple(scales), None if densities is None else tuple(densities))
    except ValueError as error:
        option = "densities" if "densit" in str(error) else "scales" if "scale" in str(error) else "method"
        raise InputError(str(error), option) from None


def _task_specs(read: Sequence[SingleTaskCheckpoint], tasks: Mapping[str, tuple[TaskSpec, TaskDataSource]]) -> dict[str, TaskSpec]:
    """Each checkpoint's task spec, which must describe its head (labels, kind, prompt templates)."""
    specs = {}
    for checkpoint in read:
        if checkpoint.task not in tasks:
            raise InputError(
                f"{checkpoint.where('tasks')}: task {checkpoint.task!r} has no task description and data here (known: "
                f"{sorted(tasks)}); its selection split cannot be carved.",
                "checkpoints",
            )
        spec = tasks[checkpoint.task][0]
        problems = head_mismatches([checkpoint.head], [spec])
        if problems:
            raise InputError(
                f"{checkpoint.where('tasks')}: the head does not match task {spec.name!r}: {'; '.join(problems)}.", "checkpoints"
            )
        specs[checkpoint.task] = spec
    return specs


def _tokenizer(read: Sequence[SingleTaskCheckpoint], base_source: str) -> Any:
    """The checkpoints' tokenizer (the first one's; they must share one vocabulary), else the base encoder's."""
    from transformers import AutoTokenizer

    found = []
    for checkpoint in read:
        try:
            found.append((checkpoint, AutoTokenizer.from_pretrained(checkpoint.path)))
        except (OSError, ValueError, TypeError):
            continue
    if not found:
        try:
            return AutoTokenizer.from_pretrained(base_source)
        except (OSError, ValueError, TypeError) as error:
            raise InputError(f"no tokenizer in the checkpoints nor in the base encoder {base_source}: {error}", "checkpoints") from None
    first_checkpoint, first = found[0]
    for checkpoint, tokenizer in found[1:]:
        if tokenizer.get_vocab() != first.get_vocab():
            raise InputError(
                f"checkpoint {checkpoint.path}: its tokenizer's vocabulary differs from {first_checkpoint.path}'s; "
                "checkpoints of one base encoder share one tokenizer.",
                "checkpoints",
            )
    return first


def _merged_config(read: Sequence[SingleTaskCheckpoint], base_reference: str) -> MultiTaskConfig:
    """The first checkpoint's config with every checkpoint's head (its pooling kept per head), no adapters."""
    first = read[0].config
    values = first.to_dict()
    for key in ("model_type", "transformers_version", "id2label", "label2id", "problem_type", "merging"):
        values.pop(key, None)
    heads = []
    for checkpoint in read:
        head = checkpoint.head
        pooling = checkpoint.config.task_pooling(checkpoint.task)
        if pooling != first.pooling:
            head["pooling"] = pooling
        heads.append(head)
    lengths = {int(getattr(c.config, "max_seq_length", 0) or 0) for c in read}
    # One dtype, float32 (the merge's arithmetic), whatever the checkpoints were saved in: a bf16 encoder config would
    # build a bf16 encoder beside float32 heads.
    values["dtype"] = "float32"
    if isinstance(values.get("encoder_config"), dict):
        values["encoder_config"] = {**values["encoder_config"], "dtype": "float32"}
    values.update(
        tasks=heads,
        peft_config=None,
        base_encoder_name_or_path=base_reference,
        selection_splits={c.task: c.selection for c in read},
        max_seq_length=max(lengths) or None,
        mask_token_id=next((c.config.mask_token_id for c in read if c.config.mask_token_id is not None), None),
    )
    return MultiTaskConfig(**values)


def _provenance(checkpoint: SingleTaskCheckpoint, vector: Mapping[str, torch.Tensor], base_state: Mapping[str, torch.Tensor]) -> dict:
    norm = math.sqrt(sum(float((v.double() ** 2).sum()) for v in vector.values()))
    base_norm = math.sqrt(sum(float((base_state[name].double() ** 2).sum()) for name in vector))
    return {
        "path": os.path.abspath(checkpoint.path),
        "task": checkpoint.task,
        "kind": "lora" if checkpoint.is_lora else "full",
        "task_vector_norm": norm,
        "relative_task_vector_norm": norm / base_norm if base_norm else None,
        "selection_split": checkpoint.selection,
    }


@dataclass
class _Loaded:
    """What the merge keeps of the base and the checkpoints once their weights are read."""

    base_state: dict[str, torch.Tensor]
    task_vectors: dict[str, dict[str, torch.Tensor]]
    encoders: dict[str, dict[str, torch.Tensor]]  # each checkpoint's own encoder (adapters merged in), for dev
    provenance: list[dict[str, Any]]
    single_task_selection: dict[str, float]


def _load_checkpoints(
    read: Sequence[SingleTaskCheckpoint],
    base: torch.nn.Module,
    merged: MultiTaskModel,
    score: Callable[[Mapping[str, Any]], dict[str, float]],
    selection_sets: Mapping[str, Any],
    keep_encoders: bool = False,
) -> _Loaded:
    """Each checkpoint's task vector (and with `keep_encoders` its encoder, for the dev evaluation), its head copied
    into `merged`, and the single-task model's own selection score (its encoder and head on its task: what the merge is
    compared to)."""
    base_state = {name: value.detach().clone() for name, value in base.state_dict().items()}
    loaded = _Loaded(base_state, {}, {}, [], {})
    for checkpoint in read:
        model = checkpoint.load()
        encoder_state, frozen_state = encoder_entries(model)
        loaded.task_vectors[checkpoint.task] = task_vector(checkpoint, encoder_state, frozen_state, base)
        merged.heads[checkpoint.task].load_state_dict(model.heads[checkpoint.task].state_dict())
        loaded.provenance.append(_provenance(checkpoint, loaded.task_vectors[checkpoint.task], base_state))
        if keep_encoders:
            loaded.encoders[checkpoint.task] = encoder_state
        _set_encoder(merged, encoder_state)
        loaded.single_task_selection[checkpoint.task] = score({checkpoint.task: selection_sets[checkpoint.task]})[checkpoint.task]
        del model, frozen_state
    return loaded


def _evaluate_dev(
    trainer: MultiTaskTrainer, merged: MultiTaskModel, dev_sets: Mapping[str, Any], encoders: Mapping[str, Mapping[str, torch.Tensor]]
) -> tuple[dict[str, float], dict[str, float]]:
    """Dev metrics of the merged model, then of each single-task model on its task (its `eval_<task>_*` metrics); the
    merged encoder is put back."""
    dev_metrics = trainer.evaluate(eval_dataset=dict(dev_sets), metric_key_prefix="eval")
    merged_encoder = {name: value.detach().clone() for name, value in merged.encoder.state_dict().items()}
    single_dev: dict[str, float] = {}
    for task, encoder_state in encoders.items():
        _set_encoder(merged, encoder_state)
        metrics = trainer.evaluate(eval_dataset={task: dev_sets[task]}, metric_key_prefix="eval")
        single_dev.update({key: value for key, value in metrics.items() if key.startswith(f"eval_{task}_")})
    _set_encoder(merged, merged_encoder)
    return dev_metrics, single_dev


def _set_encoder(model: MultiTaskModel, state: Mapping[str, torch.Tensor]) -> None:
    model.encoder.load_state_dict(state)


def _evaluator(
    model: MultiTaskModel, specs: list[TaskSpec], tokenizer: Any, output_dir: str, batch_size: int, use_cpu: bool, bf16: bool = False
) -> MultiTaskTrainer:
    args = MultiTaskTrainingArguments(
        output_dir=output_dir,
        per_device_eval_batch_size=batch_size,
        use_cpu=use_cpu,
        bf16=bf16,
        report_to="none",
        disable_tqdm=True,
        eval_strategy="no",
    )
    return MultiTaskTrainer(model=model, args=args, task_specs=specs, processing_class=tokenizer)


def _scores(trainer: MultiTaskTrainer, sets: Mapping[str, Any], specs: Mapping[str, TaskSpec]) -> dict[str, float]:
    """Each task's selection score (`eval`-style metric `selection_<task>_<main_metric>`) on `sets`."""
    metrics = trainer.evaluate(eval_dataset=dict(sets), metric_key_prefix="selection")
    return {task: float(metrics[f"selection_{task}_{specs[task].main_metric}"]) for task in sets}
