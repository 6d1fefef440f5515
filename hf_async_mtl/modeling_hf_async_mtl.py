"""Plain-transformers code of one exported task (`MultiTaskModel.export_task`), for `trust_remote_code=True`.

`export_task` copies this file next to `config.json` and names its classes in the config's `auto_map`
(the Hub convention for custom architectures), so an export whose pooling has no native transformers
equivalent (mean, max or first-token pooling) loads without `hf_async_mtl`:

    AutoModelForSequenceClassification.from_pretrained(directory, trust_remote_code=True)
    pipeline("text-classification", model=directory, trust_remote_code=True)

A bi-encoder pair task (`bi_encoder.py`, also copied beside it) takes text b as `pair_input_ids` / `pair_attention_mask`,
and `pipeline(..., trust_remote_code=True)` on it takes `{"text": a, "text_pair": b}` (`PairTextClassificationPipeline`).

Self-contained on purpose: it imports torch, transformers, `pooling.py`, `prompting.py` and `bi_encoder.py` (copied beside it) only. It reads the `config.json` and the
weights a one-head `hf_async_mtl.MultiTaskModel` writes (same keys) and computes the same logits;
`tests/test_modeling.py` checks both in a fresh interpreter. Where `hf_async_mtl` is imported, the same
directory also loads without `trust_remote_code`, as a `MultiTaskModel`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, BatchEncoding, PretrainedConfig, PreTrainedModel, TextClassificationPipeline
from transformers.modeling_outputs import SequenceClassifierOutput

from .bi_encoder import (
    PAIR_PREFIX,
    bi_encoder_logits,
    bi_encoder_loss,
    build_pair_head,
    is_bi_encoder,
    split_pair_inputs,
)
from .pooling import POOLING_MODES, pool
from .prompting import combine_template_outputs, encode_prompts


class HfAsyncMtlConfig(PretrainedConfig):
    """The config of an exported task: the encoder's config, one head description, the pooling."""

    model_type = "hf_async_mtl"
    sub_configs = {"encoder_config": AutoConfig}

    def __init__(
        self,
        encoder_config: PretrainedConfig | dict | None = None,
        tasks: list[dict[str, Any]] | None = None,
        pooling: str = "cls",
        classifier_dropout: float | None = None,
        peft_config: dict[str, Any] | None = None,
        mask_token_id: int | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(encoder_config, dict):
            encoder_config = AutoConfig.for_model(**encoder_config)
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}.")
        self.encoder_config = encoder_config
        self.tasks = [dict(task) for task in (tasks or [])]
        self.pooling = pooling
        self.classifier_dropout = classifier_dropout
        self.peft_config = dict(peft_config) if peft_config else None
        self.mask_token_id = mask_token_id
        super().__init__(**kwargs)


class HfAsyncMtlForSequenceClassification(PreTrainedModel):
    """Shared encoder + the exported task's head (dropout + linear), pooled as the multi-task model pooled."""

    config_class = HfAsyncMtlConfig
    base_model_prefix = "encoder"
    main_input_name = "input_ids"

    def __init__(self, config: HfAsyncMtlConfig) -> None:
        super().__init__(config)
        if config.encoder_config is None or len(config.tasks) != 1:
            raise ValueError(
                "This code loads single-task exports (MultiTaskModel.export_task): one head and an encoder config; "
                f"the config has {len(config.tasks)} heads."
            )
        if config.peft_config:
            raise ValueError("Exports hold merged weights; this config still declares PEFT adapters.")
        head = config.tasks[0]
        self.task_name = head["name"]
        self.encoder = AutoModel.from_config(config.encoder_config)
        dropout = config.classifier_dropout
        if dropout is None:
            dropout = getattr(config.encoder_config, "hidden_dropout_prob", 0.1)
        self.dropout = nn.Dropout(dropout)
        hidden_size = config.encoder_config.hidden_size
        self.heads = nn.ModuleDict(
            {self.task_name: build_pair_head(head, hidden_size) if is_bi_encoder(head) else nn.Linear(hidden_size, head["num_labels"])}
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear) and any(module is head for head in self.heads.values()):
            nn.init.normal_(module.weight, mean=0.0, std=getattr(self.config.encoder_config, "initializer_range", 0.02))
            nn.init.zeros_(module.bias)

    def pool(self, outputs: Any, attention_mask: torch.Tensor | None, input_ids: torch.Tensor | None = None) -> torch.Tensor:
        return pool(self.config.tasks[0].get("pooling", self.config.pooling), outputs, attention_mask, input_ids, self.config.mask_token_id)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        pair_input_ids: torch.Tensor | None = None,
        pair_attention_mask: torch.Tensor | None = None,
        pair_token_type_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        head = self.config.tasks[0]
        if is_bi_encoder(head):  # text a and text b encoded apart, scored by the pair head
            first, second = split_pair_inputs(
                self.task_name,
                {
                    "input_ids": input_ids,
                    "attention_mask": attention_mask,
                    "token_type_ids": token_type_ids,
                    "pair_input_ids": pair_input_ids,
                    "pair_attention_mask": pair_attention_mask,
                    "pair_token_type_ids": pair_token_type_ids,
                },
            )
            logits = bi_encoder_logits(
                lambda encoded: self.encoder(**encoded, return_dict=True),
                self.pool,
                self.heads[self.task_name],
                self.dropout,
                first,
                second,
            )
            return SequenceClassifierOutput(loss=None if labels is None else bi_encoder_loss(head, logits, labels), logits=logits)
        inputs: dict[str, Any] = {"attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        if inputs_embeds is not None:
            inputs["inputs_embeds"] = inputs_embeds
        else:
            inputs["input_ids"] = input_ids
        outputs = self.encoder(**inputs, return_dict=True)
        logits = self.heads[self.task_name](self.dropout(self.pool(outputs, attention_mask, input_ids)))
        loss = None
        if labels is not None:
            if self.config.tasks[0]["problem_type"] == "regression":
                loss = nn.functional.mse_loss(logits.view(-1), labels.view(-1).to(logits.dtype))
            else:
                loss = nn.functional.cross_entropy(logits, labels.view(-1).long())
        return SequenceClassifierOutput(loss=loss, logits=logits)


class PromptTextClassificationPipeline(TextClassificationPipeline):
    """`text-classification` for an exported task with prompt templates (named in `config.custom_pipelines`).

    Each input (a string, or `{"text": ..., "text_pair": ...}` / `{<text field>: ...}` for a pair task)
    is wrapped in the task's template exactly as the training data was (`prompting.encode_prompts`);
    with `prompt_eval="average"` it is wrapped in every template of the pool and the head outputs are
    averaged (`prompting.combine_template_outputs`), one input per forward pass.
    """

    def _head(self) -> dict[str, Any]:
        return self.model.config.tasks[0]

    def _templates(self) -> list[str]:
        head = self._head()
        templates = list(head.get("prompt_templates") or [])
        if not templates:
            raise ValueError("This model has no prompt templates; use the plain text-classification pipeline.")
        return templates if head.get("prompt_eval", "first") == "average" else templates[:1]

    # Narrower than Pipeline.__call__ (options by keyword only): mypy flags any narrower override.
    def __call__(self, inputs: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if len(self._templates()) > 1 and (kwargs.get("batch_size") or self._batch_size or 1) > 1:
            raise ValueError("Averaging over a template pool runs one input per forward pass: use batch_size=1.")
        return super().__call__(inputs, **kwargs)

    # transformers annotates dict[str, GenericTensor], yet its pipelines (this one too) return the tokenizer's BatchEncoding.
    def preprocess(self, inputs: Any, **tokenizer_kwargs: Any) -> BatchEncoding:  # type: ignore[override]
        fields = list(self._head()["text_fields"])
        assert self.tokenizer is not None  # a text-classification pipeline is built with its tokenizer
        texts: list[Any]
        if isinstance(inputs, str):
            texts = [inputs]
        elif isinstance(inputs, dict):
            texts = [inputs[f] for f in fields] if all(f in inputs for f in fields) else [inputs.get("text"), inputs.get("text_pair")]
            texts = [t for t in texts if t is not None]
        else:
            raise ValueError("Pass a string, or a dict {'text': ..., 'text_pair': ...} for a sentence-pair task.")
        if len(texts) != len(fields):
            raise ValueError(f"This task reads {len(fields)} text(s) {fields}; got {len(texts)}.")
        # Truncate as training did (run_glue_mtl records max_seq_length), never past the encoder's positions.
        positions = getattr(self.model.config.encoder_config, "max_position_embeddings", None) or self.tokenizer.model_max_length
        max_length = (
            tokenizer_kwargs.get("max_length") or getattr(self.model.config, "max_seq_length", None) or self.tokenizer.model_max_length
        )
        max_length = min(int(max_length), int(positions))
        rows: list[dict[str, list[int]]] = []
        for template in self._templates():
            encoded = encode_prompts(self.tokenizer, template, {f: [t] for f, t in zip(fields, texts)}, max_length)
            rows.append({key: value[0] for key, value in encoded.items()})
        return self.tokenizer.pad(rows, return_tensors="pt")

    # As TextClassificationPipeline._forward (one argument), which mypy finds narrower than Pipeline._forward.
    def _forward(self, model_inputs: dict[str, torch.Tensor]) -> Any:  # type: ignore[override]
        outputs = self.model(**model_inputs)
        k = int(model_inputs["input_ids"].shape[0])
        if k > 1:
            regression = self._head()["problem_type"] == "regression"
            outputs = SequenceClassifierOutput(logits=combine_template_outputs(outputs.logits, k, regression))
        return outputs


class PairTextClassificationPipeline(TextClassificationPipeline):
    """`text-classification` for an exported bi-encoder pair task (named in `config.custom_pipelines`).

    Each input is `{"text": a, "text_pair": b}` (or `{<text field>: ...}` with the task's two fields); the two texts
    are tokenized apart, each truncated as training did, and scored by the pair head.
    """

    # transformers annotates dict[str, GenericTensor], yet its pipelines return the tokenizer's BatchEncoding.
    def preprocess(self, inputs: Any, **tokenizer_kwargs: Any) -> BatchEncoding:  # type: ignore[override]
        assert self.tokenizer is not None  # a text-classification pipeline is built with its tokenizer
        fields = list(self.model.config.tasks[0].get("text_fields") or ())
        if isinstance(inputs, dict) and fields and all(f in inputs for f in fields):
            texts = [inputs[f] for f in fields]
        elif isinstance(inputs, dict):
            texts = [inputs.get("text"), inputs.get("text_pair")]
        else:
            texts = []
        if len(texts) != 2 or not all(isinstance(t, str) for t in texts):
            raise ValueError('A bi-encoder pair task reads two texts: pass {"text": ..., "text_pair": ...}.')
        positions = getattr(self.model.config.encoder_config, "max_position_embeddings", None) or self.tokenizer.model_max_length
        max_length = (
            tokenizer_kwargs.get("max_length") or getattr(self.model.config, "max_seq_length", None) or self.tokenizer.model_max_length
        )
        max_length = min(int(max_length), int(positions))
        first = self.tokenizer(texts[0], truncation=True, max_length=max_length, return_tensors="pt")
        second = self.tokenizer(texts[1], truncation=True, max_length=max_length, return_tensors="pt")
        first.update({PAIR_PREFIX + key: value for key, value in second.items()})
        return first
