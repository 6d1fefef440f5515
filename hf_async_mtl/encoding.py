"""Encoding a task's rows as model inputs: tokenisation (plain, prompt templates, MLM, bi-encoder pairs), the
columns it writes, token lengths, template views, and the cache fingerprint of a tokenising `map`."""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

import datasets
import numpy as np
from transformers import PreTrainedTokenizerBase

from .bi_encoder import PAIR_INPUT_COLUMNS, PAIR_PREFIX
from .tasks import TaskSpec

TASK_IDS_COLUMN = "task_ids"
EXAMPLE_IDS_COLUMN = "example_ids"
TEMPLATE_IDS_COLUMN = "template_ids"
# Text b of a bi-encoder pair task comes as PAIR_INPUT_COLUMNS (`pair_input_ids`, ...): padded apart from text a.
MODEL_INPUT_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", *PAIR_INPUT_COLUMNS)
PAIR_IDS_COLUMN = PAIR_INPUT_COLUMNS[0]


def token_lengths(dataset: datasets.Dataset, column: str = "input_ids") -> np.ndarray:
    """Tokens per row of a tokenized dataset: of `column`, plus text b's (`pair_input_ids`) in a bi-encoder pair task.

    Lengths come from the Arrow list offsets (no Python objects per row).
    """
    import pyarrow.compute as pc

    table = dataset.with_format("arrow")
    lengths = pc.list_value_length(table[column]).to_numpy(zero_copy_only=False).astype(np.int64)
    if column == "input_ids" and PAIR_IDS_COLUMN in dataset.column_names:
        lengths = lengths + pc.list_value_length(table[PAIR_IDS_COLUMN]).to_numpy(zero_copy_only=False).astype(np.int64)
    return lengths


def length_order(dataset: datasets.Dataset, column: str = "input_ids") -> np.ndarray:
    """Row indices of a tokenized dataset, longest first (stable): batches of neighbours waste little padding.

    A bi-encoder pair's length is its two texts' (`token_lengths`). Invert with `np.argsort(order)`.
    """
    return np.argsort(-token_lengths(dataset, column), kind="stable")


def token_rows(dataset: datasets.Dataset) -> list[list[int]]:
    """Every row's token ids (what a soft-label fingerprint hashes): `input_ids`, then -1 and text b's ids for a
    bi-encoder pair task, so labels made for other text b's are never paired with these rows."""
    if PAIR_IDS_COLUMN not in dataset.column_names:
        return dataset["input_ids"]
    return [list(a) + [-1] + list(b) for a, b in zip(dataset["input_ids"], dataset[PAIR_IDS_COLUMN])]


@functools.cache
def _encoding_code() -> str:
    """The source of the functions a tokenising `map` runs (a new library version that changes them re-tokenises)."""
    from importlib.metadata import PackageNotFoundError, version

    from .prompting import encode_prompts

    try:
        return "".join(inspect.getsource(f) for f in (tokenize_task, batch_encoder, encode_prompts))
    except (OSError, TypeError):  # no source at hand (a frozen or source-less install): the library's version
        try:
            return f"hf_async_mtl {version('hf_async_mtl')}"
        except PackageNotFoundError:
            return "hf_async_mtl"


def encoding_fingerprint(dataset: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, *parts: Any) -> str | None:
    """The `datasets` cache fingerprint of a tokenising `map` over `dataset`, in milliseconds.

    By default `datasets` fingerprints a `map` by pickling the function, and with it the tokenizer in its closure:
    0.1-0.9 s per call, most of the start-up of a run (and of this project's tests). This digest covers what the
    result depends on: the input's fingerprint, the fast tokenizer's whole definition (its JSON: vocabulary,
    normalizer, pre-tokenizer, post-processor, added tokens), the tokenizer settings a call reads, the
    source of the encoding functions, and `parts` (the task, its id, the length, the template). None — `datasets`'
    own hash — for a tokenizer without a Rust backend.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    input_fingerprint = getattr(dataset, "_fingerprint", None)
    if backend is None or not input_fingerprint:
        return None
    digest = hashlib.sha256(b"hf_async_mtl.encoding_fingerprint.v1")
    settings = (
        type(tokenizer).__name__,
        tokenizer.model_input_names,
        tokenizer.truncation_side,
        tokenizer.padding_side,
        tokenizer.model_max_length,
    )
    # The backend's truncation and padding are set by each call (transformers sets them from the call's arguments):
    # state of the last call, not of the tokenizer.
    definition = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
    for part in (input_fingerprint, json.dumps(definition, sort_keys=True), settings, _encoding_code(), *parts):
        digest.update(repr(part).encode("utf-8") + b"\0")
    return digest.hexdigest()[:32]


def tokenize_task(
    spec: TaskSpec,
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    task_id: int,
    max_seq_length: int = 128,
    *,
    num_proc: int | None = None,
) -> datasets.Dataset:
    """Tokenize a task's dataset; keep `labels`, `task_ids` and `idx`, drop the raw text.

    A task with prompt templates (`TaskSpec.prompt_templates`, DynaMaR) has every example wrapped in each
    template (`hf_async_mtl.prompting.encode_prompts`: truncation cuts the texts, never the template or
    the mask). The result then holds one *view* per template, template-major: rows `[t*n, (t+1)*n)` are
    the `n` examples under template `t`, with a `template_ids` column (see `template_view`).

    An MLM task (`spec.is_mlm`) keeps only the tokens: the collator masks them and makes the labels.

    A bi-encoder pair task (`spec.is_bi_encoder`) tokenizes its two texts apart, each truncated to
    `max_seq_length`: text a as `input_ids` / `attention_mask` (/ `token_type_ids`), text b as `pair_input_ids` /
    `pair_attention_mask` (/ `pair_token_type_ids`).

    `task_id` is the task's position in the trainer's `task_specs` (its head in the model). The labels are read
    from `label`, or from `spec.label_field` when the dataset has that column instead (`load_task` renames it).
    """
    if isinstance(task_id, bool) or not isinstance(task_id, (int, np.integer)) or task_id < 0:
        raise TypeError(f"Task {spec.name!r}: tokenize_task's task_id is the task's position in task_specs (an int >= 0), got {task_id!r}.")
    columns = dataset.column_names or [*spec.text_fields, "label"]  # an iterable data set may not know its columns
    missing = [f for f in spec.text_fields if f not in columns]
    if missing:
        raise ValueError(f"Task {spec.name!r}: the dataset has no text column {missing}; columns: {columns}.")
    if not spec.is_mlm and spec.label_field != "label" and spec.label_field in columns:
        dataset = dataset.remove_columns([c for c in ("label",) if c in columns]).rename_column(spec.label_field, "label")
    elif not spec.is_mlm and "label" not in columns:
        named = f" (label_field {spec.label_field!r})" if spec.label_field != "label" else ""
        raise ValueError(f"Task {spec.name!r}: the dataset has no label column 'label'{named}; columns: {columns}.")
    if spec.is_mlm:

        def encode_text(batch: dict[str, list[Any]]) -> dict[str, Any]:
            encoded = tokenizer(*[batch[field] for field in spec.text_fields], truncation=True, max_length=max_seq_length)
            encoded[TASK_IDS_COLUMN] = [task_id] * len(batch[spec.text_fields[0]])
            return encoded

        removed = [c for c in dataset.column_names if c != "idx"]
        return dataset.map(
            encode_text,
            batched=True,
            remove_columns=removed,
            num_proc=num_proc,
            desc=f"Tokenizing {spec.name} (MLM)",
            new_fingerprint=encoding_fingerprint(dataset, tokenizer, "mlm", spec, task_id, max_seq_length),
        )
    if spec.prompt_templates:
        from .prompting import encode_prompts

        views = []
        for template_id, template in enumerate(spec.prompt_templates):

            def encode_prompt(
                batch: dict[str, list[Any]], indices: list[int], template=template, template_id=template_id
            ) -> dict[str, Any]:
                encoded: dict[str, Any] = encode_prompts(
                    tokenizer,
                    template,
                    {f: batch[f] for f in spec.text_fields},
                    max_seq_length,
                    row_ids=batch.get("idx", indices),
                    source=f"Task {spec.name!r}, template {template_id}",
                )
                encoded["labels"] = batch["label"]
                encoded[TASK_IDS_COLUMN] = [task_id] * len(batch["label"])
                encoded[TEMPLATE_IDS_COLUMN] = [template_id] * len(batch["label"])
                return encoded

            removed = [c for c in dataset.column_names if c != "idx"]
            views.append(
                dataset.map(
                    encode_prompt,
                    batched=True,
                    with_indices=True,
                    remove_columns=removed,
                    num_proc=num_proc,
                    desc=f"Tokenizing {spec.name} (template {template_id})",
                    new_fingerprint=encoding_fingerprint(dataset, tokenizer, "template", spec, task_id, max_seq_length, template_id),
                )
            )
        tokenized = datasets.concatenate_datasets(views) if len(views) > 1 else views[0]
    else:
        encode = batch_encoder(spec, tokenizer, task_id, max_seq_length)
        removed = [c for c in dataset.column_names if c != "idx"]
        tokenized = dataset.map(
            encode,
            batched=True,
            remove_columns=removed,
            num_proc=num_proc,
            desc=f"Tokenizing {spec.name}",
            new_fingerprint=encoding_fingerprint(dataset, tokenizer, "plain", spec, task_id, max_seq_length),
        )
    if spec.is_regression:
        tokenized = tokenized.cast_column("labels", datasets.Value("float32"))
    return tokenized


def batch_encoder(
    spec: TaskSpec, tokenizer: PreTrainedTokenizerBase, task_id: int, max_seq_length: int = 128
) -> Callable[[Mapping[str, list[Any]]], dict[str, Any]]:
    """`encode(batch)`: a batch of a (classification, regression or bi-encoder pair) task's rows — text fields and
    `label` as lists — as model inputs, `labels` and `task_ids` (what `tokenize_task` maps over a split, and what a
    streamed task applies to the rows each training batch draws)."""

    def encode(batch: Mapping[str, list[Any]]) -> dict[str, Any]:
        texts = [batch[field] for field in spec.text_fields]
        if spec.is_bi_encoder:  # each text alone: text b's encoding under the pair_ names
            encoded = dict(tokenizer(texts[0], truncation=True, max_length=max_seq_length))
            second = tokenizer(texts[1], truncation=True, max_length=max_seq_length)
            encoded.update({PAIR_PREFIX + key: value for key, value in second.items()})
        else:
            encoded = tokenizer(*texts, truncation=True, max_length=max_seq_length)
        encoded["labels"] = batch["label"]
        encoded[TASK_IDS_COLUMN] = [task_id] * len(batch["label"])
        return encoded

    return encode


def num_template_views(dataset: Any) -> int:
    """Number of template views of a tokenized task (`tokenize_task` with prompt templates); 1 without.

    Checks that the views are whole: `len(dataset)` is a multiple of the count and each view is contiguous.
    """
    if not isinstance(dataset, datasets.Dataset) or TEMPLATE_IDS_COLUMN not in dataset.column_names:
        return 1
    import pyarrow.compute as pc

    if len(dataset) == 0:
        return 1
    ids = dataset.with_format("arrow")[TEMPLATE_IDS_COLUMN]
    count = int(pc.max(ids).as_py()) + 1
    n, remainder = divmod(len(dataset), count)
    expected = np.repeat(np.arange(count), n)
    if remainder or not np.array_equal(np.asarray(ids.to_numpy(zero_copy_only=False)), expected):
        raise ValueError(
            f"A dataset with {TEMPLATE_IDS_COLUMN!r} must hold whole template views in template order "
            f"(as tokenize_task writes them); got {len(dataset)} rows for {count} templates."
        )
    return count


def template_view(dataset: datasets.Dataset, template: int, num_templates: int | None = None) -> datasets.Dataset:
    """The rows of one template (`tokenize_task` with prompt templates): `n` examples in their own order."""
    count = num_templates or num_template_views(dataset)
    if not 0 <= template < count:
        raise ValueError(f"template {template} is out of range for {count} template views.")
    if count == 1:
        return dataset
    n = len(dataset) // count
    return dataset.select(range(template * n, (template + 1) * n))
