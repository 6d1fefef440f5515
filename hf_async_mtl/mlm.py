"""The masked-language-modelling auxiliary objective (TARTAN): its head, its weights from a checkpoint, its loss.

An MLM task (`TaskSpec(..., objective="mlm")`) trains the shared encoder to predict masked tokens of some
text (e.g. the end task's own training text, as task-adaptive pre-training does, but *during* multi-task
training). Its head is the BERT-style prediction head — dense → activation → LayerNorm → decoder — whose
decoder is the encoder's input embedding matrix (tied: no separate weight, so nothing is duplicated in a
checkpoint) plus a vocabulary bias. When the encoder checkpoint has a masked-LM head (BERT `cls.predictions`,
RoBERTa `lm_head`), its transform and bias are loaded; otherwise they start as transformers initialises a new
head (normal(0, initializer_range) dense, unit LayerNorm, zero bias) and a message says so.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn
from transformers.activations import get_activation

from .tasks import MLM_PROBLEM_TYPE  # noqa: F401  (re-exported: the head kind in MultiTaskConfig)

logger = logging.getLogger(__name__)
IGNORE_INDEX = -100

# (dense weight, dense bias, LayerNorm weight, LayerNorm bias, vocabulary bias) in known masked-LM checkpoints.
_CHECKPOINT_LAYOUTS = (
    (
        "cls.predictions.transform.dense.weight",
        "cls.predictions.transform.dense.bias",
        "cls.predictions.transform.LayerNorm.weight",
        "cls.predictions.transform.LayerNorm.bias",
        "cls.predictions.bias",
    ),
    ("lm_head.dense.weight", "lm_head.dense.bias", "lm_head.layer_norm.weight", "lm_head.layer_norm.bias", "lm_head.bias"),
)


class MaskedLMHead(nn.Module):
    """dense → activation → LayerNorm → logits over the vocabulary with the encoder's (tied) input embeddings."""

    def __init__(self, encoder_config: Any) -> None:
        super().__init__()
        hidden = encoder_config.hidden_size
        self.dense = nn.Linear(hidden, hidden)
        activation = getattr(encoder_config, "hidden_act", "gelu")
        self.activation = get_activation(activation) if isinstance(activation, str) else activation
        self.layer_norm = nn.LayerNorm(hidden, eps=getattr(encoder_config, "layer_norm_eps", 1e-12))
        self.bias = nn.Parameter(torch.zeros(encoder_config.vocab_size))

    def forward(self, hidden_states: torch.Tensor, embedding_weight: torch.Tensor) -> torch.Tensor:
        """Logits `[..., vocab]` of hidden states `[..., hidden]`; `embedding_weight` is the encoder's `[vocab, hidden]`."""
        transformed = self.layer_norm(self.activation(self.dense(hidden_states)))
        return nn.functional.linear(transformed, embedding_weight, self.bias)


def init_mlm_head(head: MaskedLMHead, std: float) -> None:
    """transformers' initialisation of a new prediction head."""
    nn.init.normal_(head.dense.weight, mean=0.0, std=std)
    nn.init.zeros_(head.dense.bias)
    nn.init.ones_(head.layer_norm.weight)
    nn.init.zeros_(head.layer_norm.bias)
    nn.init.zeros_(head.bias)


def load_mlm_head(head: MaskedLMHead, checkpoint: str | os.PathLike) -> bool:
    """Copy a local checkpoint's masked-LM head (BERT or RoBERTa layout) into `head`; False when it has none."""
    from safetensors import safe_open

    directory = os.fspath(checkpoint)
    files = (
        [os.path.join(directory, f) for f in sorted(os.listdir(directory)) if f.endswith(".safetensors")]
        if os.path.isdir(directory)
        else []
    )
    for path in files:
        with safe_open(path, "pt") as handle:
            keys = set(handle.keys())
            for layout in _CHECKPOINT_LAYOUTS:
                if all(key in keys for key in layout):
                    dense_w, dense_b, ln_w, ln_b, bias = (handle.get_tensor(key) for key in layout)
                    if dense_w.shape != head.dense.weight.shape or bias.shape != head.bias.shape:
                        return False
                    with torch.no_grad():
                        for target, value in (
                            (head.dense.weight, dense_w),
                            (head.dense.bias, dense_b),
                            (head.layer_norm.weight, ln_w),
                            (head.layer_norm.bias, ln_b),
                            (head.bias, bias),
                        ):
                            target.copy_(value.to(target.dtype))
                    return True
    return False


class MlmMasker:
    """Masks a padded batch of an MLM task with `DataCollatorForLanguageModeling`'s rule — `probability` of the
    non-special tokens are targets; of those 80 % become the mask token, 10 % a random token, 10 % stay — drawing
    from a generator seeded by the caller, so the masks are a pure function of that seed (resumable, per rank)."""

    def __init__(self, tokenizer: Any, probability: float = 0.15) -> None:
        from transformers import DataCollatorForLanguageModeling

        if tokenizer is None or tokenizer.mask_token is None:
            raise ValueError("MLM tasks need a tokenizer with a mask token (pass processing_class=tokenizer).")
        self._collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability, return_tensors="pt")
        self._special = torch.tensor(sorted(set(tokenizer.all_special_ids)))

    def __call__(self, input_ids: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked input ids, labels: the original id at targets, -100 elsewhere), on `input_ids`' device."""
        ids = input_ids.detach().cpu().clone()
        self._collator.generator = torch.Generator().manual_seed(int(seed) % (2**63))
        masked, labels = self._collator.torch_mask_tokens(ids, special_tokens_mask=torch.isin(ids, self._special))
        return masked.to(input_ids.device), labels.to(input_ids.device)


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the masked positions (labels != -100); logits `[M, vocab]` for labels `[M]`."""
    return nn.functional.cross_entropy(logits.float(), labels.long(), ignore_index=IGNORE_INDEX)
