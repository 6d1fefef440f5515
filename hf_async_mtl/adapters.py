"""PEFT (LoRA, …) on the shared encoder of a `MultiTaskModel`; the task heads stay fully trainable.

The encoder is wrapped with `peft.get_peft_model`, so its parameter names become
``encoder.base_model.model.<encoder names>`` with the adapters as e.g.
``encoder.base_model.model.encoder.layer.0.attention.self.query.lora_A.default.weight``. Every encoder
name still starts with ``encoder.`` (what `gradients.shared_and_task_parameters` keys on) and every
head name with ``heads.<task>.`` (what the async-KD snapshot filter keys on); the frozen base weights
have ``requires_grad=False``, so snapshots keep only the adapters and the task's head.

Saving: `MultiTaskConfig.peft_config` records the (resolved) PEFT config as a plain dict, and
`save_pretrained` writes the full state (frozen base + adapters + heads) in one checkpoint. Building
a `MultiTaskModel` from such a config re-creates the adapter structure, so `from_pretrained` /
`AutoModel.from_pretrained` restore it exactly. `model.encoder.save_pretrained(dir)` additionally
writes a standard PEFT adapter of the encoder alone (adapter_config.json + adapter_model.safetensors).
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import warnings
from collections.abc import Sequence
from typing import Any, cast

from torch import nn


def _require_peft():
    try:
        import peft
    except ImportError:  # pragma: no cover - peft is a declared dependency
        raise ImportError("PEFT adapters need the `peft` package: pip install peft") from None
    return peft


def _json_safe(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(_json_safe(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _json_safe(dataclasses.asdict(value))
    return value


# Always written when the config has them, so a checkpoint does not depend on PEFT's defaults for these.
_CORE_FIELDS = ("r", "lora_alpha", "lora_dropout", "target_modules", "bias")


def peft_config_to_dict(peft_config: Any) -> dict[str, Any]:
    """A JSON-serialisable dict of a `peft.PeftConfig`: `peft_type`, the core fields (rank, alpha, dropout,
    target modules, bias) and every other field that differs from its default."""
    full = _json_safe(peft_config.to_dict())
    defaults = _json_safe(type(peft_config)().to_dict())
    compact = {"peft_type": full["peft_type"]}
    for key, value in full.items():
        if key in ("peft_type", "base_model_name_or_path", "peft_version"):
            continue
        if key in _CORE_FIELDS or defaults.get(key, object()) != value:
            compact[key] = value
    return compact


def peft_config_from_dict(config: dict[str, Any] | Any) -> Any:
    """The `peft.PeftConfig` of a dict written by `peft_config_to_dict` (a PeftConfig passes through)."""
    peft = _require_peft()
    if isinstance(config, peft.PeftConfig):
        return config
    values = dict(config)
    peft_type = values.pop("peft_type", None)
    if peft_type is None:
        raise ValueError(f"A PEFT config dict needs 'peft_type'; got keys {sorted(values)}.")
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    config_class = PEFT_TYPE_TO_CONFIG_MAPPING[peft.PeftType(peft_type)]
    return config_class(**values)


def lora_config(
    r: int,
    alpha: float | None = None,
    dropout: float = 0.0,
    target_modules: str | Sequence[str] | None = None,
    **kwargs: Any,
) -> Any:
    """A `peft.LoraConfig` for the shared encoder, or `None` when `r` is 0 (LoRA off).

    Args:
        r: LoRA rank (0 = full fine-tuning).
        alpha: LoRA scaling numerator (default `2 * r`).
        dropout: Dropout on the LoRA input.
        target_modules: Module names to adapt: a comma-separated string or a list. `None`/empty picks
            PEFT's default for the encoder's architecture (its attention query/value projections,
            e.g. `query,value` for BERT/RoBERTa/MiniLM, `query_proj,value_proj` for DeBERTa-v2).
    """
    if r < 0:
        raise ValueError(f"LoRA rank must be >= 0, got {r}.")
    if r == 0:
        return None
    if isinstance(target_modules, str):
        target_modules = [m.strip() for m in target_modules.split(",") if m.strip()]
    peft = _require_peft()
    return peft.LoraConfig(
        r=r, lora_alpha=2 * r if alpha is None else alpha, lora_dropout=dropout, target_modules=target_modules or None, **kwargs
    )


def wrap_encoder(encoder: nn.Module, peft_config: Any, adapter_name: str = "default") -> tuple[nn.Module, dict[str, Any]]:
    """Wrap `encoder` with `peft.get_peft_model` (one adapter, `adapter_name`); returns the wrapped encoder and the
    resolved config dict.

    `task_type` is dropped (the heads are ours, not PEFT's), so the wrapper is a plain `PeftModel`
    whose frozen base weights have `requires_grad=False` and whose adapters are trainable.
    """
    peft = _require_peft()
    config = copy.deepcopy(peft_config_from_dict(peft_config))
    if getattr(config, "task_type", None) is not None:
        config.task_type = None
    if getattr(config, "modules_to_save", None):
        raise ValueError("modules_to_save is not supported on the shared encoder; heads are always fully trainable.")
    with warnings.catch_warnings():
        # peft probes the deprecated `is_gradient_checkpointing` property of transformers 5 models.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        wrapped = peft.get_peft_model(encoder, config, adapter_name=adapter_name)
    return wrapped, peft_config_to_dict(wrapped.peft_config[adapter_name])


def is_peft_encoder(encoder: nn.Module) -> bool:
    """Whether `encoder` is wrapped by PEFT."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(encoder, PeftModel)


def merged_encoder(encoder: nn.Module) -> nn.Module:
    """A copy of a PEFT-wrapped encoder with the adapters merged into the base weights (the original is untouched)."""
    if not is_peft_encoder(encoder):
        raise ValueError("The encoder has no PEFT adapters to merge.")
    # A PeftModel (checked above), which the nn.Module annotation does not tell mypy.
    return cast(Any, copy.deepcopy(encoder)).merge_and_unload()


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of `model`."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def adapter_parameter_names(model: nn.Module) -> list[str]:
    """Names of the trainable encoder parameters (the adapters when the encoder is PEFT-wrapped)."""
    return [n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("heads.")]
