"""Bi-encoder pair heads: each text of a pair task encoded alone by the shared encoder, the pair scored from the two
pooled vectors (docs/bi_encoder.md).

A pair task (two text fields) is a cross-encoder by default: both texts in one sequence, a linear head on its pooled
vector. With `TaskSpec(pair_encoding="bi_encoder")` the model encodes text a (`input_ids`, `attention_mask`, ...) and
text b (`pair_input_ids`, `pair_attention_mask`, ...) separately, pools each as the task's pooling says, and scores
the pair with its `pair_head`:

- `"cosine"` (regression tasks): the cosine similarity of the two vectors, no trainable parameters. The output is in
  the label's units, `low + (high - low) * cos` with the task's `regression_range` `(low, high)`, so metrics,
  predictions and submission files read it as any regression output; the loss is sentence-transformers'
  `CosineSimilarityLoss` convention: the mean squared error between the cosine and the label rescaled to [0, 1]
  (`rescale_to_unit`).
- `"sbert"` (classification tasks): a linear classifier on `(u, v, |u - v|, u * v)` (SBERT's classification
  objective, Reimers & Gurevych, EMNLP 2019, with the product feature), after the model's classifier dropout.

Self-contained on purpose (standard library and torch only): `MultiTaskModel.export_task` copies this file next to
`modeling_hf_async_mtl.py`, so an exported pair task computes its scores with this very code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

CROSS_ENCODER = "cross_encoder"
BI_ENCODER = "bi_encoder"
PAIR_ENCODINGS = (CROSS_ENCODER, BI_ENCODER)
COSINE_HEAD = "cosine"
SBERT_HEAD = "sbert"
PAIR_HEADS = (COSINE_HEAD, SBERT_HEAD)
# Text b of a bi-encoder pair: its tokenizer outputs under these names (text a keeps the usual ones).
PAIR_PREFIX = "pair_"
PAIR_INPUT_COLUMNS = tuple(PAIR_PREFIX + name for name in ("input_ids", "attention_mask", "token_type_ids"))
# Poolings a sentence-transformers `Pooling` module declares (1_Pooling/config.json), by this library's name.
SENTENCE_TRANSFORMERS_POOLING = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens"}


def is_bi_encoder(head: Mapping[str, Any]) -> bool:
    """Whether a head description (`MultiTaskConfig.tasks` entry, `TaskSpec.head_config()`) is a bi-encoder pair head."""
    return head.get("pair_encoding", CROSS_ENCODER) == BI_ENCODER


def default_pair_head(is_regression: bool) -> str:
    """The pair head a bi-encoder task gets unless it names one: cosine for regression, sbert for classification."""
    return COSINE_HEAD if is_regression else SBERT_HEAD


def pair_head_problem(
    pair_head: str, *, is_regression: bool, num_text_fields: int, label_range: Sequence[float] | None, pooling: str | None = None
) -> str | None:
    """Why a bi-encoder task cannot have `pair_head` (one sentence, no trailing period), or None when it can."""
    if pair_head not in PAIR_HEADS:
        return f"pair_head must be one of {PAIR_HEADS}, got {pair_head!r}"
    if num_text_fields != 2:
        return f"a bi-encoder encodes the two texts of a pair apart; the task has {num_text_fields} text field(s)"
    if pair_head == COSINE_HEAD and not is_regression:
        return "a cosine pair head scores similarity (regression); a classification task takes pair_head='sbert'"
    if pair_head == SBERT_HEAD and is_regression:
        return "an sbert pair head is a classifier; a regression task takes pair_head='cosine'"
    if pair_head == COSINE_HEAD and label_range is None:
        return (
            "a cosine pair head rescales the labels to [0, 1] by the task's label range (sentence-transformers' "
            "CosineSimilarityLoss): declare regression_range=(low, high), e.g. (0, 5) for STS-B"
        )
    if pooling == "mask":
        return "mask pooling reads a prompt's mask token, which a bi-encoder's plain texts do not have"
    return None


def check_pair_head(head: Mapping[str, Any], pooling: str) -> None:
    """Raise `ValueError` unless a bi-encoder head description is consistent (what a saved config must hold)."""
    problem = pair_head_problem(
        head.get("pair_head", ""),
        is_regression=head["problem_type"] == "regression",
        num_text_fields=len(head.get("text_fields") or ()),
        label_range=head.get("label_range"),
        pooling=pooling,
    )
    if problem:
        raise ValueError(f"Task {head['name']!r}: {problem}.")


def rescale_to_unit(values: torch.Tensor, label_range: Sequence[float]) -> torch.Tensor:
    """`(values - low) / (high - low)`: labels (or outputs in label units) on the [0, 1] scale of a cosine."""
    low, high = float(label_range[0]), float(label_range[1])
    return (values.float() - low) / (high - low)


def cosine_similarity_loss(scores: torch.Tensor, labels: torch.Tensor, label_range: Sequence[float]) -> torch.Tensor:
    """MSE between the cosines behind `scores` (outputs in label units, `[N]` or `[N, 1]`) and the labels, both rescaled
    to [0, 1] by `label_range`: sentence-transformers' `CosineSimilarityLoss` on labels divided by the range."""
    return F.mse_loss(rescale_to_unit(scores.reshape(-1), label_range), rescale_to_unit(labels.reshape(-1), label_range))


class CosineSimilarityHead(nn.Module):
    """The cosine of the two pooled vectors, mapped to the label's units: `low + (high - low) * cos`. No parameters."""

    def __init__(self, label_range: Sequence[float]) -> None:
        super().__init__()
        self.low, self.high = float(label_range[0]), float(label_range[1])

    def forward(self, first: torch.Tensor, second: torch.Tensor, dropout: nn.Module | None = None) -> torch.Tensor:
        """`[N, 1]` scores in label units (`dropout` is unused: there is no head to regularise)."""
        cosine = F.cosine_similarity(first.float(), second.float(), dim=-1)
        return (self.low + (self.high - self.low) * cosine).unsqueeze(-1)


class SbertClassificationHead(nn.Linear):
    """A linear classifier on `(u, v, |u - v|, u * v)` (SBERT's classification objective with the product feature).

    A `nn.Linear` of `4 * hidden_size` inputs: its parameters are `weight` and `bias`, initialised as every linear head.
    """

    def __init__(self, hidden_size: int, num_labels: int) -> None:
        super().__init__(4 * hidden_size, num_labels)

    @staticmethod
    def features(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """`[N, 4 * hidden]`: the two vectors, their absolute difference and their element-wise product."""
        return torch.cat([first, second, (first - second).abs(), first * second], dim=-1)

    # A pair of vectors in, unlike nn.Linear's one tensor.
    def forward(self, first: torch.Tensor, second: torch.Tensor, dropout: nn.Module | None = None) -> torch.Tensor:  # type: ignore[override]
        """`[N, num_labels]` logits; `dropout` (the model's classifier dropout) applies to the features."""
        features = self.features(first, second)
        return super().forward(dropout(features) if dropout is not None else features)


def build_pair_head(head: Mapping[str, Any], hidden_size: int) -> nn.Module:
    """The module of a bi-encoder head description (`TaskSpec.head_config()` of a bi-encoder task)."""
    if head.get("pair_head") == COSINE_HEAD:
        return CosineSimilarityHead(head["label_range"])
    return SbertClassificationHead(hidden_size, head["num_labels"])


def split_pair_inputs(task: str, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(text a's encoder inputs, text b's) from a batch's inputs: the `pair_*` names are text b's.

    Names that are `None` are dropped; a batch without `pair_input_ids` is a clear error naming the task.
    """
    first = {k: v for k, v in inputs.items() if not k.startswith(PAIR_PREFIX) and v is not None}
    second = {k[len(PAIR_PREFIX) :]: v for k, v in inputs.items() if k.startswith(PAIR_PREFIX) and v is not None}
    if first.get("input_ids") is None or second.get("input_ids") is None:
        raise ValueError(
            f"Task {task!r} is a bi-encoder pair task: pass text a as input_ids / attention_mask and text b as "
            "pair_input_ids / pair_attention_mask (tokenize_task writes both)."
        )
    return first, second


def bi_encoder_logits(
    encode: Callable[[dict[str, Any]], Any],
    pool: Callable[[Any, torch.Tensor | None, torch.Tensor | None], torch.Tensor],
    head: nn.Module,
    dropout: nn.Module | None,
    first: Mapping[str, Any],
    second: Mapping[str, Any],
) -> torch.Tensor:
    """The head's outputs for a batch of pairs: each text encoded alone (`encode(inputs)` returns the encoder's
    outputs) and pooled (`pool(outputs, attention_mask, input_ids)`), then scored by `head`."""
    vectors = []
    for inputs in (first, second):
        outputs = encode(dict(inputs))
        vectors.append(pool(outputs, inputs.get("attention_mask"), inputs.get("input_ids")))
    return head(vectors[0], vectors[1], dropout)


def bi_encoder_loss(head: Mapping[str, Any], logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The hard-label loss of a bi-encoder head: `cosine_similarity_loss` (cosine) or cross-entropy (sbert)."""
    if head.get("pair_head") == COSINE_HEAD:
        return cosine_similarity_loss(logits, labels, head["label_range"])
    return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), labels.view(-1).long())


def export_sentence_transformers(
    encoder: Any, directory: str | os.PathLike, *, pooling: str, max_seq_length: int, tokenizer: Any = None, **save_kwargs: Any
) -> Any:
    """Write `encoder` (a transformers `PreTrainedModel`) as a sentence-transformers directory: the encoder and its
    tokenizer at the top (so `transformers.AutoModel` loads them as they are), `modules.json` (Transformer, then
    Pooling), `sentence_bert_config.json` and `1_Pooling/config.json`; `SentenceTransformer(directory)` then encodes,
    and its `similarity` (cosine) is the cosine head's cosine. Returns `encoder`."""
    if pooling not in SENTENCE_TRANSFORMERS_POOLING:
        raise ValueError(
            f"sentence-transformers has no {pooling!r} pooling; poolings it declares: {sorted(SENTENCE_TRANSFORMERS_POOLING)}."
        )
    directory = os.fspath(directory)
    encoder.save_pretrained(directory, **save_kwargs)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    pooling_config = {"word_embedding_dimension": int(encoder.config.hidden_size)}
    pooling_config.update({key: mode == pooling for mode, key in SENTENCE_TRANSFORMERS_POOLING.items()})
    pooling_config["pooling_mode_mean_sqrt_len_tokens"] = False
    os.makedirs(os.path.join(directory, "1_Pooling"), exist_ok=True)
    files = {
        "modules.json": modules,
        "sentence_bert_config.json": {"max_seq_length": int(max_seq_length), "do_lower_case": False},
        "config_sentence_transformers.json": {"similarity_fn_name": "cosine"},
        os.path.join("1_Pooling", "config.json"): pooling_config,
    }
    for name, payload in files.items():
        with open(os.path.join(directory, name), "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
            handle.write("\n")
    return encoder
