"""Pooling of an encoder's outputs into one vector per example: the one implementation the multi-task model and
the exported plain-transformers code (`modeling_hf_async_mtl.py`, which ships this file beside it) both use.

Self-contained on purpose: it imports torch and `prompting.py` (also shipped with exports) only.
"""

from __future__ import annotations

from typing import Any, cast

import torch

from .prompting import mask_positions

POOLING_MODES = ("cls", "pooler", "mean", "max", "mask")


def pool(
    mode: str,
    encoder_outputs: Any,
    attention_mask: torch.Tensor | None,
    input_ids: torch.Tensor | None = None,
    mask_token_id: int | None = None,
) -> torch.Tensor:
    """One vector per example from `encoder_outputs` (`last_hidden_state`, `pooler_output`) by `mode`.

    `cls`: the first token; `pooler`: the encoder's pooler output; `mean` / `max`: over the tokens that
    `attention_mask` keeps (all tokens without a mask); `mask`: the hidden state at each example's mask token
    (prompt templates; needs `input_ids` and `mask_token_id`).
    """
    hidden = encoder_outputs.last_hidden_state
    if mode == "mask":
        # mask_positions raises a clear error when input_ids is None.
        positions = mask_positions(cast(torch.Tensor, input_ids), mask_token_id)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), positions.to(hidden.device)]
    if mode == "pooler":
        return encoder_outputs.pooler_output
    if mode == "cls":
        return hidden[:, 0]
    if mode not in ("mean", "max"):
        raise ValueError(f"pooling must be one of {POOLING_MODES}, got {mode!r}.")
    if attention_mask is None:
        attention_mask = torch.ones(hidden.shape[:2], device=hidden.device, dtype=torch.long)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "mean":
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
