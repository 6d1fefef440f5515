"""What a resume checks of a checkpoint before anything is loaded: its tasks, heads, labels, model shape and files.

The parts of a run with checkpoint state of their own check theirs themselves (`state.CheckpointPart`: the
weighting state and batch stream, async-KD); `check_resume_checkpoint` is the model's part, run by
`MultiTaskTrainer.train(resume_from_checkpoint=...)` for every method and by the command line's preflight.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import InputError, key_line, one_line, read_json_file
from .state import check_complete
from .tasks import TaskSpec, head_mismatches


def encoder_config_of(config: Any) -> Any:
    """The encoder's config: `config` itself, or a saved multi-task model's `encoder_config`."""
    return getattr(config, "encoder_config", None) if getattr(config, "model_type", None) == "hf_async_mtl" else config


# Encoders whose position ids start after the padding id (fairseq's convention): pad_token_id + 1 positions are unused.
_OFFSET_POSITION_MODELS = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "data2vec-text", "mpnet", "ibert", "luke"}
)


def encoder_position_limit(config: Any) -> int | None:
    """How many tokens the encoder's absolute position embeddings hold, or None when it has no such limit (relative
    positions only, e.g. DeBERTa-v3 with `position_biased_input=False`)."""
    encoder = encoder_config_of(config)
    positions = getattr(encoder, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0 or getattr(encoder, "position_biased_input", True) is False:
        return None
    if getattr(encoder, "model_type", None) in _OFFSET_POSITION_MODELS:
        positions -= (getattr(encoder, "pad_token_id", None) or 1) + 1
    return positions


def _names(heads: Iterable[Any]) -> str:
    return "[" + ", ".join(h["name"] if isinstance(h, Mapping) else h.name for h in heads) + "]"


def safetensors_shapes(path: str) -> dict[str, list[int]]:
    """Tensor name → shape of a safetensors file, reading its header only; an unreadable file is a `InputError`."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as handle:
            return {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise InputError(f"{path}: not a readable safetensors file (truncated or corrupt?): {one_line(error)}.") from None


def check_resume_checkpoint(directory: str, specs: Sequence[TaskSpec], *, model_config: Any = None) -> None:
    """Refuse to resume from `directory` unless it continues the requested run; every problem is a `InputError`.

    Checked from files only (cheap): the checkpoint's `config.json` is a multi-task model whose heads are
    `specs` (names, order, sizes, kinds, label names) — the message names both task lists; with
    `model_config`, the same pooling and encoder shape; its weight files exist and are readable safetensors;
    the weights' head shapes agree with the config; `weighting_state.pt` exists (a `MultiTaskTrainer`
    checkpoint). Parts of a run with checkpoint state of their own (async-KD) check theirs themselves.
    """
    if not os.path.isdir(directory):
        raise InputError(f"resume_from_checkpoint {directory}: the directory does not exist.", "resume_from_checkpoint")
    check_complete(directory)
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise InputError(f"resume_from_checkpoint {directory}: not a checkpoint (no config.json).", "resume_from_checkpoint")
    saved, text = read_json_file(config_path, "checkpoint config")
    if not isinstance(saved, dict) or saved.get("model_type") != "hf_async_mtl":
        model_type = saved.get("model_type") if isinstance(saved, dict) else None
        raise InputError(
            f"{config_path}, line {key_line(text, 'model_type') or 1}, field 'model_type': {model_type!r} is not a "
            "multi-task (hf_async_mtl) checkpoint written by MultiTaskTrainer, so it cannot be resumed."
        )
    heads = saved.get("tasks") or []
    problems = head_mismatches(heads, specs)
    if problems:
        raise InputError(
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
                raise InputError(
                    f"{path}, tensor {key!r}: the head has {shape[0]} outputs, but {config_path} says "
                    f"{expected[match.group(1)]}; the checkpoint is inconsistent."
                )
    weighting = os.path.join(directory, "weighting_state.pt")
    if not os.path.isfile(weighting):
        raise InputError(f"{weighting} is missing: {directory} was not written by MultiTaskTrainer.", "resume_from_checkpoint")


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
    if bool(saved.get("task_adapters")) != bool(getattr(model_config, "task_adapters", None)):
        differences.append(("task_adapters", "the checkpoint and the model being trained differ in having per-task adapters"))
    for field in ("peft_config", "task_adapters"):  # the same adapters (rank, alpha, dropout, target modules)
        theirs, mine = saved.get(field), getattr(model_config, field, None)
        if isinstance(theirs, dict) and isinstance(mine, dict) and json.loads(json.dumps(mine, default=str)) != theirs:
            name = next((k for k in sorted({*theirs, *mine}) if theirs.get(k) != json.loads(json.dumps(mine.get(k), default=str))), field)
            differences.append((field, f"{field} {name}={theirs.get(name)!r}, the model being trained {mine.get(name)!r}"))
    for field in ("classifier_dropout", "max_seq_length"):
        mine = getattr(model_config, field, None)
        if mine is not None and saved.get(field) is not None and saved[field] != mine:
            differences.append((field, f"{field} {saved[field]!r}, the model being trained {mine!r}"))
    # How each task's selection split was carved (the command line records it: seed, fraction, cap, length, rows'
    # fingerprint): another carve trains on other rows and selects on others, though every count may agree.
    theirs, mine = saved.get("selection_splits"), getattr(model_config, "selection_splits", None)
    if isinstance(theirs, dict) and isinstance(mine, dict):
        for task in sorted(set(theirs) & set(mine)):
            old, new = theirs[task] or {}, mine[task] or {}
            changed = next((k for k in sorted({*old, *new}) if old.get(k) != new.get(k)), None)
            if changed is not None:
                differences.append(
                    (
                        "selection_splits",
                        f"selection split of task {task!r} had {changed}={old.get(changed)!r}, this run's has {new.get(changed)!r}",
                    )
                )
                break
    ours_unshared = getattr(model_config, "unshared_layers", None)
    if ours_unshared is not None and int(saved.get("unshared_layers") or 0) != int(ours_unshared):
        differences.append(
            ("unshared_layers", f"unshared_layers {saved.get('unshared_layers') or 0}, the model being trained {ours_unshared}")
        )
    if differences:
        field, _ = differences[0]
        raise InputError(
            f"{config_path}, line {key_line(text, field) or 1}, field {field!r}: cannot resume: the checkpoint's "
            + "; ".join(message for _, message in differences)
            + "."
        )
