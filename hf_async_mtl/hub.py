"""Pushing a multi-task model, or one of its tasks, to the Hugging Face Hub with a generated card."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from .model_card import build_model_card, build_task_card


def _push_folder(
    repo_id: str,
    write: Callable[[str, str], None],
    *,
    commit_message: str,
    commit_description: str | None,
    private: bool | None,
    token: bool | str | None,
    revision: str | None,
    create_pr: bool,
):
    """Create the repo if needed, let `write(folder, repo_id)` fill a temporary folder, upload it as one commit."""
    from transformers.utils.hub import hf_api

    api = hf_api()
    repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    if revision is not None and not revision.startswith("refs/pr"):
        api.create_branch(repo_id=repo_id, branch=revision, token=token, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        write(folder, repo_id)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message,
            commit_description=commit_description,
            token=token,
            revision=revision,
            create_pr=create_pr,
        )


def push_model_to_hub(
    model: Any,
    repo_id: str,
    *,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: bool | str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    max_shard_size: int | str | None = "50GB",
    tags: Sequence[str] | str | None = None,
    tokenizer: Any = None,
    **card_kwargs: Any,
):
    """`MultiTaskModel.push_to_hub`: save the model (plus `tokenizer` if given) and a generated README.md, push both.

    Same arguments as `PreTrainedModel.push_to_hub`; `card_kwargs` go to `build_model_card` (e.g. `args`,
    `log_history`, `task_specs` for a card with the training method and metrics). Returns the `CommitInfo`.
    """
    tag_list = list(model.model_tags or []) + ([tags] if isinstance(tags, str) else list(tags or []))

    def write(folder: str, resolved_repo_id: str) -> None:
        model.save_pretrained(folder, max_shard_size=max_shard_size)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        card = build_model_card(model.config, repo_id=resolved_repo_id, tags=tag_list or None, **card_kwargs)
        card.save(os.path.join(folder, "README.md"))

    return _push_folder(
        repo_id,
        write,
        commit_message=commit_message or "Upload multi-task model",
        commit_description=commit_description,
        private=private,
        token=token,
        revision=revision,
        create_pr=create_pr,
    )


def push_task_to_hub(
    model: Any,
    task_name: str,
    repo_id: str,
    *,
    tokenizer: Any = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: bool | str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    max_shard_size: int | str | None = "50GB",
    tags: Sequence[str] | str | None = None,
    **card_kwargs: Any,
):
    """`MultiTaskModel.push_task_to_hub`: push what `export_task(task_name, ...)` writes, plus a card (and tokenizer).

    The repo loads with `AutoModelForSequenceClassification.from_pretrained(repo_id)` (a native checkpoint such as
    `BertForSequenceClassification` when `export_task` can write one), else with `trust_remote_code=True` (a one-head
    `MultiTaskModel` with its `modeling_hf_async_mtl.py` and `auto_map`, which also loads without it once
    `hf_async_mtl` is imported). Returns the `CommitInfo`.
    """
    model.config.task(task_name)  # a clear error for unknown tasks, before anything is created on the Hub

    def write(folder: str, resolved_repo_id: str) -> None:
        exported = model.export_task(task_name, folder, tokenizer=tokenizer, max_shard_size=max_shard_size)
        card = build_task_card(
            model.config, task_name, exported_class=type(exported).__name__, repo_id=resolved_repo_id, tags=tags, **card_kwargs
        )
        card.save(os.path.join(folder, "README.md"))

    return _push_folder(
        repo_id,
        write,
        commit_message=commit_message or f"Upload {task_name} model",
        commit_description=commit_description,
        private=private,
        token=token,
        revision=revision,
        create_pr=create_pr,
    )
