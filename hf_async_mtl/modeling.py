"""A shared encoder with one classification or regression head per task."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import MaskedLMOutput, SequenceClassifierOutput

from .bi_encoder import bi_encoder_logits, build_pair_head, check_pair_head, is_bi_encoder, split_pair_inputs
from .export import MultiTaskExportMixin
from .losses import task_loss
from .mlm import IGNORE_INDEX, MLM_PROBLEM_TYPE, MaskedLMHead, init_mlm_head, load_mlm_head, masked_lm_loss
from .pooling import POOLING_MODES, pool
from .tasks import TaskSpec, check_task_specs, check_unique_names, head_mismatches

logger = logging.getLogger(__name__)


class MultiTaskConfig(PretrainedConfig):
    """Configuration of a `MultiTaskModel`: the encoder's own config plus one entry per task head.

    Args:
        encoder_config: The shared encoder's configuration (any `AutoConfig`), or its dict.
        tasks: One dict per head: `{"name", "num_labels", "problem_type", "id2label"}` (see
            `TaskSpec.head_config`). `problem_type` is `"regression"` or `"single_label_classification"`.
        pooling: How a sequence becomes one vector: `"cls"` (first token), `"pooler"` (the encoder's
            pooler output, as `BertForSequenceClassification`), `"mean"` or `"max"` over non-padding tokens,
            or `"mask"` (the hidden state at the one mask token of each example, DynaMaR). A head may
            override it with its own `"pooling"` (tasks with prompt templates pool at the mask).
        classifier_dropout: Dropout before each head; defaults to the encoder's hidden dropout.
        peft_config: PEFT config (e.g. LoRA) of the shared encoder as a dict (`hf_async_mtl.adapters.
            peft_config_to_dict`), or `None`. A model built from this config wraps its encoder with it.
        mask_token_id: The tokenizer's mask token id, needed by `"mask"` pooling.
        task_adapters: PEFT config (e.g. LoRA) as a dict of ONE ADAPTER PER TASK on the shared encoder
            (`hf_async_mtl.task_capacity`), or `None`. Not combined with `peft_config` or `unshared_layers`.
        task_adapters_train_base: With `task_adapters`: train the encoder's base weights too (a shared full
            fine-tune plus a low-rank part per task); by default they are frozen.
        unshared_layers: Give each task its own copy of the encoder's last k layers (0: fully shared encoder).
    """

    model_type = "hf_async_mtl"
    sub_configs = {"encoder_config": AutoConfig}

    def __init__(
        self,
        encoder_config: PretrainedConfig | dict | None = None,
        tasks: Sequence[dict[str, Any]] | None = None,
        pooling: str = "cls",
        classifier_dropout: float | None = None,
        peft_config: dict[str, Any] | None = None,
        mask_token_id: int | None = None,
        task_adapters: dict[str, Any] | None = None,
        task_adapters_train_base: bool = False,
        unshared_layers: int = 0,
        **kwargs: Any,
    ) -> None:
        if isinstance(encoder_config, dict):
            encoder_config = AutoConfig.for_model(**encoder_config)
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}.")
        check_task_capacity(unshared_layers, task_adapters, peft_config, task_adapters_train_base)
        self.task_adapters = dict(task_adapters) if task_adapters else None
        self.task_adapters_train_base = bool(task_adapters_train_base)
        self.unshared_layers = int(unshared_layers)
        self.encoder_config = encoder_config
        self.tasks = [dict(task) for task in (tasks or [])]
        names = [task["name"] for task in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"MultiTaskConfig: duplicate task names in {names}.")
        self.mask_token_id = mask_token_id
        for task in self.tasks:
            mode = task.get("pooling", pooling)
            if mode not in POOLING_MODES:
                raise ValueError(f"Task {task['name']!r}: pooling must be one of {POOLING_MODES}, got {mode!r}.")
            if is_bi_encoder(task):
                check_pair_head(task, mode)
            if mode == "mask" and mask_token_id is None and encoder_config is not None:
                raise ValueError(
                    f"Task {task['name']!r} pools at the mask token: pass mask_token_id (the tokenizer's "
                    "mask_token_id) to the model config / from_encoder."
                )
        self.pooling = pooling
        self.classifier_dropout = classifier_dropout
        self.peft_config = dict(peft_config) if peft_config else None
        super().__init__(**kwargs)

    @property
    def task_names(self) -> list[str]:
        """Head names in task-id order (task id i is `task_names[i]`)."""
        return [task["name"] for task in self.tasks]

    def task(self, name: str) -> dict[str, Any]:
        """The head description of task `name`; a clear error names the known tasks."""
        for task in self.tasks:
            if task["name"] == name:
                return task
        raise KeyError(f"Task {name!r} has no head in this model; heads: {self.task_names}.")

    def task_pooling(self, name: str) -> str:
        """The pooling of task `name`'s head: its own `"pooling"`, else the model's."""
        return self.task(name).get("pooling", self.pooling)

    @property
    def hidden_size(self) -> int:
        """Width of the encoder's hidden states (and of the pooled vector)."""
        # The encoder config is optional only while transformers builds a default config; a model always has one.
        return cast(PretrainedConfig, self.encoder_config).hidden_size


def check_task_capacity(unshared_layers: int, task_adapters: Any, peft_config: Any, train_base: bool = False) -> None:
    """The task-specific capacity options form one of the supported shapes (a clear error otherwise)."""
    if isinstance(unshared_layers, bool) or not isinstance(unshared_layers, int) or unshared_layers < 0:
        raise ValueError(f"unshared_layers must be an int >= 0 (0: a fully shared encoder), got {unshared_layers!r}.")
    if task_adapters and peft_config:
        raise ValueError("Per-task adapters and a shared LoRA adapter cannot be combined: use one of them.")
    if task_adapters and unshared_layers:
        raise ValueError("Per-task adapters and unshared top layers cannot be combined: use one of them.")
    if unshared_layers and peft_config:
        raise ValueError("Unshared top layers and a shared LoRA adapter cannot be combined: use one of them.")
    if train_base and not task_adapters:
        raise ValueError("task_adapters_train_base needs task_adapters (per-task adapters).")
    kind = task_adapters.get("peft_type") if isinstance(task_adapters, dict) else getattr(task_adapters, "peft_type", None)
    if task_adapters and str(getattr(kind, "value", kind)).upper() != "LORA":
        # Each task's parameters are found by peft's LoRA names (lora_A.<task>, ...): others would train nothing.
        raise ValueError(f"Per-task adapters are LoRA adapters (peft.LoraConfig); got peft_type {getattr(kind, 'value', kind)}.")


def resolve_local_checkpoint(name_or_path: str | os.PathLike, hub_kwargs: dict[str, Any] | None = None) -> str | None:
    """A local directory holding the checkpoint's safetensors files (a Hub id through the cache), or None."""
    if os.path.isdir(os.fspath(name_or_path)):
        return os.fspath(name_or_path)
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(
            os.fspath(name_or_path),
            allow_patterns=["*.safetensors"],
            cache_dir=(hub_kwargs or {}).get("cache_dir"),
            revision=(hub_kwargs or {}).get("revision"),
        )
    except Exception:  # noqa: BLE001 - offline or not on the Hub: no pretrained head to load
        return None


def read_sentence_transformers_pooling(name_or_path: str | os.PathLike, **hub_kwargs: Any) -> str | None:
    """Pooling mode declared by a sentence-transformers checkpoint (`1_Pooling/config.json`), if any.

    Returns `"mean"`, `"cls"` or `"max"`, or `None` when the checkpoint declares none. Both formats are read:
    sentence-transformers 6's `"pooling_mode": "mean"` (or a list of modes) and the `pooling_mode_*_tokens` flags of
    earlier versions. A declared mode this library does not pool by (e.g. `weightedmean`, `lasttoken`, or several
    modes concatenated) is an error: pooling otherwise would silently read features the model was not trained with.
    """
    local = os.path.join(os.fspath(name_or_path), "1_Pooling", "config.json")
    path: str | None = local if os.path.isfile(local) else None
    if path is None and not os.path.isdir(os.fspath(name_or_path)):
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(os.fspath(name_or_path), "1_Pooling/config.json", **hub_kwargs)
        except Exception:  # noqa: BLE001 - no such file, offline, or not a Hub repo: no declaration
            return None
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        declared = json.load(handle)
    modes = declared.get("pooling_mode")
    if modes is None:  # before sentence-transformers 6: one boolean per mode
        modes = [key.removeprefix("pooling_mode_") for key, value in declared.items() if key.startswith("pooling_mode_") and value is True]
    modes = [modes] if isinstance(modes, str) else list(modes)
    names = {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max", "mean": "mean", "cls": "cls", "max": "max"}
    if not modes:
        return None
    if len(modes) > 1 or modes[0] not in names:
        raise ValueError(
            f"{path} declares sentence-transformers pooling {modes if len(modes) > 1 else modes[0]!r}; hf_async_mtl pools by "
            "mean, cls, max or the encoder's pooler: pass one of them explicitly (pooling=..., --pooling)."
        )
    return names[modes[0]]


class MultiTaskModel(MultiTaskExportMixin, PreTrainedModel):
    """Shared encoder (any `AutoModel`) with one head (dropout + linear) per task.

    A forward pass takes a task-homogeneous batch: `task_ids` (one id per example, all equal) or
    `task_name` selects the head. With `labels` the task's hard-label loss is returned as `loss`. Its export
    methods (`single_task_model`, `export_task`, `push_to_hub`, `push_task_to_hub`) are in `hf_async_mtl.export`.
    """

    config_class = MultiTaskConfig
    base_model_prefix = "encoder"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True

    def __init__(self, config: MultiTaskConfig) -> None:
        super().__init__(config)
        if config.encoder_config is None:
            raise ValueError("MultiTaskConfig.encoder_config is required to build a MultiTaskModel.")
        self.encoder = AutoModel.from_config(config.encoder_config)
        dropout = config.classifier_dropout
        if dropout is None:
            dropout = getattr(config.encoder_config, "hidden_dropout_prob", 0.1)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict(
            {
                task["name"]: MaskedLMHead(config.encoder_config)
                if task["problem_type"] == MLM_PROBLEM_TYPE
                else build_pair_head(task, config.hidden_size)
                if is_bi_encoder(task)
                else nn.Linear(config.hidden_size, task["num_labels"])
                for task in config.tasks
            }
        )
        if config.pooling == "pooler" and getattr(self.encoder, "pooler", None) is None:
            raise ValueError(
                f"pooling='pooler' needs an encoder with a pooler layer; {type(self.encoder).__name__} has none. "
                "Use pooling='cls' or 'mean'."
            )
        self.post_init()
        if config.peft_config:
            # After post_init, so weight initialisation cannot touch the adapters' own init (LoRA B = 0).
            self._wrap_encoder(config.peft_config)
        if config.unshared_layers or config.task_adapters:
            self._build_task_capacity()

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_encoder(
        cls,
        encoder_name_or_path: str | os.PathLike,
        tasks: Sequence[TaskSpec],
        *,
        pooling: str = "auto",
        classifier_dropout: float | None = None,
        peft_config: Any = None,
        mask_token_id: int | None = None,
        task_adapters: Any = None,
        task_adapters_train_base: bool = False,
        unshared_layers: int = 0,
        **encoder_kwargs: Any,
    ) -> MultiTaskModel:
        """Build a model from a pretrained encoder checkpoint (local directory or Hub id) and task specs.

        `pooling="auto"` uses the checkpoint's declared sentence-transformers pooling (e.g. mean for
        all-MiniLM-L6-v2, whose BERT pooler was never trained), else the encoder's pooler when it has
        one, else the first token. `mask_token_id` (the tokenizer's) is needed when a task has prompt
        templates (its head pools at the mask token) or `pooling="mask"`. `peft_config` (e.g. `peft.LoraConfig(r=8)`) wraps the shared encoder
        with PEFT adapters (see `apply_peft`); the heads stay fully trainable. `task_adapters` (a PEFT config)
        gives each task its own adapter instead, `unshared_layers=k` each task its own copy of the last k layers
        (see `add_task_capacity`).
        """
        tasks = check_task_specs(tasks, "from_encoder's tasks")
        check_unique_names(tasks)
        if not tasks:
            raise ValueError("from_encoder needs at least one TaskSpec.")
        # transformers 5 loads a checkpoint in the dtype it was saved in ("auto"): a bf16 / fp16 encoder beside float32
        # heads would fail at the first forward, and train without float32 master weights. The whole model takes one
        # dtype: float32 unless `dtype` is given.
        dtype = encoder_kwargs.pop("dtype", None) or encoder_kwargs.pop("torch_dtype", None) or torch.float32
        encoder = AutoModel.from_pretrained(encoder_name_or_path, dtype=dtype, **encoder_kwargs)
        if isinstance(encoder, MultiTaskModel):
            raise ValueError(
                f"{os.fspath(encoder_name_or_path)} is a saved MultiTaskModel, not an encoder: load it with "
                "MultiTaskModel.from_pretrained (its heads included), or build from its base encoder "
                f"({getattr(encoder.config, 'base_encoder_name_or_path', None) or 'the checkpoint it was trained from'})."
            )
        if pooling == "auto":
            hub_kwargs = {key: encoder_kwargs[key] for key in ("cache_dir", "revision", "token") if encoder_kwargs.get(key) is not None}
            pooling = read_sentence_transformers_pooling(encoder_name_or_path, **hub_kwargs) or (
                "pooler" if getattr(encoder, "pooler", None) is not None else "cls"
            )
        config = MultiTaskConfig(
            encoder_config=encoder.config,
            tasks=[spec.head_config() for spec in tasks],
            pooling=pooling,
            classifier_dropout=classifier_dropout,
            mask_token_id=mask_token_id,
            base_encoder_name_or_path=os.fspath(encoder_name_or_path),
        )
        model = cls(config)
        # Copy rather than adopt the module so `post_init` above cannot re-initialise pretrained weights.
        model.encoder.load_state_dict(encoder.state_dict())
        for spec in tasks:
            if spec.is_mlm:
                source = resolve_local_checkpoint(encoder_name_or_path, encoder_kwargs)
                if source is None or not load_mlm_head(cast(MaskedLMHead, model.heads[spec.name]), source):
                    logger.info(
                        "Task %s: %s has no masked-LM head; the MLM head starts as transformers initialises one "
                        "(its decoder is the encoder's input embeddings).",
                        spec.name,
                        encoder_name_or_path,
                    )
        model.to(encoder.dtype)
        if peft_config is not None:
            model.apply_peft(peft_config)
        if unshared_layers or task_adapters is not None or task_adapters_train_base:
            model.add_task_capacity(unshared_layers=unshared_layers, task_adapters=task_adapters, train_base=task_adapters_train_base)
        return model

    # ---- PEFT adapters on the shared encoder (hf_async_mtl.adapters) ----------------------------

    def _wrap_encoder(self, peft_config: Any) -> None:
        from .adapters import wrap_encoder

        self.encoder, self.config.peft_config = wrap_encoder(self.encoder, peft_config)
        self._trainable_encoder_names = {n for n, p in self.encoder.named_parameters() if p.requires_grad}

    # ---- task-specific capacity (hf_async_mtl.task_capacity) ------------------------------------

    def _build_task_capacity(self) -> None:
        from .task_capacity import add_task_adapters, add_unshared_layers

        if self.config.unshared_layers:
            add_unshared_layers(self.encoder, self.config.unshared_layers, self.task_names)
        if self.config.task_adapters:
            self.encoder, self.config.task_adapters = add_task_adapters(
                self.encoder, self.config.task_adapters, self.task_names, train_base=self.config.task_adapters_train_base
            )
            self._trainable_encoder_names = {n for n, p in self.encoder.named_parameters() if p.requires_grad}

    def add_task_capacity(self, *, unshared_layers: int = 0, task_adapters: Any = None, train_base: bool = False) -> MultiTaskModel:
        """Give each task parameters of its own inside the shared encoder, in place; returns `self`.

        `unshared_layers=k`: each task gets its own copy of the encoder's last k layers, initialised from the
        current ones. `task_adapters` (a `peft` config such as `peft.LoraConfig(r=8)`, or its dict): one adapter
        per task, routed by each batch's task; the base weights are frozen unless `train_base`. The config
        records the choice, so `save_pretrained` → `from_pretrained` rebuilds the same structure.
        """
        from .adapters import peft_config_to_dict

        if self.has_task_capacity:
            raise ValueError("The model already has task-specific capacity (unshared layers or per-task adapters).")
        if task_adapters is not None and not isinstance(task_adapters, dict):
            task_adapters = peft_config_to_dict(task_adapters)
        check_task_capacity(unshared_layers, task_adapters, self.config.peft_config, train_base)
        if any(spec["problem_type"] == MLM_PROBLEM_TYPE for spec in self.config.tasks) and task_adapters:
            logger.info("Per-task adapters: MLM auxiliary tasks get an adapter of their own too.")
        self.config.unshared_layers = int(unshared_layers)
        self.config.task_adapters = task_adapters
        self.config.task_adapters_train_base = bool(train_base)
        self._build_task_capacity()
        return self

    @property
    def has_task_capacity(self) -> bool:
        """Whether some encoder parameters belong to one task (unshared top layers or per-task adapters)."""
        return bool(self.config.unshared_layers or self.config.task_adapters)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any):
        path = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        if path is not None and kwargs.get("config") is None:
            options = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only", "subfolder") if k in kwargs}
            try:
                found = PretrainedConfig.get_config_dict(path, **options)[0].get("model_type")
            except OSError:  # no config at all: transformers' own error says so
                found = cls.config_class.model_type
            if found != cls.config_class.model_type:
                raise ValueError(
                    f"{os.fspath(path)} holds a {found!r} checkpoint, not a MultiTaskModel: build one on it with "
                    "MultiTaskModel.from_encoder(path, task_specs) (an exported task loads with AutoModelForSequenceClassification)."
                )
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        if hasattr(model, "_trainable_encoder_names"):
            # Loading swaps in new parameters (all requires_grad=True): freeze the encoder's base weights again.
            for name, parameter in model.encoder.named_parameters():
                parameter.requires_grad_(name in model._trainable_encoder_names)
        return loaded

    def apply_peft(self, peft_config: Any) -> MultiTaskModel:
        """Wrap the shared encoder with PEFT adapters (e.g. `peft.LoraConfig`) in place; returns `self`.

        The encoder's base weights are frozen, its adapters and every head are trainable, and
        `config.peft_config` records the adapter config so `save_pretrained` → `from_pretrained`
        rebuilds the same structure (the checkpoint holds base, adapters and heads).
        """
        if self.has_adapters:
            raise ValueError("The shared encoder already has PEFT adapters; merge_adapters() first to add new ones.")
        # unshared layers or per-task adapters with a shared adapter: a structure from_pretrained cannot rebuild
        check_task_capacity(self.config.unshared_layers or 0, self.config.task_adapters, peft_config)
        self._wrap_encoder(peft_config)
        return self

    @property
    def has_adapters(self) -> bool:
        """Whether the shared encoder is wrapped by one shared PEFT adapter (per-task adapters: `has_task_capacity`)."""
        from .adapters import is_peft_encoder

        return is_peft_encoder(self.encoder) and not self.config.task_adapters

    def merge_adapters(self) -> MultiTaskModel:
        """A plain `MultiTaskModel` (no PEFT) with the adapters merged into the encoder; `self` is unchanged."""
        from .adapters import merged_encoder

        if self.has_task_capacity:
            raise ValueError(
                "merge_adapters merges a shared adapter into the one encoder; per-task adapters / unshared layers give each "
                "task its own encoder: use single_task_model(task) (or export_task(task, directory)) for one task's plain model."
            )

        encoder = merged_encoder(self.encoder)
        config_dict = self.config.to_dict()
        config_dict["peft_config"] = None
        config_dict.pop("model_type", None)
        config_dict.pop("transformers_version", None)
        merged = MultiTaskModel(MultiTaskConfig(**config_dict))
        merged.encoder.load_state_dict(encoder.state_dict())
        merged.heads.load_state_dict(self.heads.state_dict())
        # transformers wraps `.to` with functools.wraps; mypy does not bind `self` through the `_Wrapped` it returns.
        return merged.to(device=self.device, dtype=self.dtype).train(self.training)  # type: ignore[call-arg]

    def _init_weights(self, module: nn.Module) -> None:
        std = getattr(self.config.encoder_config, "initializer_range", 0.02)
        if isinstance(module, nn.Linear) and any(module is head for head in self.heads.values()):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, MaskedLMHead):
            init_mlm_head(module, std)
        # The encoder is a PreTrainedModel: `initialize_weights` dispatches to its own `_init_weights`.

    # ---- task bookkeeping ---------------------------------------------------------------------

    @property
    def task_names(self) -> list[str]:
        """Head names in task-id order."""
        return self.config.task_names

    def is_regression(self, task_name: str) -> bool:
        """Whether task `task_name` has a regression head."""
        return self.config.task(task_name)["problem_type"] == "regression"

    def check_tasks(self, tasks: Sequence[TaskSpec]) -> None:
        """Raise a clear error unless the model's heads match `tasks` (names, order, sizes, kinds, label names)."""
        problems = head_mismatches(self.config.tasks, tasks)
        if problems:
            raise ValueError("The checkpoint's heads do not match the requested tasks: " + "; ".join(problems) + ".")

    def _resolve_task(self, task_ids: torch.Tensor | None, task_name: str | None) -> str:
        if task_name is not None:
            self.config.task(task_name)
            return task_name
        if task_ids is None:
            if len(self.task_names) == 1:
                return self.task_names[0]
            raise ValueError(f"This model has {len(self.task_names)} heads; pass task_ids or task_name.")
        task_ids = task_ids.view(-1)
        first = int(task_ids[0])
        if bool((task_ids != first).any()):
            raise ValueError(
                f"A batch must hold examples of a single task (task-homogeneous); got task ids {sorted(set(task_ids.tolist()))}."
            )
        if not 0 <= first < len(self.task_names):
            raise ValueError(f"task id {first} is out of range for heads {self.task_names}.")
        return self.task_names[first]

    # ---- forward ------------------------------------------------------------------------------

    def pool(
        self,
        encoder_outputs: Any,
        attention_mask: torch.Tensor | None,
        input_ids: torch.Tensor | None = None,
        task_name: str | None = None,
    ) -> torch.Tensor:
        """Turn the encoder's outputs into one vector per example, by the task's pooling (`config.task_pooling`)."""
        mode = self.config.pooling if task_name is None else self.config.task_pooling(task_name)
        return pool(mode, encoder_outputs, attention_mask, input_ids, self.config.mask_token_id)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        task_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        task_name: str | None = None,
        inputs_embeds: torch.Tensor | None = None,
        pair_input_ids: torch.Tensor | None = None,
        pair_attention_mask: torch.Tensor | None = None,
        pair_token_type_ids: torch.Tensor | None = None,
        **encoder_kwargs: Any,
    ) -> SequenceClassifierOutput | MaskedLMOutput:
        """Encode a task-homogeneous batch and apply its task's head; `loss` is set when `labels` are given.

        A bi-encoder pair task (`hf_async_mtl.bi_encoder`) reads text a from `input_ids` / `attention_mask` /
        `token_type_ids` and text b from `pair_input_ids` / `pair_attention_mask` / `pair_token_type_ids`.
        """
        task = self._resolve_task(task_ids, task_name)
        if self.config.task(task)["problem_type"] == MLM_PROBLEM_TYPE and inputs_embeds is not None:
            raise ValueError(f"Task {task!r} (MLM) needs input_ids, not inputs_embeds.")
        encoder_inputs: dict[str, Any] = {"attention_mask": attention_mask, **encoder_kwargs}
        if token_type_ids is not None:
            encoder_inputs["token_type_ids"] = token_type_ids
        if inputs_embeds is not None:
            encoder_inputs["inputs_embeds"] = inputs_embeds
        else:
            encoder_inputs["input_ids"] = input_ids
        pair_inputs = {
            "pair_input_ids": pair_input_ids,
            "pair_attention_mask": pair_attention_mask,
            "pair_token_type_ids": pair_token_type_ids,
        }
        bi_encoder = is_bi_encoder(self.config.task(task))
        if not bi_encoder and any(value is not None for value in pair_inputs.values()):
            raise ValueError(f"Task {task!r} reads a pair as one sequence (cross-encoder): pair_* inputs are for bi-encoder tasks.")
        # Task-specific capacity (per-task adapters, unshared layers): every encoding of this batch runs the task's parts.
        with self._task_route(task):
            if bi_encoder:
                return self._bi_encoder_forward(task, {**encoder_inputs, **pair_inputs}, labels)
            outputs = self.encoder(**encoder_inputs, return_dict=True)
        if self.config.task(task)["problem_type"] == MLM_PROBLEM_TYPE:
            return self._masked_lm(task, outputs.last_hidden_state, labels)
        pooled = self.dropout(self.pool(outputs, attention_mask, input_ids, task))
        logits = self.heads[task](pooled)
        loss = task_loss(logits, labels, self.is_regression(task)) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def _task_route(self, task: str) -> contextlib.AbstractContextManager:
        """Route the encoder to `task`'s adapter / unshared layers (a no-op without task-specific capacity)."""
        if not self.has_task_capacity:
            return contextlib.nullcontext()
        from .task_capacity import route

        return route(self.encoder, task)

    def _bi_encoder_forward(self, task: str, inputs: dict[str, Any], labels: torch.Tensor | None) -> SequenceClassifierOutput:
        """A bi-encoder pair task: each text encoded alone and pooled, the pair scored by the task's pair head."""
        first, second = split_pair_inputs(task, inputs)
        logits = bi_encoder_logits(
            lambda encoded: self.encoder(**encoded, return_dict=True),
            lambda outputs, mask, ids: self.pool(outputs, mask, ids, task),
            self.heads[task],
            self.dropout,
            first,
            second,
        )
        head = self.config.task(task)
        loss = task_loss(logits, labels, self.is_regression(task), head.get("label_range")) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def _masked_lm(self, task: str, hidden: torch.Tensor, labels: torch.Tensor | None) -> MaskedLMOutput:
        """MLM head: with `labels`, logits `[M, vocab]` of the M masked positions only (labels != -100) and their
        mean cross-entropy (0 when a batch has no masked token); without, logits of every position."""
        embedding = self.encoder.get_input_embeddings().weight
        if labels is None:
            return MaskedLMOutput(logits=self.heads[task](hidden, embedding))
        selected = labels != IGNORE_INDEX
        logits = self.heads[task](hidden[selected], embedding)
        loss = masked_lm_loss(logits, labels[selected]) if logits.shape[0] else logits.sum() * 0.0
        return MaskedLMOutput(loss=loss, logits=logits)


AutoConfig.register(MultiTaskConfig.model_type, MultiTaskConfig)
AutoModel.register(MultiTaskConfig, MultiTaskModel)
AutoModelForSequenceClassification.register(MultiTaskConfig, MultiTaskModel)
