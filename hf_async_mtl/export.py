"""Turning a trained `MultiTaskModel` into standalone models: one task as its own checkpoint, Hub pushes.

`MultiTaskExportMixin` is the export half of `MultiTaskModel` (it relies on the model's `config`, `encoder`, `heads`,
`has_task_capacity`, `has_adapters` and `merge_adapters`): `single_task_model` (a one-head copy, task-specific
capacity made plain), `export_task` (a native transformers checkpoint when one provably computes the same logits,
else the one-head model with its remote code, or a sentence-transformers directory for bi-encoder cosine tasks),
`push_to_hub` / `push_task_to_hub` (with generated cards, `hf_async_mtl.hub`).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from .bi_encoder import COSINE_HEAD, SENTENCE_TRANSFORMERS_POOLING, export_sentence_transformers, is_bi_encoder
from .files import directory_atomic
from .mlm import MLM_PROBLEM_TYPE

if TYPE_CHECKING:
    # For mypy the mixin is the PreTrainedModel it is combined with (`MultiTaskModel`); at run time it is a plain class.
    _ModelBase = PreTrainedModel
else:
    _ModelBase = object

# What `export_task` writes for poolings without a native transformers model: this self-contained file,
# named in config.json's `auto_map` (the Hub convention for custom code; loads with trust_remote_code=True).
REMOTE_CODE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "modeling_hf_async_mtl.py")
# Imported by REMOTE_CODE_FILE (prompt rendering for exported pipelines): copied beside it.
REMOTE_CODE_DEPENDENCIES = tuple(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), name) for name in ("pooling.py", "prompting.py", "bi_encoder.py")
)
# An exported task with prompt templates renders raw text through this pipeline (in REMOTE_CODE_FILE).
PROMPT_PIPELINE = {
    "text-classification": {
        "impl": "modeling_hf_async_mtl.PromptTextClassificationPipeline",
        "pt": ["AutoModelForSequenceClassification"],
        "tf": [],
        "type": "text",
    }
}
# An exported bi-encoder pair task (not a sentence-transformers directory) tokenizes its two texts apart through this one.
PAIR_PIPELINE = {
    "text-classification": {
        "impl": "modeling_hf_async_mtl.PairTextClassificationPipeline",
        "pt": ["AutoModelForSequenceClassification"],
        "tf": [],
        "type": "text",
    }
}
REMOTE_CODE_AUTO_MAP = {
    "AutoConfig": "modeling_hf_async_mtl.HfAsyncMtlConfig",
    "AutoModel": "modeling_hf_async_mtl.HfAsyncMtlForSequenceClassification",
    "AutoModelForSequenceClassification": "modeling_hf_async_mtl.HfAsyncMtlForSequenceClassification",
}


_Model = TypeVar("_Model", bound="MultiTaskExportMixin")


class MultiTaskExportMixin(_ModelBase):
    """Export methods of `MultiTaskModel` (see the module docstring)."""

    # What the mixin reads from `MultiTaskModel` (declarations for mypy; the model sets and defines them).
    encoder: Any
    heads: nn.ModuleDict

    if TYPE_CHECKING:

        @property
        def has_task_capacity(self) -> bool: ...

        @property
        def has_adapters(self) -> bool: ...

        def merge_adapters(self) -> MultiTaskExportMixin: ...

    def single_task_model(self: _Model, task_name: str) -> _Model:
        """A one-head copy of this model (shared encoder + that task's head). With task-specific capacity the
        copy is a plain model: the task's adapter merged into the encoder, its unshared layers inlined."""
        head = self.config.task(task_name)
        config_dict = self.config.to_dict()
        config_dict["tasks"] = [head]
        config_dict["id2label"] = {int(k): v for k, v in head["id2label"].items()}
        config_dict["label2id"] = {v: int(k) for k, v in head["id2label"].items()}
        config_dict["problem_type"] = head["problem_type"]
        config_dict.pop("model_type", None)
        config_dict.pop("transformers_version", None)
        if self.has_task_capacity:
            from .task_capacity import plain_encoder

            config_dict.update(unshared_layers=0, task_adapters=None, task_adapters_train_base=False)
            single = type(self)(type(self.config)(**config_dict))
            single.encoder.load_state_dict(plain_encoder(self.encoder, task_name).state_dict())
            single.heads[task_name].load_state_dict(self.heads[task_name].state_dict())
            return single.to(device=self.device, dtype=self.dtype)  # type: ignore[call-arg]
        config = type(self.config)(**config_dict)
        single = type(self)(config)
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("heads.") or k.startswith(f"heads.{task_name}.")}
        single.load_state_dict(state)
        # In this model's dtype (a bf16 model exports bf16 weights). transformers wraps `.to` with functools.wraps; mypy
        # does not bind `self` through the `_Wrapped` it returns.
        return single.to(device=self.device, dtype=self.dtype)  # type: ignore[call-arg]

    def export_task(self, task_name: str, save_directory: str | os.PathLike, tokenizer: Any = None, **save_kwargs: Any) -> PreTrainedModel:
        """Save one task as a checkpoint that plain transformers loads, with its tokenizer when given.

        With `pooling="pooler"` on an encoder whose native sequence-classification model is "pooler →
        dropout → linear classifier" (BERT family), a standard native checkpoint (e.g.
        `BertForSequenceClassification`) is written: `AutoModelForSequenceClassification` and `pipeline`
        load it as is. Other poolings (mean, max, first token) have no native equivalent: a one-head
        `MultiTaskModel` is written with the Hub convention for custom architectures — `config.json`
        names `modeling_hf_async_mtl.py` (copied into the directory with `bi_encoder.py`, `pooling.py` and `prompting.py`) in its `auto_map` —
        so it loads with `trust_remote_code=True` in an interpreter that never imports `hf_async_mtl`, and
        without it where `hf_async_mtl` is imported. A task with prompt templates (mask pooling) also
        names a pipeline in `custom_pipelines`, so `pipeline("text-classification", model=directory,
        trust_remote_code=True)` wraps raw text in the task's template(s) as training did. `tokenizer` (e.g. the trainer's `processing_class`) is saved
        too, which `pipeline("text-classification", model=directory)` needs. Returns the saved model.

        A bi-encoder cosine task (mean, first-token or max pooling) is written as a sentence-transformers directory
        instead: the plain encoder and tokenizer (`AutoModel` loads them), `modules.json` and its pooling, so
        `SentenceTransformer(directory)` encodes and its cosine `similarity` is the task's cosine (the encoder is
        returned). Other bi-encoder tasks (sbert heads; cosine on pooler outputs) are the one-head model with its
        remote code, whose forward takes text b as `pair_input_ids` / `pair_attention_mask` (docs/bi_encoder.md).

        `save_directory` must not exist or be empty (an export never mixes with other files, nor replaces a saved
        model): the export is written beside it and renamed into place when complete, so a failure leaves nothing.
        """
        if self.config.task(task_name)["problem_type"] == MLM_PROBLEM_TYPE:
            raise ValueError(f"Task {task_name!r} is an MLM auxiliary objective: it has no classifier to export.")
        if tokenizer is not None and not hasattr(tokenizer, "save_pretrained"):
            raise TypeError(
                f"export_task: tokenizer must be a tokenizer object (AutoTokenizer.from_pretrained(...)), got a {type(tokenizer).__name__}."
            )
        target = os.path.abspath(os.fspath(save_directory))
        if os.path.exists(target) and not os.path.isdir(target):
            raise NotADirectoryError(f"export_task: {target} is a file, not a directory.")
        if os.path.isdir(target) and os.listdir(target):
            raise FileExistsError(
                f"export_task: {target} is not empty ({', '.join(sorted(os.listdir(target))[:3])}, ...): export into a new or "
                "empty directory (remove an old export first)."
            )
        with directory_atomic(target) as staging:
            return self._write_task(task_name, staging, tokenizer, **save_kwargs)

    def _write_task(self, task_name: str, save_directory: str, tokenizer: Any, **save_kwargs: Any) -> PreTrainedModel:
        """What `export_task` writes, into `save_directory` (its staging directory)."""
        if self.has_task_capacity:
            # The task's adapter merged / its layers inlined: a plain one-task model, exported as any other.
            return self.single_task_model(task_name)._write_task(task_name, save_directory, tokenizer, **save_kwargs)
        if self.has_adapters:
            # Exports are plain checkpoints: merge the adapters into the encoder first.
            return self.merge_adapters()._write_task(task_name, save_directory, tokenizer, **save_kwargs)
        head, pooling = self.config.task(task_name), self.config.task_pooling(task_name)
        if is_bi_encoder(head) and head["pair_head"] == COSINE_HEAD and pooling in SENTENCE_TRANSFORMERS_POOLING:
            max_seq_length = getattr(self.config, "max_seq_length", None) or 128  # tokenize_task's default
            return export_sentence_transformers(
                self.encoder, save_directory, pooling=pooling, max_seq_length=max_seq_length, tokenizer=tokenizer, **save_kwargs
            )
        exported = self._native_export(task_name) if pooling == "pooler" and not is_bi_encoder(head) else None
        if exported is None:
            exported = self.single_task_model(task_name)
            exported.config.auto_map = dict(REMOTE_CODE_AUTO_MAP)
            if self.config.task(task_name).get("prompt_templates"):
                exported.config.custom_pipelines = json.loads(json.dumps(PROMPT_PIPELINE))
            elif is_bi_encoder(head):
                exported.config.custom_pipelines = json.loads(json.dumps(PAIR_PIPELINE))
        exported.save_pretrained(save_directory, **save_kwargs)
        if isinstance(exported, MultiTaskExportMixin):
            for source in (REMOTE_CODE_FILE, *REMOTE_CODE_DEPENDENCIES):
                shutil.copyfile(source, os.path.join(os.fspath(save_directory), os.path.basename(source)))
        if tokenizer is not None:
            tokenizer.save_pretrained(save_directory)
        return exported

    # The base method is a functools.wraps object (`_Wrapped`), which a plain method can never match for mypy.
    def push_to_hub(self, repo_id: str, **kwargs: Any):  # type: ignore[override]
        """As `PreTrainedModel.push_to_hub`, with a generated multi-task model card as README.md.

        Extra keywords: `tokenizer` (pushed in the same commit) and `build_model_card` options (`args`,
        `log_history`, `task_specs`, ...). See `hf_async_mtl.hub.push_model_to_hub`.
        """
        from .hub import push_model_to_hub

        return push_model_to_hub(self, repo_id, **kwargs)

    def push_task_to_hub(self, task_name: str, repo_id: str, **kwargs: Any):
        """Push one task as a standalone sequence classifier (what `export_task` writes) with its own card.

        Loads with `AutoModelForSequenceClassification.from_pretrained(repo_id)`; pass `tokenizer=` to push it too.
        See `hf_async_mtl.hub.push_task_to_hub`.
        """
        from .hub import push_task_to_hub

        return push_task_to_hub(self, task_name, repo_id, **kwargs)

    def _native_export(self, task_name: str) -> PreTrainedModel | None:
        head = self.config.task(task_name)
        native_config = self.config.encoder_config.__class__.from_dict(self.config.encoder_config.to_dict())
        native_config.num_labels = head["num_labels"]
        native_config.id2label = {int(k): v for k, v in head["id2label"].items()}
        native_config.label2id = {v: int(k) for k, v in head["id2label"].items()}
        native_config.problem_type = head["problem_type"]
        try:
            native = AutoModelForSequenceClassification.from_config(native_config)
        except ValueError:
            return None
        classifier = getattr(native, "classifier", None)
        base = getattr(native, native.base_model_prefix, None)
        if not isinstance(classifier, nn.Linear) or base is None or getattr(base, "pooler", None) is None:
            return None
        base.load_state_dict(self.encoder.state_dict())
        classifier.load_state_dict(self.heads[task_name].state_dict())
        native.to(device=self.device, dtype=self.dtype).eval()
        # Only claim a native export when it provably computes the same logits (to the rounding of this model's dtype).
        probe = torch.arange(1, 9, device=self.device).view(1, 8) % native_config.vocab_size
        was_training = self.training
        self.eval()
        tolerance = 1e-5 if self.dtype == torch.float32 else 4 * torch.finfo(self.dtype).eps
        with torch.no_grad():
            native_logits = native(input_ids=probe).logits.float()
            same = torch.allclose(native_logits, self(input_ids=probe, task_name=task_name).logits.float(), atol=tolerance)
        self.train(was_training)
        return native if same else None
