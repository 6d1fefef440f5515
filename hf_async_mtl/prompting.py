"""Prompt templates with a mask token (DynaMaR): parse a template, render and tokenize examples, find the mask.

A template is text with one placeholder per text field of the task and one `{mask}`, e.g.
``"{sentence} It was {mask}."`` or ``"{sentence1} {mask}, {sentence2}"``; `{{` and `}}` are literal braces.
Every example becomes one sequence (the texts inside the template) with exactly one mask token, whose
hidden state feeds the task's head (`pooling="mask"`): no verbalizer, so regression works as well.

Self-contained on purpose (standard library, torch and transformers only): `MultiTaskModel.export_task`
copies this file next to `modeling_hf_async_mtl.py`, so an exported model's pipeline renders inputs with
exactly the code that rendered the training data.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

import torch

MASK_FIELD = "mask"
PROMPT_EVAL_MODES = ("first", "average")
_MAX_TRUNCATION_ROUNDS = 8


def template_parts(template: str) -> list[tuple[str, str | None]]:
    """`(literal text, placeholder or None)` pairs of a template, in order (`string.Formatter` syntax).

    Raises `ValueError` for format specs, conversions, attribute/index access or unbalanced braces.
    """
    if not isinstance(template, str) or not template.strip():
        raise ValueError(f"A prompt template must be a non-empty string, got {template!r}.")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise ValueError(f"Prompt template {template!r}: {error} (write {{{{ and }}}} for literal braces).") from None
    parts = []
    for literal, name, spec, conversion in parsed:
        if name is not None and (spec or conversion or not name.isidentifier()):
            raise ValueError(
                f"Prompt template {template!r}: placeholder {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} must be a bare field name like {{sentence}} or {{mask}}."
            )
        parts.append((literal, name))
    return parts


def check_template(template: str, text_fields: Sequence[str]) -> None:
    """Raise `ValueError` unless `template` has one `{mask}` and each of `text_fields` exactly once, nothing else."""
    names = [name for _, name in template_parts(template) if name is not None]
    if names.count(MASK_FIELD) != 1:
        raise ValueError(f"Prompt template {template!r} must contain {{mask}} exactly once (found {names.count(MASK_FIELD)}).")
    unknown = sorted({n for n in names if n != MASK_FIELD and n not in text_fields})
    if unknown:
        raise ValueError(f"Prompt template {template!r} names unknown fields {unknown}; the task's text fields are {list(text_fields)}.")
    for field in text_fields:
        if names.count(field) != 1:
            raise ValueError(f"Prompt template {template!r} must contain {{{field}}} exactly once (found {names.count(field)}).")


def render(template: str, texts: Mapping[str, str], mask_token: str) -> str:
    """The template with each field replaced by its text and `{mask}` by `mask_token`."""
    return "".join(
        literal + ("" if name is None else mask_token if name == MASK_FIELD else texts[name]) for literal, name in template_parts(template)
    )


def encode_prompts(
    tokenizer: Any,
    template: str,
    texts: Mapping[str, Sequence[str]],
    max_length: int,
    *,
    row_ids: Sequence[int] | None = None,
    source: str = "prompt",
) -> dict[str, list[list[int]]]:
    """Tokenize a batch of examples wrapped in `template`; truncation cuts the texts, never the template.

    Args:
        tokenizer: A (fast) tokenizer with a mask token.
        template: The template (see `check_template`).
        texts: Field name → the batch's texts of that field.
        max_length: Longest allowed sequence, special tokens included.
        row_ids: Row number of each example in its data (e.g. the `idx` column), for error messages;
            default: positions in the batch.
        source: What the rows belong to (task and split), for error messages.

    Returns the tokenizer's outputs (`input_ids`, `attention_mask`, and `token_type_ids` where the
    tokenizer makes them) as lists. An example longer than `max_length` loses tokens from its longest
    text first (one token at a time, as `truncation="longest_first"`), cut at a token boundary of the
    text alone; the rendered prompt is tokenized again until it fits. Raises `ValueError` naming the row
    when the template alone does not fit or when a text contains the mask token itself.
    """
    mask_token = tokenizer.mask_token
    if mask_token is None:
        raise ValueError(f"{type(tokenizer).__name__} has no mask token: prompt templates with {{mask}} need one.")
    fields = [name for _, name in template_parts(template) if name not in (None, MASK_FIELD)]
    rows = len(texts[fields[0]]) if fields else 0
    row_ids = list(range(rows)) if row_ids is None else list(row_ids)
    current = {field: [str(t) for t in texts[field]] for field in fields}
    encoded = tokenizer(
        [render(template, {f: current[f][i] for f in fields}, mask_token) for i in range(rows)], truncation=False, verbose=False
    )
    out = {key: list(value) for key, value in encoded.items()}
    for _ in range(_MAX_TRUNCATION_ROUNDS):
        long_rows = [i for i in range(rows) if len(out["input_ids"][i]) > max_length]
        if not long_rows:
            break
        for i in long_rows:
            excess = len(out["input_ids"][i]) - max_length
            pieces = {
                f: tokenizer(current[f][i], add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
                for f in fields
            }
            keep = {f: len(pieces[f]) for f in fields}
            if sum(keep.values()) == 0:
                empty = tokenizer(render(template, {f: "" for f in fields}, mask_token), verbose=False)["input_ids"]
                raise ValueError(
                    f"{source}, row {row_ids[i]} (0-based): the prompt template {template!r} alone is {len(empty)} tokens, "
                    f"more than max_seq_length {max_length}."
                )
            while excess > 0 and sum(keep.values()) > 0:
                longest = max(fields, key=lambda f: keep[f])  # first of the longest: ties cut the earlier field
                keep[longest] -= 1
                excess -= 1
            for f in fields:
                current[f][i] = current[f][i][: pieces[f][keep[f] - 1][1]] if keep[f] else ""
        again = tokenizer(
            [render(template, {f: current[f][i] for f in fields}, mask_token) for i in long_rows], truncation=False, verbose=False
        )
        for position, i in enumerate(long_rows):
            for key in out:
                out[key][i] = again[key][position]
    else:
        long_rows = [i for i in range(rows) if len(out["input_ids"][i]) > max_length]
        if long_rows:
            raise ValueError(f"{source}, row {row_ids[long_rows[0]]} (0-based): could not fit the prompt into {max_length} tokens.")
    mask_id = tokenizer.mask_token_id
    for i, ids in enumerate(out["input_ids"]):
        count = ids.count(mask_id)
        if count != 1:
            reason = (
                "a text contains the mask token itself — remove it from the data"
                if count > 1
                else "the tokenizer did not keep the mask token as one token in this template"
            )
            raise ValueError(f"{source}, row {row_ids[i]} (0-based): the prompt has {count} mask tokens ({mask_token!r}); {reason}.")
    return out


def mask_positions(input_ids: torch.Tensor, mask_token_id: int | None) -> torch.Tensor:
    """Position of the mask token in each row of `input_ids` (`[batch, length]` → `[batch]`).

    Raises `ValueError` unless every row has exactly one mask token.
    """
    if mask_token_id is None:
        raise ValueError("pooling='mask' needs the tokenizer's mask token id (config.mask_token_id is None).")
    if input_ids is None:
        raise ValueError("pooling='mask' needs input_ids (to find the mask token); inputs_embeds alone are not enough.")
    hits = input_ids == mask_token_id
    counts = hits.sum(dim=1)
    bad = torch.nonzero(counts != 1).view(-1)
    if bad.numel():
        row = int(bad[0])
        raise ValueError(
            f"pooling='mask': every example needs exactly one mask token (id {mask_token_id}); "
            f"row {row} of the batch has {int(counts[row])}. Wrap inputs in a prompt template with {{mask}}."
        )
    return hits.to(torch.int64).argmax(dim=1)


def combine_template_outputs(outputs: torch.Tensor, num_templates: int, is_regression: bool) -> torch.Tensor:
    """Average head outputs over a pool: `[k * n, C]` rows in template-major order → `[n, C]`.

    Classification: `log(mean_k softmax(logits))` (logits whose softmax is the mean probability);
    regression: the mean prediction.
    """
    if outputs.shape[0] % num_templates:
        raise ValueError(f"{outputs.shape[0]} rows are not a whole number of {num_templates} template views.")
    stacked = outputs.float().reshape(num_templates, outputs.shape[0] // num_templates, *outputs.shape[1:])
    if is_regression:
        return stacked.mean(dim=0)
    return torch.logsumexp(torch.log_softmax(stacked, dim=-1), dim=0) - torch.log(torch.tensor(float(num_templates)))
